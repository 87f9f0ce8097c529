"""The state every TCP endpoint carries, segment output and state changes.

``EndpointCore`` holds the connection's variables (``__slots__``, set up by
``TcpEndpoint.__init__``) and what every other part uses: building and emitting segments
(options, SACK blocks, the advertised window, super-segments for links with segmentation
offload), pure and challenge ACKs, running the sender, window updates after reads, and the state
changes (ESTABLISHED, TIME-WAIT, CLOSED with its clean-up).  The timers live in ``timeouts``,
segment arrival in ``input``, the user API in ``endpoint``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from aionetstack.errors import (
    NetstackError,
)
from aionetstack.stack.ports import Reservation
from aionetstack.stack.route import Route
from aionetstack.stack.routing import send_ip
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.transport.tcp.bytequeue import Pieces
from aionetstack.transport.tcp.listen import ListenQueue
from aionetstack.transport.tcp.receiver import Receiver
from aionetstack.transport.tcp.rtt import RttEstimator
from aionetstack.transport.tcp.sender import Sender
from aionetstack.transport.tcp.state import (
    CAN_RECEIVE,
    TRANSITIONS,
    TcpState,
    check_transition,
)
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.seqnum import MASK, seq_add, seq_le
from aionetstack.wire.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    TcpOptions,
    fill_tcp_checksum,
    pack_tcp,
    pack_tcp_ts,
)

if TYPE_CHECKING:
    from aionetstack.stack.stack import CoreStack
    from aionetstack.stack.timers import Timer
    from aionetstack.transport.tcp.endpoint import TcpEndpoint
    from aionetstack.transport.tcp.protocol import TcpProtocol
    from aionetstack.transport.tcp.timewait import TimeWait

Addr = tuple[bytes, int]
S = TcpState
_HALF = 0x80000000  # seq_lt and friends, inline on the per-segment path
# States in which the sender may transmit (data, FIN or retransmissions).
_OUTPUT_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
_RST_ON_ABORT = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2,
                           S.CLOSE_WAIT})


def local_mss(mtu: int, family: int) -> int:
    """The MSS to offer for a path MTU (RFC 9293 §3.7.1, RFC 6691): MTU less 40 (IPv4) or 60
    (IPv6) bytes of headers, and no more than the largest datagram allows (65495 on a 64 KiB
    loopback, as Linux advertises)."""
    if family == 4:
        return min(mtu, 0xFFFF) - 40
    return min(mtu - 60, 0xFFFF - 20)


def _wscale_for(capacity: int) -> int:
    s = 0
    while s < 14 and (0xFFFF << s) < capacity:
        s += 1
    return s



def _inert(now: float) -> None:
    """The callback of a finished endpoint's timers."""


def _no_emit(seq: int, flags: int, payload: bytes | memoryview | Pieces) -> None:
    """The sender's output once its endpoint is finished."""


