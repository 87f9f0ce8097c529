"""UDP forwarder: flows to *any* address and port (transparent mode), full-cone mapping.

Theory of operation (the role of gVisor's ``udp.Forwarder``, with NAT behaviour from RFC 4787):

* The forwarder sits where UDP would answer "port unreachable" (``udp.py``): a unicast datagram
  that no endpoint wants, arriving on the forwarder's NIC (or any non-loopback NIC), goes to it.
  The NIC is normally in transparent mode (``CoreStack.set_transparent``).
* A *flow* is keyed by the client's source address and port alone: endpoint-independent mapping
  (RFC 4787 §4.1 REQ-1).  The first datagram of a client source makes a
  ``UdpForwarderRequest``; the handler ``accept()``s it (a ``UdpFlow``) or ``reject()``s it with
  an ICMP port / admin unreachable (RFC 792, RFC 4443 §3.1) or silently.  Datagrams arriving
  while the request is undecided are queued (a few) and delivered on accept.
* Every later datagram from that source, to *whatever* destination, goes to the same flow, and
  ``recvfrom`` tells which destination it was sent to; ``sendto(data, source)`` sends to the
  client from any address, so replies from every destination reach the same client port
  (endpoint-independent filtering: a full cone).
* A flow closes after ``idle_timeout`` seconds without a datagram either way (outbound and
  inbound both refresh it, RFC 4787 §4.3 REQ-6; REQ-5 asks for at least two minutes, the
  default here); its waiters get ``EVENT_HUP``.  The next datagram makes a new request.
* Bounds: ``max_pending`` undecided requests and ``max_flows`` flows; beyond them datagrams that
  would open a new flow are dropped and counted.  ``destination_filter(addr, port)`` is asked
  for *every* datagram: a refused destination gets ICMP admin-prohibited and never reaches a
  flow.

Counters (``stack.stats_.udp``): ``forwarder-requests``, ``forwarder-accepted``,
``forwarder-rejected``, ``forwarder-filtered``, ``forwarder-expired``, ``forwarder-idle-closed``
and ``dropped.forwarder-*``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aionetstack.errors import (
    ClosedForReceive,
    InvalidArgument,
    InvalidEndpointState,
    MessageTooLong,
    StackClosed,
    WouldBlock,
)
from aionetstack.network.packet import UNICAST, PacketInfo
from aionetstack.stack.addr import AddressLike, to_bytes, to_str
from aionetstack.stack.waiter import EVENT_HUP, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.transport.udp import MAX_PAYLOAD
from aionetstack.wire.udp import UdpHeader

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack
    from aionetstack.stack.timers import Timer

Addr = tuple[bytes, int]
DestinationFilter = Callable[[bytes, int], bool]
REJECT_REPLIES = (None, "port-unreachable", "admin-prohibited", "host-unreachable")
_PENDING_QUEUE = 32  # datagrams kept per undecided request


class UdpFlow:
    """One client source (``remote``) talking to any destinations through the forwarder.

    ``local`` is the destination of the flow's first datagram.
    """

    def __init__(self, fwd: UdpForwarder, family: int, local: Addr, remote: Addr) -> None:
        self._fwd = fwd
        self.family = family
        self.local = local
        self.remote = remote
        self.waiter = WaiterQueue()
        self.queue: deque[tuple[bytes, Addr]] = deque()
        self.queued_bytes = 0
        self.rcvbuf = 212992
        self.closed = False
        self.expired = False
        stack = fwd.stack
        self.last_active = stack.now()
        self._timer: Timer = stack.timers.timer(self._check_idle)
        self._timer.schedule(self.last_active + fwd.idle_timeout)

    def __repr__(self) -> str:
        return (f"<UdpFlow {to_str(self.remote[0])}:{self.remote[1]} -> "
                f"{to_str(self.local[0])}:{self.local[1]}{' closed' if self.closed else ''}>")

    # -- data ------------------------------------------------------------------------------
    def recvfrom(self) -> tuple[bytes, Addr]:
        """(payload, destination it was addressed to).  ``WouldBlock`` when empty,
        ``ClosedForReceive`` once the flow has ended (idle timeout or ``close``)."""
        if not self.queue:
            if self.closed:
                raise ClosedForReceive("the flow has ended" + (
                    " (idle timeout)" if self.expired else ""))
            raise WouldBlock()
        item = self.queue.popleft()
        self.queued_bytes -= len(item[0])
        return item

    def sendto(self, data: bytes | bytearray | memoryview,
               source: tuple[AddressLike, int] | None = None) -> int:
        """Send ``data`` to the client, from ``source`` (default ``local``)."""
        if self.closed:
            raise StackClosed("the flow has ended")
        n = len(data)
        if n > MAX_PAYLOAD[self.family]:
            raise MessageTooLong(f"{n} bytes exceed the largest UDP payload")
        if source is None:
            src, sport = self.local
        else:
            src, sport = to_bytes(source[0]), source[1]
            if len(src) != len(self.remote[0]):
                raise InvalidArgument(f"{to_str(src)} is not an IPv{self.family} address")
            if not 0 < sport <= 65535:
                raise InvalidArgument(f"port out of range: {sport}")
        stack = self._fwd.stack
        route = stack.find_route(self.remote[0], src)  # src: not ours -- the NIC spoofs
        stack.udp.send_datagram(route, sport, self.remote[1], data)
        self.last_active = stack.now()
        return n

    def readiness(self, mask: int) -> int:
        r = 0 if self.closed else EVENT_OUT
        if self.queue:
            r |= EVENT_IN
        if self.closed:
            r |= EVENT_HUP | EVENT_IN
        return r & mask

    def _arrived(self, payload: bytes | memoryview, dst: Addr) -> None:
        self.last_active = self._fwd.stack.now()
        st = self._fwd.stack.stats_.udp
        if self.queued_bytes + len(payload) > self.rcvbuf:
            st.drop("receive-buffer-full")
            return
        data = bytes(payload)
        self.queue.append((data, dst))
        self.queued_bytes += len(data)
        st["delivered"] += 1
        self.waiter.notify(EVENT_IN)

    def _check_idle(self, now: float) -> None:
        due = self.last_active + self._fwd.idle_timeout
        if now < due:
            self._timer.schedule(due)
            return
        self.expired = True
        self._fwd.stack.stats_.udp["forwarder-idle-closed"] += 1
        self.close()

    def close(self) -> None:
        """End the flow (idempotent); the client's next datagram starts a new one."""
        if self.closed:
            return
        self.closed = True
        self._timer.cancel()
        self._fwd._flow_closed(self)
        self.waiter.notify(EVENT_HUP | EVENT_IN)


