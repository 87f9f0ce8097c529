"""UDP endpoints (RFC 768, RFC 1122 §4.1, RFC 8085 guidance).

Demux order for a unicast datagram: the connected 4-tuple, then an endpoint bound to the exact
local address, then one bound to the wildcard.  Broadcast and multicast datagrams go to every
endpoint bound to the port.  A unicast datagram nobody wants goes to the stack's
``UdpForwarder`` when it has one for that NIC (``udp_forwarder.py``), else is answered with ICMP
port unreachable (rate-limited by the ICMP layer).  Checksums are verified unless the link is
trusted; a zero checksum means "none" for IPv4 and is invalid for IPv6 (RFC 8200 §8.1).

ICMP errors are reported to *connected* endpoints only (as Linux does without IP_RECVERR): the
next ``recvfrom``/``sendto`` raises it once (port unreachable -> ConnectionRefusedError).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from aionetstack.errors import (
    AlreadyBound,
    BroadcastDisabled,
    DestinationRequired,
    InvalidArgument,
    MessageTooLong,
    NetstackError,
    StackClosed,
    WouldBlock,
)
from aionetstack.network.packet import UNICAST, IcmpError, PacketInfo
from aionetstack.stack.addr import AddressLike, family_of, is_multicast, to_bytes, to_str
from aionetstack.stack.ports import Reservation
from aionetstack.stack.route import Route
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.wire.checksum import PROTO_UDP
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.udp import pack_udp, parse_udp, udp_checksum_ok

if TYPE_CHECKING:
    from aionetstack.stack.stack import CoreStack
    from aionetstack.transport.udp_forwarder import UdpForwarder

Addr = tuple[bytes, int]
MAX_PAYLOAD = {4: 65535 - 20 - 8, 6: 65535 - 8}


class UdpEndpoint:
    """A UDP socket: bind, connect, sendto, recvfrom, readiness through ``waiter``."""

    def __init__(self, proto: UdpProtocol, family: int) -> None:
        if family not in (4, 6):
            raise InvalidArgument(f"family must be 4 or 6, not {family}")
        self._proto = proto
        self.family = family
        self.local: Addr | None = None
        self.bound_address: bytes | None = None  # None = wildcard
        self.remote: Addr | None = None
        self._reservation: Reservation | None = None
        self._route: Route | None = None
        self.waiter = WaiterQueue()
        self.queue: deque[tuple[bytes, Addr]] = deque()
        self.queued_bytes = 0
        self.rcvbuf = 212992
        self.broadcast = False
        self.reuse_address = False
        self.ttl: int | None = None
        self.error: NetstackError | None = None
        self.closed = False

    def __repr__(self) -> str:
        loc = f"{to_str(self.local[0])}:{self.local[1]}" if self.local else "unbound"
        rem = f" -> {to_str(self.remote[0])}:{self.remote[1]}" if self.remote else ""
        return f"<UdpEndpoint v{self.family} {loc}{rem}>"

    def _check_open(self) -> None:
        if self.closed:
            raise StackClosed("endpoint closed")

    def _addr(self, address: AddressLike) -> bytes:
        a = to_bytes(address)
        if family_of(a) != self.family:
            raise InvalidArgument(f"{to_str(a)} is not an IPv{self.family} address")
        return a

    # -- binding ---------------------------------------------------------------------------
    def bind(self, address: AddressLike | None = None, port: int = 0) -> Addr:
        self._check_open()
        if self._reservation is not None:
            raise AlreadyBound("endpoint is already bound")
        stack = self._proto.stack
        a = self._addr(address) if address is not None else None
        if a is not None and not any(a):
            a = None
        if a is not None and not stack.is_local(a) and not is_multicast(a) and a != (
                b"\xff\xff\xff\xff"):
            from aionetstack.errors import AddressNotAvailable

            raise AddressNotAvailable(f"{to_str(a)} is not an address of this stack")
        r = stack.ports.reserve(PROTO_UDP, self.family, a, port, self.reuse_address)
        self._reservation = r
        self.bound_address = a
        wildcard = bytes(4 if self.family == 4 else 16)
        self.local = (a or wildcard, r.port)
        self._proto._bound.setdefault((a, r.port, self.family), []).append(self)
        return self.local

    def connect(self, address: AddressLike, port: int) -> Addr:
        """Fix the peer: datagrams from others are ignored, ICMP errors are reported."""
        self._check_open()
        if not 0 < port <= 65535:
            raise InvalidArgument(f"port out of range: {port}")
        dst = self._addr(address)
        stack = self._proto.stack
        route = stack.find_route(dst, self.bound_address)
        if self._reservation is None:
            r = stack.ports.reserve(PROTO_UDP, self.family, None, 0, self.reuse_address,
                                    remote=(dst, port))
            self._reservation = r
            self.bound_address = None
            self._proto._bound.setdefault((None, r.port, self.family), []).append(self)
        self._unhook_connected()
        assert self._reservation is not None
        self.local = (route.local, self._reservation.port)
        self.remote = (dst, port)
        self._route = route
        self.error = None
        self._proto._connected[(route.local, self.local[1], dst, port)] = self
        return self.local

    def disconnect(self) -> None:
        self._unhook_connected()
        self.remote = None
        self._route = None
        if self.local is not None:
            self.local = (self.bound_address or bytes(4 if self.family == 4 else 16),
                          self.local[1])

    def _unhook_connected(self) -> None:
        if self.remote is not None and self.local is not None:
            key = (self.local[0], self.local[1], self.remote[0], self.remote[1])
            if self._proto._connected.get(key) is self:
                del self._proto._connected[key]

    # -- data ------------------------------------------------------------------------------
    def sendto(self, data: bytes | bytearray | memoryview,
               address: tuple[AddressLike, int] | None = None) -> int:
        self._check_open()
        if self.error is not None and self.remote is not None:
            err, self.error = self.error, None
            raise err
        n = len(data)
        if n > MAX_PAYLOAD[self.family]:
            raise MessageTooLong(f"{n} bytes exceed the largest UDP payload")
        stack = self._proto.stack
        if address is None or (self.remote is not None and self._route is not None and (
                address[1] == self.remote[1] and to_bytes(address[0]) == self.remote[0])):
            if self.remote is None:
                raise DestinationRequired("not connected and no destination given")
            dst, dport = self.remote
            route = self._route
            if route is None or not route.nic.up or dst in stack.pmtu:  # PMTU learnt: re-resolve
                route = self._route = stack.find_route(dst, self.local[0] if self.local else None)
        else:
            dst = self._addr(address[0])
            dport = address[1]
            if not 0 < dport <= 65535:
                raise InvalidArgument(f"port out of range: {dport}")
            if self._reservation is None:
                self.bind(None, 0)
            route = stack.find_route(dst, self.bound_address)
        if (dst == b"\xff\xff\xff\xff" or route.nic.is_directed_broadcast(dst)) and not (
                self.broadcast):
            raise BroadcastDisabled("sending to a broadcast address needs broadcast=True")
        assert self.local is not None
        self._proto.send_datagram(route, self.local[1], dport, data, ttl=self.ttl)
        return n

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self.sendto(data)

    def recvfrom(self) -> tuple[bytes, Addr]:
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        if not self.queue:
            if self.closed:
                raise StackClosed("endpoint closed")
            raise WouldBlock()
        item = self.queue.popleft()
        self.queued_bytes -= len(item[0])
        return item

    def readiness(self, mask: int) -> int:
        r = 0 if self.closed else EVENT_OUT
        if self.queue:
            r |= EVENT_IN
        if self.error is not None:
            r |= EVENT_ERR
        if self.closed:
            r |= EVENT_HUP
        return r & mask

    def _enqueue(self, payload: memoryview, src: Addr) -> None:
        st = self._proto.stats
        if self.queued_bytes + len(payload) > self.rcvbuf:
            st.drop("receive-buffer-full")
            return
        data = bytes(payload)
        self.queue.append((data, src))
        self.queued_bytes += len(data)
        st["delivered"] += 1
        self.waiter.notify(EVENT_IN)

    def _set_error(self, exc: NetstackError) -> None:
        self.error = exc
        self.waiter.notify(EVENT_ERR)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._unhook_connected()
        if self._reservation is not None:
            r = self._reservation
            lst = self._proto._bound.get((self.bound_address, r.port, self.family))
            if lst is not None:
                try:
                    lst.remove(self)
                except ValueError:
                    pass
                if not lst:
                    del self._proto._bound[(self.bound_address, r.port, self.family)]
            self._proto.stack.ports.release(r)
            self._reservation = None
        self._proto._endpoints.discard(self)
        self.waiter.notify(EVENT_HUP | EVENT_IN)


class UdpProtocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.udp
        self._connected: dict[tuple[bytes, int, bytes, int], UdpEndpoint] = {}
        self._bound: dict[tuple[bytes | None, int, int], list[UdpEndpoint]] = {}
        self._endpoints: set[UdpEndpoint] = set()
        self.forwarder: UdpForwarder | None = None  # unmatched unicast (udp_forwarder.py)
        stack.unreachable_listeners.append(self._neighbour_unreachable)

    def send_datagram(self, route: Route, sport: int, dport: int,
                      data: bytes | bytearray | memoryview, ttl: int | None = None) -> None:
        """Send one datagram from ``route.local``:``sport`` to ``route.remote``:``dport``."""
        n = len(data)
        buf = route.new_packet(8 + n)
        # a datagram that will be fragmented needs its checksum now: no link can fill it later
        pack_udp(buf, route.headroom, route.local, route.remote, sport, dport, data,
                 checksum=not route.nic.tx_offload
                 or 8 + n + (20 if route.family == 4 else 40) > route.mtu)
        self.stack.send_ip(route, buf, 8 + n, PROTO_UDP, ttl=ttl)
        self.stats["sent"] += 1

    def new_endpoint(self, family: int = 4) -> UdpEndpoint:
        ep = UdpEndpoint(self, family)
        self._endpoints.add(ep)
        return ep

    def __len__(self) -> int:
        return len(self._endpoints)

    def deliver(self, pkt: PacketInfo, segment: memoryview) -> None:
        st = self.stats
        st["received"] += 1
        try:
            h = parse_udp(segment)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        if not pkt.trusted and not udp_checksum_ok(pkt.src, pkt.dst, segment):
            st.malformed("bad-checksum")
            return
        src = (pkt.src, h.sport)
        fam = pkt.family
        if pkt.cast == UNICAST:
            ep = self._connected.get((pkt.dst, h.dport, pkt.src, h.sport))
            if ep is None:
                for cand in (self._bound.get((pkt.dst, h.dport, fam)),
                             self._bound.get((None, h.dport, fam))):
                    if cand:
                        for e in reversed(cand):  # the newest unconnected binding wins
                            if e.remote is None:
                                ep = e
                                break
                    if ep is not None:
                        break
            if ep is None:
                fwd = self.forwarder
                if fwd is not None and fwd.deliver(pkt, h):
                    return
                st.drop("no-port")
                if h.dport == 0 or h.sport == 0:
                    return
                if fam == 4:
                    self.stack.icmp.send_error(pkt, 3, 3)
                else:
                    self.stack.icmp.send_error(pkt, 1, 4)
                return
            ep._enqueue(h.payload, src)
            return
        matched = False
        for key in ((pkt.dst, h.dport, fam), (None, h.dport, fam)):
            for e in self._bound.get(key, ()):
                if e.remote is None or e.remote == src:
                    e._enqueue(h.payload, src)
                    matched = True
        if not matched:
            st.drop("no-port")

    def icmp_error(self, err: IcmpError) -> None:
        sport, dport = err.ports
        ep = self._connected.get((err.src, sport, err.dst, dport))
        if ep is None or err.kind == "frag-needed":
            self.stats["icmp-error-ignored"] += 1
            return
        self.stats["icmp-error"] += 1
        ep._set_error(err.exception())

    def _neighbour_unreachable(self, ip: bytes) -> None:
        from aionetstack.errors import HostUnreachable

        for ep in list(self._connected.values()):
            if ep.remote is not None and ep._route is not None and ep._route.next_hop == ip:
                ep._set_error(HostUnreachable(f"{to_str(ip)} did not answer address resolution"))

    def close_all(self) -> None:
        for ep in list(self._endpoints):
            ep.close()