@mypyc_attr(allow_interpreted_subclasses=True)  # applications subclass TcpEndpoint
class EndpointCore:
    """Connection state and output; see the module docstring."""


    __slots__ = (
        "_ack_bytes", "_ack_now", "_corked", "_delack_timer", "_ka_probes", "_ka_timer",
        "_keepalive", "_last_rx", "_linger", "_pending_fin", "_rexmit_ts", "_rto_since",
        "_rto_timer", "_state",
        "_syn_time", "_tw", "_zwp_since", "bound_address", "error", "family", "keepcnt", "keepidle",
        "keepintvl",
        "last_ack_sent", "linger", "listen_queue", "local", "parent", "peer_mss", "proto", "rcv",
        "remote", "reservation", "reuse_address", "route", "rtt", "sack_ok", "snd", "soft_error",
        "stack", "ts_enabled", "ts_offset", "ts_recent", "ttl", "user_closed",
        "user_mss", "user_timeout", "waiter", "ws_ok",
    )

    proto: TcpProtocol
    stack: CoreStack
    user_mss: int | None
    family: int
    _state: TcpState
    # the TIME-WAIT record that took over from this endpoint once the user closed it
    # (``timewait``); ``state`` reads TIME-WAIT until the record ends, CLOSED after
    _tw: TimeWait | None
    waiter: WaiterQueue
    local: Addr | None
    remote: Addr | None
    bound_address: bytes | None
    reservation: Reservation | None
    reuse_address: bool
    route: Route | None
    error: NetstackError | None
    soft_error: NetstackError | None
    listen_queue: ListenQueue | None
    parent: TcpEndpoint | None
    user_closed: bool
    user_timeout: float | None
    linger: float | None
    ttl: int | None
    rtt: RttEstimator
    snd: Sender
    rcv: Receiver
    peer_mss: int
    ws_ok: bool
    sack_ok: bool
    ts_enabled: bool
    ts_recent: int
    ts_offset: int
    last_ack_sent: int
    _ack_bytes: int
    _ack_now: bool
    _corked: bool
    _pending_fin: bool
    _syn_time: float
    _rto_since: float
    _zwp_since: float | None
    _rexmit_ts: int | None
    _rto_timer: Timer
    _delack_timer: Timer
    _linger: Timer | None  # made on first use: see ``_linger_timer``
    _ka_timer: Timer | None  # made when keep-alive is first armed (``_keepalive_timer``)
    _keepalive: bool
    keepidle: float
    keepintvl: float
    keepcnt: int
    _ka_probes: int
    _last_rx: float

    # the user API (``TcpEndpoint``) provides these
    def abort(self) -> None:
        raise NotImplementedError

    def shutdown_write(self) -> None:
        raise NotImplementedError

    def _arm_loss_timer(self, now: float, restart_pto: bool) -> None:
        raise NotImplementedError  # ``timeouts``

    # -- rarely used timers, made on first use ---------------------------------------------------
    # Most connections never linger in FIN-WAIT-2 or TIME-WAIT with the endpoint (a record
    # takes TIME-WAIT over) and never use keep-alive: not making these two timers saves two
    # objects (and two bound methods) per endpoint.
    @property
    def _linger_timer(self) -> Timer:
        """The TIME-WAIT / FIN-WAIT-2 timer, made on first use (reading ``_linger`` instead
        tells whether it exists, without making it)."""
        t = self._linger
        if t is None:
            t = self._linger = self.stack.timers.timer(self._on_linger)
        return t

    def _keepalive_timer(self) -> Timer:
        t = self._ka_timer
        if t is None:
            t = self._ka_timer = self.stack.timers.timer(self._on_keepalive)
        return t

    def _on_linger(self, now: float) -> None:
        raise NotImplementedError  # ``timeouts``

    def _on_keepalive(self, now: float) -> None:
        raise NotImplementedError  # ``timeouts``

    # -- segment output ---------------------------------------------------------------------------
    def _local_mss(self) -> int:
        assert self.route is not None
        mss = local_mss(self.route.mtu, self.family)
        return mss if self.user_mss is None else min(mss, self.user_mss)

    def _tsval(self, now: float) -> int:
        return (int(now * 1000) + self.ts_offset) & MASK

    def _syn_options(self, ack: bool) -> TcpOptions:
        o = TcpOptions(mss=min(self._local_mss(), 0xFFFF))
        if not ack or self.ws_ok:
            o.wscale = self.rcv.rcv_wscale
        if not ack or self.sack_ok:
            o.sack_permitted = True
        if not ack or self.ts_enabled:
            o.timestamp = (self._tsval(self.stack.now()), self.ts_recent if ack else 0)
        return o

    def _negotiate(self, opts: TcpOptions) -> None:
        """Options from the peer's SYN (RFC 7323 §2.2, §3.2; RFC 2018; RFC 9293 §3.7.1)."""
        self.peer_mss = opts.mss if opts.mss else (536 if self.family == 4 else 1220)
        if opts.wscale is not None:
            self.ws_ok = True
            self.snd.snd_wscale = min(opts.wscale, 14)
        else:
            self.ws_ok = False
            self.snd.snd_wscale = 0
            self.rcv.rcv_wscale = 0
        self.ts_enabled = opts.timestamp is not None
        if opts.timestamp is not None:
            self.ts_recent = opts.timestamp[0]
        self.sack_ok = opts.sack_permitted
        self.snd.sack_ok = opts.sack_permitted
        ts_len = 12 if self.ts_enabled else 0
        local = self._local_mss()
        route = self.route
        gso = route.nic.gso_max if route is not None else 0
        # a super-segment's payload: the link's limit less IP and TCP headers (with options)
        self.snd.gso_limit = max(gso - (20 if self.family == 4 else 40) - 60, 0) if gso else 0
        self.snd.set_mss(max(min(self.peer_mss, local) - ts_len, 64))
        self.rcv.mss = max(local - ts_len, 64)

    def _send_syn(self, ack: bool) -> None:
        self._emit(self.snd.iss, SYN | (ACK if ack else 0), b"", self._syn_options(ack))

    def _emit(self, seq: int, flags: int, payload: bytes | memoryview | Pieces = b"",
              options: TcpOptions | None = None) -> None:
        route = self.route
        if route is None or self.local is None or self.remote is None:
            return
        now = self.stack.now()
        rcv = self.rcv
        snd = self.snd
        mss = snd.mss
        plen = len(payload)
        tsval = -1  # >= 0: the segment carries only a timestamp option (the header template)
        if flags & RST:
            window = 0
            options = None
        else:
            # a retransmission: seq_lt(seq, snd.snd_max), inline
            rexmit = bool(plen or flags & FIN) and 0 < ((snd.snd_max - seq) & MASK) < _HALF
            if rexmit:  # counted in packets on the wire, as "sent" (a super-segment is several)
                self.proto.stats["retransmitted"] += -(-plen // mss) or 1
            if options is None:
                ts_enabled = self.ts_enabled
                if ts_enabled:
                    tsval = (int(now * 1000) + self.ts_offset) & MASK  # _tsval(now)
                    if rexmit:
                        self._rexmit_ts = tsval
                if self.sack_ok and (rcv.ooo or rcv.dsack) and flags & ACK:
                    # SACK blocks only as far as they fit beside the payload within the MTU
                    fit = (route.max_payload - 20 - (12 if ts_enabled else 0) - plen
                           - 4) // 8
                    if fit > 0:
                        blocks = rcv.sack_blocks(min(3 if ts_enabled else 4, fit))
                        options = TcpOptions(
                            timestamp=(tsval, self.ts_recent) if ts_enabled else None,
                            sack_blocks=blocks)
                        tsval = -1
            window = rcv.advertise(syn=True) if flags & SYN else rcv.advertise()
        ack = rcv.rcv_nxt if flags & ACK else 0
        off = route.headroom
        if tsval >= 0:
            l4 = 32 + plen
            # route.new_packet(l4), but the payload is appended rather than copied over zeros
            # (one copy of it, no zero fill: a slice assignment from a non-bytearray copies twice)
            if isinstance(payload, Pieces):  # spanning chunks of the send buffer: no join first
                buf = bytearray().join([bytes(off + 32), *payload.parts])
            else:
                buf = bytearray(off + 32)
                if plen:
                    buf += payload
            pack_tcp_ts(buf, off, self.local[1], self.remote[1], seq, ack, flags, window, tsval,
                        self.ts_recent)
            # a super-segment is cut into packets that get checksums of their own (TSO, GSO)
            if not route.nic.tx_offload and plen <= mss:
                fill_tcp_checksum(buf, off, l4, route.local, route.remote)
        else:
            l4 = 20 + (options.packed_len() if options is not None else 0) + plen
            buf = bytearray(off + l4)  # route.new_packet(l4)
            pack_tcp(buf, off, src=route.local, dst=route.remote, sport=self.local[1],
                     dport=self.remote[1], seq=seq, ack=ack, flags=flags, window=window,
                     options=options,
                     payload=bytes(payload) if isinstance(payload, Pieces) else payload,
                     checksum=not route.nic.tx_offload and plen <= mss)
        try:  # a super-segment (plen > mss) is for the link to cut (TSO)
            send_ip(self.stack, route, buf, l4, PROTO_TCP, ttl=self.ttl, df=True,
                    gso=mss if plen > mss else 0)
        except NetstackError as exc:  # e.g. the NIC went down: the segment is simply lost
            self.proto.stats.drop(f"send-{type(exc).__name__}")
        else:
            self.proto.stats["sent"] += -(-plen // mss) or 1
        if flags & ACK:
            self.last_ack_sent = ack
            self._ack_bytes = 0
            self._ack_now = False
            self._delack_timer.deadline = None  # cancel()
        if (plen or flags & (SYN | FIN)) and self._rto_timer.deadline is None:  # not armed
            self._rto_timer.schedule(now + self.rtt.timeout())

    def _send_ack(self) -> None:
        """A pure ACK.  Its sequence number is the highest one sent (SND.NXT may have been pulled
        back by a timeout, and an ACK behind the peer's RCV.NXT would be unacceptable to it),
        but not beyond the peer's window (Linux ``tcp_acceptable_seq``)."""
        snd = self.snd
        edge = seq_add(snd.snd_una, snd.snd_wnd)
        self._emit(snd.snd_max if seq_le(snd.snd_max, edge) else edge, ACK)

    def _ack_soon(self) -> None:
        """ACK at the end of this turn rather than at once: the delayed-ACK timer, due now,
        runs after what the turn set off (a driver fires it after the wake-ups it queued), so
        an application's immediate answer -- the first request after connect, the reply to a
        FIN, data after a read -- carries the ACK instead of following a pure ACK.  No time
        passes: still an immediate ACK as far as RFC 9293 §3.8.6.3 and RFC 5681 §4.2 go."""
        self._delack_timer.schedule_if_earlier(self.stack.now())

    def _challenge_ack(self) -> None:
        if self.proto.challenge_ack_allowed():
            self.proto.stats["challenge-acks"] += 1
            self._send_ack()

    def _output(self, now: float, cork: bool = False) -> bool:
        """Run the sender; arm the persist timer when data waits on a closed window.  With
        ``cork`` a short last segment may wait for the end of the turn (``Sender.output``):
        the delayed-ACK timer, due now, sends it."""
        sent = False
        if self._state in _OUTPUT_STATES:
            snd = self.snd
            sent = snd.output(now, cork)
            if snd.corked:
                snd.corked = False
                self._corked = True
                self._delack_timer.schedule_if_earlier(now)
            if sent and snd.sack_ok:
                self._arm_loss_timer(now, True)  # RFC 8985 §7.2: after new data
            if (snd.snd_una == snd.snd_max and snd.unsent() > 0  # not outstanding()
                    and not self._rto_timer.armed):
                self._rto_timer.schedule(now + self.rtt.timeout())
        return sent

    def _maybe_window_update(self) -> None:
        """After the user read: tell the peer about a much larger window (RFC 9293 §3.8.6.2.2)."""
        rcv = self.rcv
        if self._state not in CAN_RECEIVE:
            return
        if rcv.rcv_wnd < rcv.max_window() // 2 and rcv.window_increase() > 0:
            self._ack_soon()

    # -- state changes ----------------------------------------------------------------------------
    @property
    def state(self) -> TcpState:
        """The connection state (RFC 9293 §3.3.2).  A user-closed endpoint whose TIME-WAIT a
        record took over (``timewait``) reads TIME-WAIT until the record ends, CLOSED after:
        the record does not refer back to the endpoint, so the change is made here, when the
        state is next looked at (the record's end already notified the waiter)."""
        tw = self._tw
        if tw is not None and tw.ended:
            self._tw = None
            self._set_state(S.CLOSED)
        return self._state

    def _set_state(self, new: TcpState) -> None:
        old = self._state
        if new is not old and new not in TRANSITIONS[old]:
            check_transition(old, new)  # raises IllegalTransition
        self._state = new

    def _established(self, now: float) -> None:
        self._set_state(S.ESTABLISHED)
        snd = self.snd
        if snd.retries == 0 and self._syn_time >= 0:
            self.rtt.sample(now - self._syn_time)
        elif snd.retries and self.rtt.srtt is None:
            self.rtt.rto = max(self.rtt.rto, 3.0)  # RFC 6298 §5.7: the SYN was retransmitted
        snd.retries = 0
        self.rtt.backoff = 0
        self._rto_timer.cancel()
        self._last_rx = now
        if self._keepalive:
            self._keepalive_timer().schedule(now + self.keepidle)
        parent = self.parent
        if parent is not None:
            if parent._state is S.LISTEN and parent.listen_queue is not None:
                parent.listen_queue.established(cast("TcpEndpoint", self))
                parent.waiter.notify(EVENT_IN)
            else:
                self.parent = None
                self.abort()
                return
        if self._pending_fin:
            self._pending_fin = False
            self.shutdown_write()
        self.waiter.notify(EVENT_OUT)

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(S.TIME_WAIT)
        self._rto_timer.cancel()
        if not self.user_closed:  # else a ``TimeWait`` record takes over once the segment
            self._linger_timer.schedule(now + 2 * self.proto.msl)  # is processed

    def recycle(self) -> None:
        """End TIME-WAIT early because a new incarnation of the 4-tuple is starting."""
        self._finish()

    def _fail(self, err: NetstackError) -> None:
        self.error = err
        self._finish()

    def _release(self) -> None:
        """The connection is over (CLOSED, or TIME-WAIT handed to a ``TimeWait`` record):
        cancel the timers and give the buffers back to the stack's budget.  Final for an
        endpoint object: its timers and its sender no longer call back into it, so no
        reference cycle keeps it alive once its owner lets go (it is freed by reference
        counting, not by the cyclic garbage collector)."""
        for t in (self._rto_timer, self._delack_timer, self._linger, self._ka_timer,
                  self.snd.loss_timer):
            if t is not None:
                t.deadline = None  # cancel()
                t.callback = _inert
        self.snd.emit = _no_emit
        self.rcv.release()
        self.snd.release()

    def _finish(self) -> None:
        """Enter CLOSED: cancel timers, leave the demux tables, release the port."""
        st = self._state
        if st is not S.CLOSED:
            self._set_state(S.CLOSED)
        self._release()
        proto = self.proto
        if st is S.TIME_WAIT and self.user_closed:
            proto.time_wait.forget(cast("TcpEndpoint", self))  # a record took over: it ends
        if self.local is not None and self.remote is not None:
            key = (self.local[0], self.local[1], self.remote[0], self.remote[1])
            if proto.connections.get(key) is self:
                del proto.connections[key]
        if self.reservation is not None:
            lkey = (self.bound_address, self.reservation.port, self.family)
            if proto.listeners.get(lkey) is self:
                del proto.listeners[lkey]
            if self.user_closed or self.remote is not None:
                self.stack.ports.release(self.reservation)
                self.reservation = None
        if self.parent is not None and self.parent.listen_queue is not None:
            self.parent.listen_queue.forget(cast("TcpEndpoint", self))
            self.parent = None
            self.user_closed = True
        if self.user_closed:
            proto.endpoints.discard(self)
        self.waiter.notify(EVENT_IN | EVENT_OUT | EVENT_HUP | (EVENT_ERR if self.error else 0))