class UdpForwarderRequest:
    """The first datagram of a client source (``remote``) to ``local``, awaiting a decision."""

    __slots__ = ("_fwd", "_pkt", "_queue", "_timer", "decided", "family", "local", "nic",
                 "remote")

    def __init__(self, fwd: UdpForwarder, pkt: PacketInfo, local: Addr, remote: Addr,
                 payload: bytes) -> None:
        self._fwd = fwd
        self._pkt = pkt
        self.family = pkt.family
        self.nic: NIC = pkt.nic
        self.local = local
        self.remote = remote
        self.decided = False
        self._queue: list[tuple[bytes, Addr]] = [(payload, local)]
        self._timer: Timer = fwd.stack.timers.timer(self._expire)
        self._timer.schedule(fwd.stack.now() + fwd.pending_timeout)

    def __repr__(self) -> str:
        return (f"<UdpForwarderRequest {to_str(self.remote[0])}:{self.remote[1]} -> "
                f"{to_str(self.local[0])}:{self.local[1]}>")

    def _decide(self) -> None:
        if self.decided:
            raise InvalidEndpointState("this forwarder request was already decided")
        self.decided = True
        self._timer.cancel()
        self._fwd._requests.pop(self.remote, None)

    def accept(self) -> UdpFlow:
        """Open the flow; the datagrams that arrived so far are waiting in it."""
        self._decide()
        fwd = self._fwd
        if fwd.closed:
            raise StackClosed("the forwarder is closed")
        flow = UdpFlow(fwd, self.family, self.local, self.remote)
        fwd.flows[self.remote] = flow
        fwd.stack.stats_.udp["forwarder-accepted"] += 1
        for data, dst in self._queue:
            flow._arrived(data, dst)
        self._queue.clear()
        return flow

    def reject(self, reply: str | None = "port-unreachable") -> None:
        """Refuse the flow with an ICMP destination unreachable (``"port-unreachable"``,
        ``"admin-prohibited"``, ``"host-unreachable"``) about its first datagram, or ``None``
        to drop silently."""
        if reply not in REJECT_REPLIES:
            raise InvalidArgument(f"reply must be one of {REJECT_REPLIES}, not {reply!r}")
        self._decide()
        self._queue.clear()
        self._fwd.stack.stats_.udp["forwarder-rejected"] += 1
        if reply is not None:
            self._fwd.stack.icmp.send_unreachable(self._pkt, reply)

    def _queue_datagram(self, payload: memoryview, dst: Addr) -> None:
        if len(self._queue) >= _PENDING_QUEUE:
            self._fwd.stack.stats_.udp.drop("forwarder-pending-queue-full")
            return
        self._queue.append((bytes(payload), dst))

    def _expire(self, now: float) -> None:
        if not self.decided:
            self.decided = True
            self._queue.clear()
            self._fwd._requests.pop(self.remote, None)
            self._fwd.stack.stats_.udp["forwarder-expired"] += 1


