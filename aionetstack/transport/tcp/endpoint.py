"""A TCP connection endpoint: the user API and the segment-arrival state machine.

User API (non-blocking, gVisor-shaped): ``bind``, ``listen``, ``accept`` (raises WouldBlock),
``connect`` (raises ConnectStarted; completion is ``EVENT_OUT`` on ``waiter``, then
``connect_result()``), ``write`` (accepts what fits; queued in SYN-SENT and sent after the
handshake), ``read`` / ``read_into`` (WouldBlock when empty, ``b""`` / 0 at EOF),
``shutdown_write``, ``close`` (graceful; a RST instead when unread data is pending, RFC 9293
§3.10.4 / RFC 2525 §2.17), ``abort`` (RST), ``readiness``, ``info``.  Options: ``nodelay``,
``keepalive`` (+ ``keepidle``/``keepintvl``/``keepcnt``), ``user_timeout``, ``linger`` (0:
``close`` resets like ``abort``), ``set_buffer_sizes``.

Segment arrival follows RFC 9293 §3.10.7:

* SYN-SENT (§3.10.7.3): an ACK outside ``(ISS, SND.NXT]`` is answered with a reset; a RST is only
  accepted with an acceptable ACK (-> ConnectionRefused); SYN+ACK completes the handshake (any
  text on it is kept); a bare SYN is a simultaneous open (-> SYN-RECEIVED, send SYN-ACK).
* Otherwise (§3.10.7.4): PAWS (RFC 7323 §5); the acceptability test; RST processing with
  RFC 5961 §3 (only an exact ``SEG.SEQ == RCV.NXT`` resets, any other in-window RST draws a
  challenge ACK); a SYN in a synchronized state draws a challenge ACK (RFC 5961 §4; challenge
  ACKs are rate-limited, §7); ACK processing, where an ACK of unsent data is answered with an
  ACK and dropped (RFC 5961 §5); text (the ``Receiver``); FIN.

Options negotiated on the handshake: MSS (from the route MTU: ``mtu - 40`` for IPv4, ``- 60`` for
IPv6; 536/1220 when the peer sends none), window scale and timestamps (RFC 7323), SACK
(RFC 2018: blocks reported on ACKs, most recent first; the sender's scoreboard drives RFC 6675
recovery).  ACKs are delayed (every second full-sized segment, else after ``delack`` seconds)
but sent at once for out-of-order data, hole fills and FINs (RFC 9293 §3.8.6.3, RFC 5681 §4.2).
RTT samples come from echoed timestamps, except echoes older than our latest retransmission
(ambiguous, Karn's rule extended to timestamps).  ICMP: hard errors abort a connection attempt,
soft ones are kept and reported if the connection times out, fragmentation-needed lowers the
MSS (RFC 1122 §4.2.3.9, RFC 1191, RFC 5927 sequence check).

Timers: ``_rto_timer`` (SYN/data retransmission and zero-window probes), ``_delack_timer``,
``_linger_timer`` (TIME-WAIT 2*MSL, and the FIN-WAIT-2 timeout of a closed endpoint),
``_ka_timer`` (keep-alive, off by default, RFC 9293 §3.8.4).  Reaching CLOSED cancels them all,
removes the endpoint from the demux tables and releases its port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aionetstack.errors import (
    AddressNotAvailable,
    AlreadyBound,
    AlreadyConnected,
    AlreadyConnecting,
    ClosedForSend,
    ConnectionAborted,
    ConnectionRefused,
    ConnectionReset,
    ConnectStarted,
    InvalidArgument,
    InvalidEndpointState,
    NetstackError,
    NoRoute,
    NotConnected,
    PortInUse,
    StackClosed,
    TimedOut,
    WouldBlock,
)
from aionetstack.network.packet import IcmpError, PacketInfo
from aionetstack.stack.addr import AddressLike, family_of, is_multicast, to_bytes, to_str
from aionetstack.stack.ports import Reservation
from aionetstack.stack.route import Route
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.transport.tcp.congestion import make_cc
from aionetstack.transport.tcp.listen import ListenQueue
from aionetstack.transport.tcp.receiver import Receiver
from aionetstack.transport.tcp.rtt import RttEstimator
from aionetstack.transport.tcp.sender import Sender
from aionetstack.transport.tcp.state import (
    CAN_RECEIVE,
    CAN_SEND,
    SYNCHRONIZED,
    TcpState,
    check_transition,
)
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.seqnum import MASK, seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from aionetstack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, TcpOptions, pack_tcp

if TYPE_CHECKING:
    from aionetstack.transport.tcp.protocol import TcpProtocol

Addr = tuple[bytes, int]
S = TcpState
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


class TcpEndpoint:
    """One TCP socket.  See the module docstring."""

    __slots__ = (
        "_ack_bytes", "_ack_now", "_delack_timer", "_ka_probes", "_ka_timer", "_keepalive",
        "_last_rx", "_linger_timer", "_pending_fin", "_rexmit_ts", "_rto_since", "_rto_timer",
        "_syn_time", "_zwp_since", "bound_address", "error", "family", "keepcnt", "keepidle",
        "keepintvl",
        "last_ack_sent", "linger", "listen_queue", "local", "parent", "peer_mss", "proto", "rcv",
        "remote", "reservation", "reuse_address", "route", "rtt", "sack_ok", "snd", "soft_error",
        "stack", "state", "ts_enabled", "ts_offset", "ts_recent", "ttl", "user_closed",
        "user_timeout", "waiter", "ws_ok",
    )

    def __init__(self, proto: TcpProtocol, family: int) -> None:
        if family not in (4, 6):
            raise InvalidArgument(f"family must be 4 or 6, not {family}")
        self.proto = proto
        self.stack = proto.stack
        self.family = family
        self.state = S.CLOSED
        self.waiter = WaiterQueue()
        self.local: Addr | None = None
        self.remote: Addr | None = None
        self.bound_address: bytes | None = None
        self.reservation: Reservation | None = None
        self.reuse_address = False
        self.route: Route | None = None
        self.error: NetstackError | None = None
        self.soft_error: NetstackError | None = None  # reported if the connection times out
        self.listen_queue: ListenQueue | None = None
        self.parent: TcpEndpoint | None = None
        self.user_closed = False
        self.user_timeout: float | None = None
        self.linger: float | None = None  # SO_LINGER: 0 makes close() an abortive RST
        self.ttl: int | None = None
        self.rtt = RttEstimator(initial_rto=proto.initial_rto, min_rto=proto.min_rto,
                                max_rto=proto.max_rto)
        self.snd = Sender(self._emit_data, proto.sndbuf, self.rtt)
        self.snd.cc = make_cc(proto.congestion_control, self.snd.mss)
        self.rcv = Receiver(proto.rcvbuf, _wscale_for(proto.rcvbuf))
        self.rcv.stats = proto.stats
        self.rcv.account = self.snd.account = proto.memory  # Limits.max_*_bytes
        self.peer_mss = 536
        self.ws_ok = False
        self.sack_ok = False
        self.ts_enabled = False
        self.ts_recent = 0
        self.ts_offset = self.stack.rng.getrandbits(32)
        self.last_ack_sent = 0
        self._ack_bytes = 0
        self._ack_now = False
        self._pending_fin = False
        self._syn_time = 0.0
        self._rto_since = 0.0
        self._zwp_since: float | None = None  # first zero-window probe of this episode
        self._rexmit_ts: int | None = None  # TSval of our latest retransmission
        timers = self.stack.timers
        self._rto_timer = timers.timer(self._on_rto)
        self._delack_timer = timers.timer(self._on_delack)
        self._linger_timer = timers.timer(self._on_linger)
        self._ka_timer = timers.timer(self._on_keepalive)
        self._keepalive = False
        self.keepidle = 7200.0  # RFC 9293 §3.8.4 (MUST-27): at least two hours by default
        self.keepintvl = 75.0
        self.keepcnt = 9
        self._ka_probes = 0
        self._last_rx = 0.0

    def __repr__(self) -> str:
        loc = f"{to_str(self.local[0])}:{self.local[1]}" if self.local else "unbound"
        rem = f" -> {to_str(self.remote[0])}:{self.remote[1]}" if self.remote else ""
        return f"<TcpEndpoint {self.state.value} {loc}{rem}>"

    # -- options ----------------------------------------------------------------------------------
    @property
    def nodelay(self) -> bool:
        return self.snd.nodelay

    @nodelay.setter
    def nodelay(self, value: bool) -> None:
        self.snd.nodelay = bool(value)
        if self.state in _OUTPUT_STATES:
            self._output(self.stack.now())

    @property
    def keepalive(self) -> bool:
        """Keep-alive probes (RFC 9293 §3.8.4, off by default): ``keepidle`` seconds of silence,
        then up to ``keepcnt`` probes ``keepintvl`` apart before failing with TimedOut."""
        return self._keepalive

    @keepalive.setter
    def keepalive(self, value: bool) -> None:
        self._keepalive = bool(value)
        if not value:
            self._ka_timer.cancel()
        elif self.state in SYNCHRONIZED:
            self._ka_timer.schedule(self._last_rx + self.keepidle)

    @property
    def congestion_control(self) -> str:
        """The congestion controller's name ("cubic" by default, "reno", or any name given to
        ``congestion.register_congestion_control``); settable in any state -- a connection
        keeps its cwnd and ssthresh and the new controller takes over from there."""
        return self.snd.cc.name

    @congestion_control.setter
    def congestion_control(self, name: str) -> None:
        old = self.snd.cc
        cc = make_cc(name, self.snd.mss)
        if self.state in SYNCHRONIZED:
            cc.cwnd, cc.ssthresh = old.cwnd, old.ssthresh
        self.snd.cc = cc

    def set_buffer_sizes(self, rcvbuf: int | None = None, sndbuf: int | None = None) -> None:
        """Set buffer sizes; the receive buffer (and so the window scale) only before connecting."""
        if rcvbuf is not None:
            if self.state is not S.CLOSED or rcvbuf < 1:
                raise InvalidEndpointState("the receive buffer is fixed once connecting")
            self.rcv.capacity = rcvbuf
            self.rcv.rcv_wscale = _wscale_for(rcvbuf)
        if sndbuf is not None:
            if sndbuf < 1:
                raise InvalidArgument("sndbuf must be positive")
            self.snd.capacity = sndbuf

    # -- binding and connection setup -------------------------------------------------------------
    def _addr(self, address: AddressLike) -> bytes:
        a = to_bytes(address)
        if family_of(a) != self.family:
            raise InvalidArgument(f"{to_str(a)} is not an IPv{self.family} address")
        return a

    def _check_usable(self) -> None:
        if self.user_closed:
            raise StackClosed("endpoint closed")

    def bind(self, address: AddressLike | None = None, port: int = 0) -> Addr:
        self._check_usable()
        if self.reservation is not None:
            raise AlreadyBound("endpoint is already bound")
        if self.state is not S.CLOSED:
            raise InvalidEndpointState(f"cannot bind in {self.state.value}")
        a = self._addr(address) if address is not None else None
        if a is not None and not any(a):
            a = None
        if a is not None and not self.stack.is_local(a):
            raise AddressNotAvailable(f"{to_str(a)} is not an address of this stack")
        r = self.stack.ports.reserve(PROTO_TCP, self.family, a, port, self.reuse_address)
        self.reservation = r
        self.bound_address = a
        self.local = (a or bytes(4 if self.family == 4 else 16), r.port)
        return self.local

    def listen(self, backlog: int = 128) -> None:
        self._check_usable()
        if self.state is S.LISTEN:
            assert self.listen_queue is not None
            self.listen_queue.backlog = max(backlog, 1)
            return
        if self.state is not S.CLOSED or self.remote is not None:
            raise InvalidEndpointState(f"cannot listen in {self.state.value}")
        if self.reservation is None:
            self.bind()
        assert self.reservation is not None
        key = (self.bound_address, self.reservation.port, self.family)
        if key in self.proto.listeners:
            raise PortInUse(f"port {self.reservation.port} already has a listener")
        self.listen_queue = ListenQueue(backlog)
        self.proto.listeners[key] = self
        self._set_state(S.LISTEN)

    def accept(self) -> TcpEndpoint:
        if self.state is not S.LISTEN or self.listen_queue is None:
            raise InvalidEndpointState("accept on an endpoint that is not listening")
        q = self.listen_queue.accept_queue
        if not q:
            raise WouldBlock()
        child = q.popleft()
        child.parent = None
        return child

    def connect(self, address: AddressLike, port: int) -> None:
        """Start an active open; always raises (ConnectStarted on success)."""
        self._check_usable()
        st = self.state
        if st is S.SYN_SENT or st is S.SYN_RECEIVED:
            raise AlreadyConnecting("connection attempt in progress")
        if st in SYNCHRONIZED:
            raise AlreadyConnected("already connected")
        if st is not S.CLOSED or self.error is not None or self.remote is not None:
            raise InvalidEndpointState(f"cannot connect in {st.value}")
        if not 0 < port <= 65535:
            raise InvalidArgument(f"port out of range: {port}")
        dst = self._addr(address)
        stack = self.stack
        if is_multicast(dst) or dst == b"\xff\xff\xff\xff" or not any(dst):
            raise NoRoute(f"cannot connect to {to_str(dst)}")  # RFC 9293 §3.9.1.1 / MUST-?
        route = stack.find_route(dst, self.bound_address)
        if route.nic.is_directed_broadcast(dst):
            raise NoRoute(f"cannot connect to the broadcast address {to_str(dst)}")
        conns = self.proto.connections
        if self.reservation is None:
            local = route.local
            self.reservation = stack.ports.reserve(
                PROTO_TCP, self.family, None, 0, self.reuse_address, remote=(dst, port),
                is_free=lambda p: (local, p, dst, port) not in conns)
        lport = self.reservation.port
        key = (route.local, lport, dst, port)
        if key in conns:
            raise AddressNotAvailable("that 4-tuple is in use")
        self.local = (route.local, lport)
        self.remote = (dst, port)
        self.route = route
        conns[key] = self
        self.snd.start(self.proto.new_isn(route.local, lport, dst, port))
        self._set_state(S.SYN_SENT)
        self._syn_time = stack.now()
        self._send_syn(ack=False)
        raise ConnectStarted()

    def connect_result(self) -> None:
        """None once connected; raises the failure, or WouldBlock while still connecting."""
        if self.state in SYNCHRONIZED:
            return
        if self.error is not None:
            raise self.error
        if self.state is S.SYN_SENT or self.state is S.SYN_RECEIVED:
            raise WouldBlock()
        raise NotConnected("not connected")

    def spawn_child(self, pkt: PacketInfo, h: TcpHeader,
                    cookie: tuple[int, int] | None = None) -> TcpEndpoint | None:
        """Passive open: a SYN reached this listener; create the SYN-RECEIVED child.

        With ``cookie`` (ISN, MSS) ``h`` is the ACK that completes a SYN-cookie handshake.
        """
        proto = self.proto
        try:
            route = self.stack.find_route(pkt.src, pkt.dst)
        except NetstackError:
            return None
        child = TcpEndpoint(proto, self.family)
        child.rcv.capacity = self.rcv.capacity
        child.rcv.rcv_wscale = self.rcv.rcv_wscale
        child.snd.capacity = self.snd.capacity
        child.snd.nodelay = self.snd.nodelay
        if self.snd.cc.name != child.snd.cc.name:
            child.snd.cc = make_cc(self.snd.cc.name, child.snd.mss)
        child.ttl = self.ttl
        child.user_timeout = self.user_timeout
        child.linger = self.linger
        child._keepalive = self._keepalive
        child.keepidle, child.keepintvl, child.keepcnt = self.keepidle, self.keepintvl, self.keepcnt
        child.parent = self
        child.local = (pkt.dst, h.dport)
        child.remote = (pkt.src, h.sport)
        child.route = route
        if cookie is None:
            child.rcv.start(h.seq)
            child._negotiate(h.options)
            child.snd.start(proto.new_isn(pkt.dst, h.dport, pkt.src, h.sport))
        else:
            child.rcv.start((h.seq - 1) & MASK)
            child._negotiate(TcpOptions(mss=cookie[1]))
            child.snd.start(cookie[0])
        child.snd.snd_wnd = child.snd.max_snd_wnd = h.window
        child.snd.snd_wl1, child.snd.snd_wl2 = h.seq, child.snd.iss
        proto.connections[(pkt.dst, h.dport, pkt.src, h.sport)] = child
        proto.endpoints.add(child)
        child._set_state(S.SYN_RECEIVED)
        if cookie is None:
            if h.payload:  # data on the SYN: keep it for after the handshake (RFC 9293 §3.10.7.2)
                child.rcv.on_data(seq_add(h.seq, 1), h.payload, False)
            child._syn_time = self.stack.now()
            child._send_syn(ack=True)
        else:
            child._syn_time = -1.0  # no RTT sample from a handshake we kept no state for
            child.segment_arrived(h)
        return child

    # -- data -------------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is not None:
            raise self.error
        if self.user_closed or self.snd.fin_queued or self._pending_fin:
            raise ClosedForSend("the endpoint is shut down for writing")
        st = self.state
        if st not in CAN_SEND and st is not S.SYN_SENT and st is not S.SYN_RECEIVED:
            raise NotConnected(f"cannot write in {st.value}")
        if not len(data):
            return 0
        n = self.snd.queue(data)
        if n == 0:
            raise WouldBlock()
        self._output(self.stack.now())
        return n

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all with -1); ``b""`` at EOF; WouldBlock when nothing is ready."""
        rcv = self.rcv
        if n == 0:
            return b""
        if rcv.buffer:
            data = rcv.read(n)
            self._maybe_window_update()
            return data
        return self._read_empty()

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Like ``read(len(buf))`` but copies straight into ``buf``; 0 means EOF."""
        rcv = self.rcv
        if rcv.buffer and len(buf):
            n = rcv.read_into(buf)
            self._maybe_window_update()
            return n
        if not len(buf):
            return 0
        return len(self._read_empty())

    def _read_empty(self) -> bytes:
        """The outcome of reading with nothing buffered: EOF, an error, or WouldBlock."""
        if self.rcv.fin_received:
            return b""
        if self.error is not None:
            raise self.error
        st = self.state
        if st is S.SYN_SENT or st is S.SYN_RECEIVED or st in CAN_RECEIVE:
            raise WouldBlock()
        raise NotConnected(f"cannot read in {st.value}")

    def unread(self) -> int:
        """Bytes received in order and not yet read."""
        return len(self.rcv.buffer)

    def send_buffered(self) -> int:
        """Bytes written but not yet acknowledged (unsent + in flight)."""
        return len(self.snd.buffer)

    def send_space(self) -> int:
        """How many bytes ``write`` would accept now."""
        return self.snd.space()

    def shutdown_write(self) -> None:
        st = self.state
        if st is S.ESTABLISHED or st is S.CLOSE_WAIT:
            self.snd.fin_queued = True
            self._set_state(S.FIN_WAIT_1 if st is S.ESTABLISHED else S.LAST_ACK)
            self._output(self.stack.now())
        elif st is S.SYN_SENT or st is S.SYN_RECEIVED:
            self._pending_fin = True
        elif st is S.CLOSED or st is S.LISTEN:
            raise NotConnected(f"cannot shut down in {st.value}")

    def close(self) -> None:
        """Graceful close; the connection finishes in the background (idempotent)."""
        if self.user_closed:
            return
        st = self.state
        if st is S.LISTEN:
            self.user_closed = True
            assert self.listen_queue is not None
            for child in self.listen_queue.children():
                child.parent = None
                child.abort()
            self._finish()
            return
        if st is S.CLOSED or st is S.SYN_SENT:
            self.user_closed = True
            self._finish()
            return
        if (self.rcv.buffer or self.linger == 0) and st is not S.TIME_WAIT:
            self.abort()  # unread data or linger 0: reset (RFC 9293 §3.10.4, Linux SO_LINGER)
            return
        self.user_closed = True
        if st in (S.ESTABLISHED, S.CLOSE_WAIT, S.SYN_RECEIVED):
            self.shutdown_write()
        if self.state is S.FIN_WAIT_2:
            self._linger_timer.schedule(self.stack.now() + self.proto.fin_timeout)

    def abort(self) -> None:
        """Drop the connection at once, telling the peer with a RST (RFC 9293 §3.10.5)."""
        st = self.state
        if st in _RST_ON_ABORT and self.route is not None:
            self._emit(self.snd.snd_max, RST)
            self.proto.stats["resets-sent"] += 1
        self.user_closed = True
        if st is not S.CLOSED and st is not S.LISTEN and st is not S.TIME_WAIT:
            self.error = self.error or ConnectionAborted("connection aborted")
        if st is S.LISTEN and self.listen_queue is not None:
            for child in self.listen_queue.children():
                child.parent = None
                child.abort()
        self._finish()

    # -- readiness and introspection --------------------------------------------------------------
    def readiness(self, mask: int) -> int:
        st = self.state
        r = 0
        if st is S.LISTEN:
            if self.listen_queue is not None and self.listen_queue.accept_queue:
                r |= EVENT_IN
            return r & mask
        if self.rcv.buffer or self.rcv.fin_received:
            r |= EVENT_IN
        if st in CAN_SEND and self.snd.space() > 0 and not self.snd.fin_queued:
            r |= EVENT_OUT
        if self.error is not None:
            r |= EVENT_ERR | EVENT_IN | EVENT_OUT
        if st is S.CLOSED and (self.error is not None or self.remote is not None):
            r |= EVENT_HUP
        return r & mask

    def info(self) -> dict[str, Any]:
        snd, rcv, rtt = self.snd, self.rcv, self.rtt
        return {
            "state": self.state.value,
            "srtt": rtt.srtt,
            "rttvar": rtt.rttvar,
            "rto": rtt.timeout(),
            "cwnd": snd.cc.cwnd,
            "ssthresh": snd.cc.ssthresh,
            "snd_wnd": snd.snd_wnd,
            "rcv_wnd": rcv.rcv_wnd,
            "snd_mss": snd.mss,
            "bytes_sent": snd.bytes_sent,
            "bytes_acked": snd.bytes_acked,
            "bytes_received": rcv.bytes_received,
            "retransmits": snd.retransmits,
        }

    # -- segment output ---------------------------------------------------------------------------
    def _local_mss(self) -> int:
        assert self.route is not None
        return local_mss(self.route.mtu, self.family)

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
        gso = route.nic.link.caps.gso_max_size if route is not None else 0
        # a super-segment's payload: the link's limit less IP and TCP headers (with options)
        self.snd.gso_limit = max(gso - (20 if self.family == 4 else 40) - 60, 0) if gso else 0
        self.snd.set_mss(max(min(self.peer_mss, local) - ts_len, 64))
        self.rcv.mss = max(local - ts_len, 64)

    def _send_syn(self, ack: bool) -> None:
        self._emit(self.snd.iss, SYN | (ACK if ack else 0), b"", self._syn_options(ack))

    def _emit_data(self, seq: int, flags: int, payload: memoryview) -> None:
        self._emit(seq, flags, payload)

    def _emit(self, seq: int, flags: int, payload: bytes | memoryview = b"",
              options: TcpOptions | None = None) -> None:
        route = self.route
        if route is None or self.local is None or self.remote is None:
            return
        now = self.stack.now()
        rcv = self.rcv
        if flags & RST:
            window = 0
            options = None
        else:
            rexmit = bool(payload or flags & FIN) and seq_lt(seq, self.snd.snd_max)
            if rexmit:
                self.proto.stats["retransmitted"] += 1
            if options is None:
                if self.ts_enabled:
                    tsval = self._tsval(now)
                    options = TcpOptions(timestamp=(tsval, self.ts_recent))
                    if rexmit:
                        self._rexmit_ts = tsval
                # SACK blocks only as far as they fit beside the payload within the MTU
                fit = (route.max_payload - 20 - (12 if self.ts_enabled else 0) - len(payload)
                       - 4) // 8
                if self.sack_ok and rcv.ooo and flags & ACK and fit > 0:
                    blocks = rcv.sack_blocks(min(3 if self.ts_enabled else 4, fit))
                    if options is None:
                        options = TcpOptions(sack_blocks=blocks)
                    else:
                        options.sack_blocks = blocks
            window = rcv.advertise(syn=True) if flags & SYN else rcv.advertise()
        ack = rcv.rcv_nxt if flags & ACK else 0
        hl = 20 + (options.packed_len() if options is not None else 0)
        l4 = hl + len(payload)
        buf = route.new_packet(l4)
        pack_tcp(buf, route.headroom, src=route.local, dst=route.remote, sport=self.local[1],
                 dport=self.remote[1], seq=seq, ack=ack, flags=flags, window=window,
                 options=options, payload=payload, checksum=not route.nic.tx_offload)
        mss = self.snd.mss
        try:
            if len(payload) > mss:  # a super-segment for the link to cut (TSO)
                self.stack.send_ip(route, buf, l4, PROTO_TCP, ttl=self.ttl, df=True, gso=mss)
            else:
                self.stack.send_ip(route, buf, l4, PROTO_TCP, ttl=self.ttl, df=True)
        except NetstackError as exc:  # e.g. the NIC went down: the segment is simply lost
            self.proto.stats.drop(f"send-{type(exc).__name__}")
        else:
            self.proto.stats["sent"] += 1
        if flags & ACK:
            self.last_ack_sent = ack
            self._ack_bytes = 0
            self._ack_now = False
            self._delack_timer.cancel()
        if (payload or flags & (SYN | FIN)) and not self._rto_timer.armed:
            self._rto_timer.schedule(now + self.rtt.timeout())

    def _send_ack(self) -> None:
        """A pure ACK.  Its sequence number is the highest one sent (SND.NXT may have been pulled
        back by a timeout, and an ACK behind the peer's RCV.NXT would be unacceptable to it),
        but not beyond the peer's window (Linux ``tcp_acceptable_seq``)."""
        snd = self.snd
        edge = seq_add(snd.snd_una, snd.snd_wnd)
        self._emit(snd.snd_max if seq_le(snd.snd_max, edge) else edge, ACK)

    def _challenge_ack(self) -> None:
        if self.proto.challenge_ack_allowed():
            self.proto.stats["challenge-acks"] += 1
            self._send_ack()

    def _output(self, now: float) -> bool:
        """Run the sender; arm the persist timer when data waits on a closed window."""
        sent = False
        if self.state in _OUTPUT_STATES:
            sent = self.snd.output(now)
            snd = self.snd
            if (not snd.outstanding() and (snd.unsent() > 0)
                    and not self._rto_timer.armed):
                self._rto_timer.schedule(now + self.rtt.timeout())
        return sent

    def _maybe_window_update(self) -> None:
        """After the user read: tell the peer about a much larger window (RFC 9293 §3.8.6.2.2)."""
        rcv = self.rcv
        if self.state not in CAN_RECEIVE:
            return
        if rcv.rcv_wnd < rcv.max_window() // 2 and rcv.window_increase() > 0:
            self._send_ack()

    # -- state changes ----------------------------------------------------------------------------
    def _set_state(self, new: TcpState) -> None:
        check_transition(self.state, new)
        self.state = new

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
            self._ka_timer.schedule(now + self.keepidle)
        parent = self.parent
        if parent is not None:
            if parent.state is S.LISTEN and parent.listen_queue is not None:
                parent.listen_queue.established(self)
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
        self._linger_timer.schedule(now + 2 * self.proto.msl)

    def recycle(self) -> None:
        """End TIME-WAIT early because a new incarnation of the 4-tuple is starting."""
        self._finish()

    def _fail(self, err: NetstackError) -> None:
        self.error = err
        self._finish()

    def _finish(self) -> None:
        """Enter CLOSED: cancel timers, leave the demux tables, release the port."""
        if self.state is not S.CLOSED:
            self._set_state(S.CLOSED)
        self._rto_timer.cancel()
        self._delack_timer.cancel()
        self._linger_timer.cancel()
        self._ka_timer.cancel()
        self.rcv.release()
        self.snd.release()
        proto = self.proto
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
            self.parent.listen_queue.forget(self)
            self.parent = None
            self.user_closed = True
        if self.user_closed:
            proto.endpoints.discard(self)
        self.waiter.notify(EVENT_IN | EVENT_OUT | EVENT_HUP | (EVENT_ERR if self.error else 0))

    # -- timers -----------------------------------------------------------------------------------
    def _on_rto(self, now: float) -> None:
        st = self.state
        snd = self.snd
        if st is S.SYN_SENT or st is S.SYN_RECEIVED:
            snd.retries += 1
            limit = self.proto.syn_retries if st is S.SYN_SENT else self.proto.synack_retries
            if snd.retries > limit:
                self._fail(self.soft_error or TimedOut("connection attempt timed out"))
                return
            self.rtt.on_expiry()
            snd.retransmits += 1
            self._send_syn(ack=st is S.SYN_RECEIVED)
            self._rto_timer.schedule(now + self.rtt.timeout())
            return
        if st not in _OUTPUT_STATES:
            return
        zero = snd.snd_wnd == 0
        if not snd.outstanding() and snd.unsent() <= 0:
            return
        if snd.retries == 0:
            self._rto_since = now
        if zero and self._zwp_since is None:
            self._zwp_since = now
        snd.retries += 1
        self.proto.stats["timeouts"] += 1
        ut = self.user_timeout
        # the user timeout also bounds a window held at zero by a peer that answers every
        # probe (answered probes reset ``retries``), as Linux's TCP_USER_TIMEOUT does
        if snd.retries > self.proto.data_retries or (ut is not None and (
                now - self._rto_since >= ut
                or (zero and self._zwp_since is not None and now - self._zwp_since >= ut))):
            self._fail(self.soft_error or TimedOut("connection timed out"))
            return
        self.rtt.on_expiry()
        if zero:
            # persist: a zero-window probe that uses no sequence space (an old ACK, as Linux
            # sends); the peer answers with its current window (RFC 9293 §3.8.6.1)
            snd.go_back()
            self._emit(seq_sub(snd.snd_una, 1) & MASK, ACK)
        else:
            snd.cc.on_rto(snd.flight)
            snd.go_back(keep_sack=snd.retries < 2)
            if not snd.output(now):
                snd.force_send(now, snd.mss)
        self._rto_timer.schedule(now + self.rtt.timeout())

    def _on_delack(self, now: float) -> None:
        if self.state in SYNCHRONIZED and self.state is not S.TIME_WAIT:
            self._send_ack()

    def _on_keepalive(self, now: float) -> None:
        if not self._keepalive or self.state not in (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_2):
            return
        snd = self.snd
        if snd.outstanding() or snd.unsent() > 0:
            self._ka_timer.schedule(now + self.keepidle)  # the RTO watches this connection
            return
        if self._ka_probes == 0 and now - self._last_rx < self.keepidle:
            self._ka_timer.schedule(self._last_rx + self.keepidle)
            return
        if self._ka_probes >= self.keepcnt:
            self._fail(TimedOut("keep-alive: the peer stopped answering"))
            return
        self._ka_probes += 1
        self._emit((snd.snd_una - 1) & MASK, ACK)  # RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1
        self._ka_timer.schedule(now + self.keepintvl)

    def _on_linger(self, now: float) -> None:
        if self.state is S.TIME_WAIT or self.state is S.FIN_WAIT_2:
            self._finish()

    # -- errors from below ------------------------------------------------------------------------
    def icmp_error(self, err: IcmpError) -> None:
        """RFC 1122 §4.2.3.9 (hard errors abort a connect), RFC 1191/8201 + RFC 5927 (PMTU)."""
        snd = self.snd
        if len(err.l4) >= 8:
            seq = int.from_bytes(err.l4[4:8], "big")
            if not (seq_le(snd.snd_una, seq) and seq_lt(seq, snd.snd_max)):
                self.proto.stats.drop("icmp-stale-seq")  # RFC 5927 §4.1: not in flight
                return
        if err.kind == "frag-needed":
            self._path_mtu_changed()
        elif self.state is S.SYN_SENT and err.hard:
            self._fail(err.exception())
        else:
            self.soft_error = err.exception()  # RFC 1122 §4.2.3.9: report, do not abort

    def _path_mtu_changed(self) -> None:
        if self.state not in _OUTPUT_STATES or self.remote is None or self.local is None:
            return
        try:
            route = self.stack.find_route(self.remote[0], self.local[0])
        except NetstackError:
            return
        self.route = route
        snd = self.snd
        mss = min(self._local_mss(), self.peer_mss) - (12 if self.ts_enabled else 0)
        if mss < snd.mss:
            snd.mss = snd.cc.mss = max(mss, 64)
            snd.seg_max = max(snd.mss, snd.gso_limit // snd.mss * snd.mss)
            snd.go_back()  # resend what was too big, now in smaller segments
            self._output(self.stack.now())

    # -- segment arrival (RFC 9293 §3.10.7) -------------------------------------------------------
    def segment_arrived(self, h: TcpHeader) -> None:
        now = self.stack.now()
        st = self.state
        if st is S.SYN_SENT:
            self._syn_sent_input(h, now)
        elif st is not S.CLOSED and st is not S.LISTEN:
            self._last_rx = now
            self._ka_probes = 0
            self._input(h, now)

    def _syn_sent_input(self, h: TcpHeader, now: float) -> None:
        flags = h.flags
        snd = self.snd
        if flags & ACK and (seq_le(h.ack, snd.iss) or seq_gt(h.ack, snd.snd_max)):
            if not flags & RST:
                self._emit(h.ack, RST)
            return
        if flags & RST:
            if flags & ACK:
                self._fail(ConnectionRefused("connection refused"))
            return
        if not flags & SYN:
            return
        self.rcv.start(h.seq)
        self.last_ack_sent = h.seq  # nothing of the peer's acknowledged yet
        self._negotiate(h.options)
        if flags & ACK:
            snd.snd_una = h.ack
            snd.snd_wnd = snd.max_snd_wnd = h.window
            snd.snd_wl1, snd.snd_wl2 = h.seq, h.ack
            self._established(now)
            if self.state is S.CLOSED:
                return
            if (h.payload or flags & FIN) and not self._text(
                    seq_add(h.seq, 1), h.payload, bool(flags & FIN), now):
                return
            self._output(now)
            if self._ack_now or self.last_ack_sent != self.rcv.rcv_nxt:
                self._send_ack()  # unless data (or a FIN queued in SYN-SENT) carried the ACK
        else:
            snd.snd_wnd = snd.max_snd_wnd = h.window
            snd.snd_wl1, snd.snd_wl2 = h.seq, snd.iss
            self._set_state(S.SYN_RECEIVED)
            self._send_syn(ack=True)

    def _text(self, seq: int, payload: memoryview, fin: bool, now: float) -> bool:
        """Steps 7 and 8 of RFC 9293 §3.10.7.4; False if the connection went away."""
        rcv, st = self.rcv, self.state
        if payload and self.user_closed and seq_gt(seq_add(seq, len(payload)), rcv.rcv_nxt):
            # data for an endpoint the user closed: nobody will read it (RFC 9293 §3.10.4)
            self.abort()
            return False
        before = rcv.fin_received
        delivered, out_of_order = rcv.on_data(seq, payload, fin)
        if delivered:
            self.proto.stats["bytes-received"] += delivered
            self.waiter.notify(EVENT_IN)
            if self.state is S.CLOSED:
                return False  # a waiter callback aborted us
            st = self.state  # ... or shut down writing
        if out_of_order or (payload and not delivered):
            self._ack_now = True
        elif payload:
            self._ack_bytes += len(payload)
            if self._ack_bytes > rcv.mss:
                # more than one full segment unacknowledged: ACK now (RFC 9293 §3.8.6.3
                # "at least every second full-sized segment"; Linux __tcp_ack_snd_check)
                self._ack_now = True
        if rcv.fin_received and not before:
            self._ack_now = True
            if st is S.ESTABLISHED:
                self._set_state(S.CLOSE_WAIT)
            elif st is S.FIN_WAIT_1:
                if self.snd.fin_acked():
                    self._enter_time_wait(now)
                else:
                    self._set_state(S.CLOSING)
            elif st is S.FIN_WAIT_2:
                self._linger_timer.cancel()
                self._enter_time_wait(now)
            self.waiter.notify(EVENT_IN)
        return True

    def _input(self, h: TcpHeader, now: float) -> None:
        flags = h.flags
        seq = h.seq
        rcv, snd = self.rcv, self.snd
        st = self.state
        if flags & SYN and st is S.SYN_RECEIVED and seq == rcv.irs:
            if not flags & ACK:
                if not flags & RST:  # the peer retransmitted its SYN: repeat our SYN-ACK
                    self._send_syn(ack=True)
                return
            seq = seq_add(seq, 1)  # simultaneous open: the SYN of a SYN-ACK is old news
            flags &= ~SYN
        payload = h.payload
        seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        ts = h.options.timestamp if self.ts_enabled else None
        # PAWS (RFC 7323 §5.3)
        if ts is not None and not flags & RST and seq_lt(ts[0], self.ts_recent):
            self.proto.stats.drop("paws")
            self._send_ack()
            return
        # 1. sequence number check
        if not rcv.acceptable(seq, seg_len):
            if not flags & RST:
                if st is S.TIME_WAIT and flags & FIN:
                    self._linger_timer.schedule(now + 2 * self.proto.msl)
                self._send_ack()
            return
        # 2. RST (RFC 5961 §3.2)
        if flags & RST:
            if seq == rcv.rcv_nxt:
                if st is S.SYN_RECEIVED and self.parent is not None:
                    self.user_closed = True
                    self._finish()
                elif st is S.SYN_RECEIVED:
                    self._fail(ConnectionRefused("connection refused"))
                elif st in (S.CLOSING, S.LAST_ACK, S.TIME_WAIT):
                    self._finish()
                else:
                    self._fail(ConnectionReset("connection reset by peer"))
            else:
                self._challenge_ack()
            return
        # 4. SYN in a synchronized state (RFC 5961 §4.2)
        if flags & SYN:
            self._challenge_ack()
            return
        # 5. ACK
        if not flags & ACK:
            return
        ack = h.ack
        if st is S.SYN_RECEIVED:
            if seq_lt(snd.snd_una, ack) and seq_le(ack, snd.snd_max):
                snd.snd_una = ack
                snd.snd_wnd = h.window << snd.snd_wscale
                snd.max_snd_wnd = max(snd.max_snd_wnd, snd.snd_wnd)
                snd.snd_wl1, snd.snd_wl2 = seq, ack
                self._established(now)
                st = self.state
                if st is S.CLOSED:
                    return
            else:
                self._emit(ack, RST)
                return
        if seq_gt(ack, snd.snd_max):  # RFC 5961 §5.2: ACK of unsent data
            self._challenge_ack()
            return
        if seq_lt(ack, (snd.snd_una - max(snd.max_snd_wnd, 1)) & MASK):
            self._challenge_ack()  # RFC 5961 §5.2: too old an ACK
            return
        if ts is not None and seq_le(seq, self.last_ack_sent):
            self.ts_recent = ts[0]  # RFC 7323 §4.3
        ts_rtt: float | None = None
        if (ts is not None and ts[1] and seq_gt(ack, snd.snd_una) and (
                self._rexmit_ts is None or seq_ge(ts[1], self._rexmit_ts))):
            # an echo older than our latest retransmission is ambiguous (Karn, RFC 6298 §3)
            d = (self._tsval(now) - ts[1]) & MASK
            if d < 0x80000000:
                ts_rtt = d / 1000.0
        changed = snd.update_window(seq, ack, h.window)
        if snd.snd_wnd:
            self._zwp_since = None
        dup = not payload and not flags & FIN and not changed
        acked = snd.on_ack(ack, now, ts_rtt, dup, h.options.sack_blocks)
        if acked:
            if snd.outstanding():
                self._rto_timer.schedule(now + self.rtt.timeout())
            else:
                self._rto_timer.cancel()
            if (st in CAN_SEND or snd.fin_queued) and snd.space() > 0:
                # after shutdown_write() too: a caller waiting for the send buffer to drain
                # learns of each ACK (Linux keeps the socket writable after SEND_SHUTDOWN)
                self.waiter.notify(EVENT_OUT)
                if self.state is S.CLOSED:
                    return  # a waiter callback aborted us
                st = self.state  # ... or shut down writing
        elif snd.snd_wnd == 0:
            snd.retries = 0  # the peer answers our probes: a closed window is no failure
        if snd.fin_acked():
            if st is S.FIN_WAIT_1:
                self._set_state(S.FIN_WAIT_2)
                self._rto_timer.cancel()
                if self.user_closed:
                    self._linger_timer.schedule(now + self.proto.fin_timeout)
            elif st is S.CLOSING:
                self._enter_time_wait(now)
            elif st is S.LAST_ACK:
                self._finish()
                return
        st = self.state
        # 7. segment text, 8. FIN
        if ((payload or flags & FIN) and self.state in CAN_RECEIVE
                and not self._text(seq, payload, bool(flags & FIN), now)):
            return
        if self.state is S.CLOSED:
            return  # a waiter callback closed or aborted us while we were notifying
        self._output(now)
        if self._ack_now:
            self._send_ack()
        elif self._ack_bytes and not self._delack_timer.armed:
            self._delack_timer.schedule(now + self.proto.delack)
