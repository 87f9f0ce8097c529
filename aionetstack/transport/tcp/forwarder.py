"""TCP forwarder: accept connections to *any* address and port (transparent mode).

Theory of operation (the role of gVisor's ``tcp.Forwarder``; written from its design, not code):

* The forwarder sits at step 4 of the TCP demux (``protocol.py``): a SYN that matches no
  connection and no listener, arriving on the forwarder's NIC (or any non-loopback NIC), becomes
  a ``TcpForwarderRequest`` instead of a reset.  The NIC is normally in transparent mode
  (``CoreStack.set_transparent``: promiscuous, so packets for any destination reach TCP, and
  spoofing, so replies can leave from the original destination address).
* The handler is called with the request at once, from inside packet processing.  It decides
  now or later: ``accept()`` creates the connection in SYN-RECEIVED and sends the SYN-ACK (its
  local address is the original destination, its remote the client), ``reject()`` answers with a
  RST (RFC 9293 §3.10.7.1, as a closed port would) or an ICMP destination unreachable, or drops
  the SYN silently.  A retransmitted SYN for an undecided request is dropped
  (``dropped.forwarder-syn-pending``); a request left undecided for ``pending_timeout`` seconds
  is forgotten (the client's next SYN makes a new one).
* ``max_pending`` bounds the handshakes in progress: undecided requests plus accepted
  connections still in SYN-RECEIVED.  A SYN beyond it is dropped and counted
  (``dropped.forwarder-pending-limit``) -- the client retransmits it later, as with a full SYN
  queue.  ``Limits.max_connections`` still applies (refused with a RST).
* ``destination_filter(addr, port)`` (optional) is asked first: a destination it refuses gets a
  RST without bothering the handler (``forwarder-filtered``).
* Accepted connections are ordinary ``TcpEndpoint`` objects: wait for ``EVENT_OUT`` (the
  handshake completed) or ``EVENT_HUP`` (the client reset or never answered); they take their
  buffer sizes from the forwarder (``set_buffer_sizes``).

Counters live in ``stack.stats_.tcp``: ``forwarder-requests``, ``forwarder-accepted``,
``forwarder-rejected``, ``forwarder-established``, ``forwarder-filtered``,
``forwarder-expired`` and the drops above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aionetstack.errors import (
    AddressNotAvailable,
    InvalidArgument,
    InvalidEndpointState,
    NoRoute,
    StackClosed,
)
from aionetstack.network.packet import UNICAST, PacketInfo
from aionetstack.stack.addr import to_str
from aionetstack.stack.waiter import EVENT_IN
from aionetstack.transport.tcp.endpoint import TcpEndpoint
from aionetstack.transport.tcp.listen import ListenQueue
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.tcp import TcpHeader, parse_tcp

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack
    from aionetstack.stack.timers import Timer

Addr = tuple[bytes, int]
DestinationFilter = Callable[[bytes, int], bool]
REJECT_REPLIES = (None, "reset", "port-unreachable", "admin-prohibited", "host-unreachable")


class TcpForwarderRequest:
    """A SYN to ``local`` (the original destination) from ``remote`` awaiting a decision."""

    __slots__ = ("_fwd", "_h", "_pkt", "_timer", "decided", "family", "local", "nic", "remote")

    def __init__(self, fwd: TcpForwarder, pkt: PacketInfo, h: TcpHeader) -> None:
        self._fwd = fwd
        self._pkt = pkt
        self._h = h
        self.family = pkt.family
        self.nic: NIC = pkt.nic
        self.local: Addr = (pkt.dst, h.dport)
        self.remote: Addr = (pkt.src, h.sport)
        self.decided = False
        self._timer: Timer = fwd.stack.timers.timer(self._expire)
        self._timer.schedule(fwd.stack.now() + fwd.pending_timeout)

    def __repr__(self) -> str:
        return (f"<TcpForwarderRequest {to_str(self.remote[0])}:{self.remote[1]} -> "
                f"{to_str(self.local[0])}:{self.local[1]}{' decided' if self.decided else ''}>")

    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        return (self.local[0], self.local[1], self.remote[0], self.remote[1])

    def _decide(self) -> None:
        if self.decided:
            raise InvalidEndpointState("this forwarder request was already decided")
        self.decided = True
        self._timer.cancel()
        self._fwd._forget(self)

    def accept(self) -> TcpEndpoint:
        """Answer the SYN with a SYN-ACK; returns the new endpoint (in SYN-RECEIVED).

        Raises ``InvalidEndpointState`` when already decided, ``StackClosed`` when the forwarder
        is closed, ``AddressNotAvailable`` when the 4-tuple is taken meanwhile and ``NoRoute``
        when the stack has no route back to the client.
        """
        self._decide()
        fwd = self._fwd
        if fwd.closed:
            raise StackClosed("the forwarder is closed")
        proto = fwd.stack.tcp
        if self.key in proto.connections or self.key in proto.time_wait:
            raise AddressNotAvailable("that 4-tuple is in use")
        tpl = fwd._template(self.family)
        child = tpl.spawn_child(self._pkt, self._h)
        if child is None:
            raise NoRoute(f"no route back to {to_str(self.remote[0])}")
        assert tpl.listen_queue is not None
        tpl.listen_queue.syn_queue.append(child)
        proto.stats["forwarder-accepted"] += 1
        return child

    def reject(self, reply: str | None = "reset") -> None:
        """Refuse the connection: ``"reset"`` (RST), an ICMP destination unreachable
        (``"port-unreachable"``, ``"admin-prohibited"``, ``"host-unreachable"``) or ``None``
        (drop the SYN silently)."""
        if reply not in REJECT_REPLIES:
            raise InvalidArgument(f"reply must be one of {REJECT_REPLIES}, not {reply!r}")
        self._decide()
        fwd = self._fwd
        fwd.stack.tcp.stats["forwarder-rejected"] += 1
        fwd._refuse(self._pkt, self._h, reply)

    def _expire(self, now: float) -> None:
        if not self.decided:
            self.decided = True
            self._fwd.stack.tcp.stats["forwarder-expired"] += 1
            self._fwd._forget(self)


class TcpForwarder:
    """Hands connections to any address/port arriving on ``nic`` to ``handler``.

    One TCP forwarder per stack (``stack.tcp.forwarder``); ``close()`` removes it.
    """

    def __init__(self, stack: CoreStack, handler: Callable[[TcpForwarderRequest], None], *,
                 nic: NIC | None = None, max_pending: int = 128, pending_timeout: float = 30.0,
                 destination_filter: DestinationFilter | None = None) -> None:
        if max_pending < 1:
            raise InvalidArgument("max_pending must be at least 1")
        if pending_timeout <= 0:
            raise InvalidArgument("pending_timeout must be positive")
        proto = stack.tcp
        if proto.forwarder is not None:
            raise InvalidArgument("the stack already has a TCP forwarder")
        self.stack = stack
        self.handler = handler
        self.nic = nic
        self.max_pending = max_pending
        self.pending_timeout = pending_timeout
        self.destination_filter = destination_filter
        self.closed = False
        self._requests: dict[tuple[bytes, int, bytes, int], TcpForwarderRequest] = {}
        self._templates: dict[int, TcpEndpoint] = {}
        self._buffers: tuple[int | None, int | None] = (None, None)
        proto.forwarder = self

    # -- configuration ---------------------------------------------------------------------
    def set_buffer_sizes(self, rcvbuf: int | None = None, sndbuf: int | None = None) -> None:
        """Receive/send buffer sizes of the connections accepted from now on."""
        self._buffers = (rcvbuf, sndbuf)
        for tpl in self._templates.values():
            tpl.set_buffer_sizes(rcvbuf, sndbuf)

    @property
    def pending(self) -> int:
        """Handshakes in progress: undecided requests + accepted ones still in SYN-RECEIVED."""
        n = len(self._requests)
        for tpl in self._templates.values():
            if tpl.listen_queue is not None:
                n += len(tpl.listen_queue.syn_queue)
        return n

    def wants(self, pkt: PacketInfo) -> bool:
        if self.closed or pkt.cast != UNICAST:
            return False
        return pkt.nic is self.nic if self.nic is not None else not pkt.nic.loopback

    # -- input (from the TCP demux) --------------------------------------------------------
    def syn_arrived(self, pkt: PacketInfo, h: TcpHeader, segment: memoryview) -> None:
        """A SYN (no ACK, no RST) for which no connection or listener exists."""
        proto = self.stack.tcp
        st = proto.stats
        key = (pkt.dst, h.dport, pkt.src, h.sport)
        if key in self._requests:
            st.drop("forwarder-syn-pending")
            return
        flt = self.destination_filter
        if flt is not None and not flt(pkt.dst, h.dport):
            st["forwarder-filtered"] += 1
            proto.send_reset(pkt, h)
            return
        if self.pending >= self.max_pending:
            st.drop("forwarder-pending-limit")
            return
        if len(proto.connections) + len(proto.time_wait) >= self.stack.limits.max_connections:
            st.drop("connection-limit")
            proto.send_reset(pkt, h)
            return
        # the request may outlive this packet's buffer: keep copies
        h = parse_tcp(memoryview(bytes(segment)))
        pkt = PacketInfo(pkt.family, pkt.src, pkt.dst, pkt.nic, pkt.hop_limit,
                         memoryview(bytes(pkt.packet)), UNICAST, trusted=pkt.trusted)
        req = TcpForwarderRequest(self, pkt, h)
        self._requests[key] = req
        st["forwarder-requests"] += 1
        try:
            self.handler(req)
        except BaseException:
            if not req.decided:
                req.reject()
            raise

    # -- internals -------------------------------------------------------------------------
    def _forget(self, req: TcpForwarderRequest) -> None:
        if self._requests.get(req.key) is req:
            del self._requests[req.key]

    def _refuse(self, pkt: PacketInfo, h: TcpHeader, reply: str | None) -> None:
        if reply == "reset":
            self.stack.tcp.send_reset(pkt, h)
        elif reply is not None:
            self.stack.icmp.send_unreachable(pkt, reply)

    def _template(self, family: int) -> TcpEndpoint:
        """A listener that is in no demux table: the parent of the accepted connections, so
        the passive-open code (``spawn_child``, the SYN queue) serves the forwarder too."""
        tpl = self._templates.get(family)
        if tpl is None:
            tpl = TcpEndpoint(self.stack.tcp, family)
            if self._buffers != (None, None):
                tpl.set_buffer_sizes(*self._buffers)
            tpl.listen_queue = ListenQueue(self.max_pending)
            tpl._state = TcpState.LISTEN
            tpl.waiter.register(self._established, EVENT_IN)
            self._templates[family] = tpl
        return tpl

    def _established(self, _events: int) -> None:
        """Handshakes that completed: the connections now belong to whoever accepted them."""
        for tpl in self._templates.values():
            q = tpl.listen_queue
            assert q is not None
            while q.accept_queue:
                child = q.accept_queue.popleft()
                child.parent = None
                self.stack.tcp.stats["forwarder-established"] += 1

    def close(self) -> None:
        """Stop forwarding: undecided requests are reset; accepted connections carry on."""
        if self.closed:
            return
        self.closed = True
        proto = self.stack.tcp
        if proto.forwarder is self:
            proto.forwarder = None
        for req in list(self._requests.values()):
            req.decided = True
            req._timer.cancel()
            self._refuse(req._pkt, req._h, "reset")
        self._requests.clear()