class UdpForwarder:
    """Hands UDP flows to any address/port arriving on ``nic`` to ``handler``.

    One UDP forwarder per stack (``stack.udp.forwarder``); ``close()`` removes it and ends
    every flow.
    """

    def __init__(self, stack: CoreStack, handler: Callable[[UdpForwarderRequest], None], *,
                 nic: NIC | None = None, max_pending: int = 128, max_flows: int = 4096,
                 idle_timeout: float = 120.0, pending_timeout: float = 30.0,
                 destination_filter: DestinationFilter | None = None) -> None:
        if max_pending < 1 or max_flows < 1:
            raise InvalidArgument("max_pending and max_flows must be at least 1")
        if idle_timeout <= 0 or pending_timeout <= 0:
            raise InvalidArgument("timeouts must be positive")
        if stack.udp.forwarder is not None:
            raise InvalidArgument("the stack already has a UDP forwarder")
        self.stack = stack
        self.handler = handler
        self.nic = nic
        self.max_pending = max_pending
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.pending_timeout = pending_timeout
        self.destination_filter = destination_filter
        self.closed = False
        self.flows: dict[Addr, UdpFlow] = {}
        self._requests: dict[Addr, UdpForwarderRequest] = {}
        stack.udp.forwarder = self

    @property
    def pending(self) -> int:
        return len(self._requests)

    def deliver(self, pkt: PacketInfo, h: UdpHeader) -> bool:
        """A unicast datagram no endpoint wanted; True when the forwarder took it."""
        if self.closed or pkt.cast != UNICAST or (
                pkt.nic is not self.nic if self.nic is not None else pkt.nic.loopback):
            return False
        st = self.stack.stats_.udp
        if h.sport == 0 or h.dport == 0:
            st.drop("port-zero")
            return True
        dst = (pkt.dst, h.dport)
        flt = self.destination_filter
        if flt is not None and not flt(pkt.dst, h.dport):
            st["forwarder-filtered"] += 1
            self.stack.icmp.send_unreachable(pkt, "admin-prohibited")
            return True
        src = (pkt.src, h.sport)
        flow = self.flows.get(src)
        if flow is not None:
            flow._arrived(h.payload, dst)
            return True
        req = self._requests.get(src)
        if req is not None:
            req._queue_datagram(h.payload, dst)
            return True
        if len(self._requests) >= self.max_pending:
            st.drop("forwarder-pending-limit")
            return True
        if len(self.flows) >= self.max_flows:
            st.drop("forwarder-flow-limit")
            return True
        copy = PacketInfo(pkt.family, pkt.src, pkt.dst, pkt.nic, pkt.hop_limit,
                          memoryview(bytes(pkt.packet)), UNICAST, trusted=pkt.trusted)
        req = UdpForwarderRequest(self, copy, dst, src, bytes(h.payload))
        self._requests[src] = req
        st["forwarder-requests"] += 1
        try:
            self.handler(req)
        except BaseException:
            if not req.decided:
                req.reject(None)
            raise
        return True

    def _flow_closed(self, flow: UdpFlow) -> None:
        if self.flows.get(flow.remote) is flow:
            del self.flows[flow.remote]

    def close(self) -> None:
        """Stop forwarding: undecided requests are dropped, every flow ends."""
        if self.closed:
            return
        self.closed = True
        if self.stack.udp.forwarder is self:
            self.stack.udp.forwarder = None
        for req in list(self._requests.values()):
            req.decided = True
            req._timer.cancel()
        self._requests.clear()
        for flow in list(self.flows.values()):
            flow.close()
