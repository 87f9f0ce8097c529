"""The user API of a TCP endpoint (``TcpEndpoint``, see ``endpoint``): creation, bind, listen,
accept, connect, the passive open of a listener's child, read and write, shutdown, close and
abort, readiness and ``info``.

It is compiled with the rest of the core (``aionetstack._accel``); ``TcpEndpoint`` itself is a
small interpreted subclass, because ``TimeWait`` records refer to endpoints weakly and mypyc's
native classes take no weak references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mypy_extensions import mypyc_attr

from aionetstack.errors import (
    AddressNotAvailable,
    AlreadyBound,
    AlreadyConnected,
    AlreadyConnecting,
    ClosedForSend,
    ConnectionAborted,
    ConnectStarted,
    InvalidArgument,
    InvalidEndpointState,
    NetstackError,
    NoRoute,
    NotConnected,
    PortInUse,
    StackClosed,
    WouldBlock,
)
from aionetstack.network.packet import PacketInfo
from aionetstack.stack.addr import AddressLike, family_of, is_multicast, to_bytes, to_str
from aionetstack.stack.ports import Reservation
from aionetstack.stack.route import Route
from aionetstack.stack.routing import find_route
from aionetstack.stack.timers import Timer
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
)
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.seqnum import MASK, seq_add
from aionetstack.wire.tcp import RST, TcpHeader, TcpOptions

if TYPE_CHECKING:
    from aionetstack.transport.tcp.endpoint import TcpEndpoint
    from aionetstack.transport.tcp.protocol import TcpProtocol

from aionetstack.transport.tcp.core import (
    _OUTPUT_STATES,
    _RST_ON_ABORT,
    Addr,
    S,
    _wscale_for,
)
from aionetstack.transport.tcp.input import SegmentInput


@mypyc_attr(allow_interpreted_subclasses=True)  # applications subclass TcpEndpoint
class EndpointApi(SegmentInput):
    """The user API of ``TcpEndpoint``; see ``endpoint``'s module docstring."""

    __slots__ = ()

    def __init__(self, proto: TcpProtocol, family: int) -> None:
        if family not in (4, 6):
            raise InvalidArgument(f"family must be 4 or 6, not {family}")
        self.proto = proto
        self.stack = proto.stack
        self.family = family
        self._state = S.CLOSED
        self._tw = None
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
        self.user_mss = None  # TCP_MAXSEG: caps the MSS we offer and use
        self.rtt = RttEstimator(initial_rto=proto.initial_rto, min_rto=proto.min_rto,
                                max_rto=proto.max_rto)
        # the congestion controller for the sender's initial MSS (536, RFC 9293 §3.7.1)
        self.snd = Sender(self._emit, proto.sndbuf, self.rtt,
                          make_cc(proto.congestion_control, 536))
        self.rcv = Receiver(proto.rcvbuf, _wscale_for(proto.rcvbuf))
        self.rcv.stats = proto.stats
        self.rcv.account = self.snd.account = proto.memory  # Limits.max_*_bytes
        self.peer_mss = 536
        self.ws_ok = False
        self.sack_ok = False
        self.ts_enabled = False
        self.ts_recent = 0
        self.ts_offset = 0  # set with the 4-tuple (isn.py: one per pair of hosts)
        self.last_ack_sent = 0
        self._ack_bytes = 0
        self._ack_now = False
        self._corked = False
        self._pending_fin = False
        self._syn_time = 0.0
        self._rto_since = 0.0
        self._zwp_since: float | None = None  # first zero-window probe of this episode
        self._rexmit_ts: int | None = None  # TSval of our latest retransmission
        timers = self.stack.timers
        self._rto_timer = Timer(timers, self._on_rto)
        self._delack_timer = Timer(timers, self._on_delack)
        self._linger = None  # the linger and keep-alive timers are made on first use
        self._ka_timer = None
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
    def max_segment(self) -> int | None:
        """The user's MSS cap (TCP_MAXSEG), or None: the MSS follows the route MTU."""
        return self.user_mss

    @max_segment.setter
    def max_segment(self, value: int | None) -> None:
        if value is not None and not 88 <= value <= 65495:
            raise InvalidArgument(f"max_segment must be in [88, 65495], not {value!r}")
        if self.state not in (S.CLOSED, S.LISTEN):
            raise InvalidEndpointState(
                f"max_segment applies to the handshake; set it before connect or listen "
                f"(state {self.state.value})")
        self.user_mss = value

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
            if self._ka_timer is not None:
                self._ka_timer.cancel()
        elif self.state in SYNCHRONIZED:
            self._keepalive_timer().schedule(self._last_rx + self.keepidle)

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
        if a is not None and a not in self.stack._local:
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
        self.proto.listeners[key] = cast("TcpEndpoint", self)
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
        self.start_connect(address, port)
        raise ConnectStarted()

    def start_connect(self, address: AddressLike, port: int) -> None:
        """``connect`` without the ConnectStarted exception: returns once the SYN is out
        (failures still raise); completion is ``EVENT_OUT`` on ``waiter`` as with ``connect``."""
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
        route = find_route(stack, dst, self.bound_address)
        if route.nic.is_directed_broadcast(dst):
            raise NoRoute(f"cannot connect to the broadcast address {to_str(dst)}")
        conns = self.proto.connections
        if self.reservation is None:
            local = route.local
            tw = self.proto.time_wait
            self.reservation = stack.ports.reserve(
                PROTO_TCP, self.family, None, 0, self.reuse_address, remote=(dst, port),
                is_free=lambda p: (local, p, dst, port) not in conns and (
                    (local, p, dst, port) not in tw), shared=True)
        lport = self.reservation.port
        key = (route.local, lport, dst, port)
        if key in conns or key in self.proto.time_wait:
            raise AddressNotAvailable("that 4-tuple is in use")
        self.local = (route.local, lport)
        self.remote = (dst, port)
        self.route = route
        conns[key] = cast("TcpEndpoint", self)
        self.snd.start(self.proto.new_isn(route.local, lport, dst, port))
        self.ts_offset = self.proto.isn.ts_offset(route.local, dst)
        self._set_state(S.SYN_SENT)
        self._syn_time = stack.now()
        self._send_syn(ack=False)

    def connecting(self) -> bool:
        """Is an active open still under way (``connect_result`` would raise WouldBlock)?"""
        st = self.state
        return (st is S.SYN_SENT or st is S.SYN_RECEIVED) and self.error is None

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
            route = find_route(self.stack, pkt.src, pkt.dst)
        except NetstackError:
            return None
        # the listener's own class (TcpEndpoint, or an application's subclass of it)
        child = cast("TcpEndpoint", type(self)(proto, self.family))
        child.rcv.capacity = self.rcv.capacity
        child.rcv.rcv_wscale = self.rcv.rcv_wscale
        child.snd.capacity = self.snd.capacity
        child.snd.nodelay = self.snd.nodelay
        if self.snd.cc.name != child.snd.cc.name:
            child.snd.cc = make_cc(self.snd.cc.name, child.snd.mss)
        child.ttl = self.ttl
        child.user_mss = self.user_mss
        child.user_timeout = self.user_timeout
        child.linger = self.linger
        child._keepalive = self._keepalive
        child.keepidle, child.keepintvl, child.keepcnt = self.keepidle, self.keepintvl, self.keepcnt
        child.parent = cast("TcpEndpoint", self)
        child.local = (pkt.dst, h.dport)
        child.remote = (pkt.src, h.sport)
        child.route = route
        child.ts_offset = proto.isn.ts_offset(pkt.dst, pkt.src)
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
        self._output(self.stack.now(), cork=True)
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

    def read_chunk(self, n: int = -1) -> bytes:
        """Like ``read`` but a large segment at the front of the receive buffer comes out on its
        own, without a copy, even when more is buffered behind it (a transport calls this in a
        loop and hands each piece on)."""
        rcv = self.rcv
        if n == 0:
            return b""
        if rcv.buffer.nbytes:
            data = rcv.read(n, whole=False)
            self._maybe_window_update()
            return data
        return self._read_empty()

    def peek(self, n: int = -1) -> bytes:
        """Like ``read`` but leaves the bytes in the receive buffer (MSG_PEEK)."""
        rcv = self.rcv
        if rcv.buffer and n != 0:
            return rcv.buffer.peek(n)
        if n == 0:
            return b""
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
        elif (self.state is S.TIME_WAIT and self._linger is not None
              and self._linger.deadline is not None):
            # a compact record answers for what is left of 2*MSL
            self.proto.time_wait.take_over(cast("TcpEndpoint", self), self._linger.deadline)

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
        if mask & EVENT_OUT and st in CAN_SEND and self.snd.writable() and not self.snd.fin_queued:
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
            "rcv_mss": rcv.mss,
            "congestion_control": snd.cc.name,
            "in_recovery": snd.in_recovery,
            "sack_holes": len(snd.sb.holes(snd.snd_una)),
            "sacked_bytes": snd.sb.sacked,
            "unacked": snd.flight,
            "unread": len(rcv.buffer),
        }

