"""IP forwarding for a stack acting as a router (RFC 1812 §5, RFC 8200 §3).

A packet for someone else is forwarded when ``Stack.forwarding`` is on: TTL/hop limit is
decremented (ICMP time exceeded when it would reach zero), the route is looked up (ICMP
destination unreachable when there is none), a packet too large for the next link gets ICMP
fragmentation-needed / packet-too-big (IPv4 without DF is fragmented instead).  Link-local and
multicast destinations are never forwarded.  Transport checksums are filled in when the packet
came from a link that lets the stack omit them and leaves on one that does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.errors import NetstackError
from aionetstack.network.packet import UNICAST, PacketInfo
from aionetstack.stack.addr import is_link_local6
from aionetstack.stack.routing import find_route
from aionetstack.wire.checksum import transport_checksum
from aionetstack.wire.ipv4 import IPv4Header
from aionetstack.wire.ipv6 import IPv6Header

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack

_CSUM_OFFSET = {6: 16, 17: 6, 58: 2}


class Forwarder:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack

    def _fix_checksum(self, buf: bytearray, l4: int, end: int, proto: int, src: bytes,
                      dst: bytes) -> None:
        off = _CSUM_OFFSET.get(proto)
        if off is None or end - l4 < off + 2:
            return
        buf[l4 + off:l4 + off + 2] = b"\x00\x00"
        c = transport_checksum(src, dst, proto, memoryview(buf)[l4:end])
        if proto == 17 and c == 0:
            c = 0xFFFF
        buf[l4 + off:l4 + off + 2] = c.to_bytes(2, "big")

    def forward4(self, nic: NIC, h: IPv4Header, view: memoryview) -> None:
        stack = self.stack
        st = stack.stats_.ipv4
        pkt = PacketInfo(4, h.src, h.dst, nic, h.ttl, view[: h.total_length], UNICAST,
                         h.frag_offset == 0)
        if h.dst[0] >= 224 or h.dst == b"\xff\xff\xff\xff":
            st.drop("not-forwardable")
            return
        if h.ttl <= 1:
            st.drop("ttl-exceeded")
            stack.icmp.send_error(pkt, 11, 0)
            return
        try:
            route = find_route(stack, h.dst)
        except NetstackError:
            st.drop("no-route")
            stack.icmp.send_error(pkt, 3, 0)
            return
        if route.nic.is_directed_broadcast(h.dst):
            st.drop("not-forwardable")  # RFC 2644: no directed broadcasts forwarded by default
            return
        n = h.total_length
        if n > route.mtu:
            if h.df:
                st.drop("too-big")
                stack.icmp.send_error(pkt, 3, 4, route.mtu & 0xFFFF)
                return
            if h.header_len != 20:
                st.drop("too-big-with-options")
                return
            route.local = h.src  # fragments keep the original source
            stack.ipv4.fragment_out(route, h.payload, h.protocol, h.ttl - 1, h.tos,
                                    ident=h.ident, frag_offset=h.frag_offset, mf=h.mf)
            return
        off = route.l3_offset
        buf = bytearray(off + n)
        buf[off:] = view[:n]
        buf[off + 8] = h.ttl - 1
        # RFC 1624 incremental update: TTL is the high byte of a word, so the sum drops by 0x100
        c = ((buf[off + 10] << 8) | buf[off + 11]) + 0x100
        c = (c & 0xFFFF) + (c >> 16)
        buf[off + 10] = c >> 8
        buf[off + 11] = c & 0xFF
        if nic.rx_trusted and not route.nic.tx_offload and h.frag_offset == 0 and not h.mf:
            self._fix_checksum(buf, off + h.header_len, off + n, h.protocol, h.src, h.dst)
        st["forwarded"] += 1
        route.nic.output(buf, off, route.next_hop)

    def forward6(self, nic: NIC, h: IPv6Header, view: memoryview) -> None:
        stack = self.stack
        st = stack.stats_.ipv6
        n = 40 + h.payload_length
        pkt = PacketInfo(6, h.src, h.dst, nic, h.hop_limit, view[:n], UNICAST)
        if h.dst[0] == 0xFF or is_link_local6(h.dst) or is_link_local6(h.src):
            st.drop("not-forwardable")
            return
        if h.hop_limit <= 1:
            st.drop("hop-limit-exceeded")
            stack.icmp.send_error(pkt, 3, 0)
            return
        try:
            route = find_route(stack, h.dst)
        except NetstackError:
            st.drop("no-route")
            stack.icmp.send_error(pkt, 1, 0)
            return
        if n > route.mtu:
            st.drop("too-big")
            stack.icmp.send_error(pkt, 2, 0, route.mtu)
            return
        off = route.l3_offset
        buf = bytearray(off + n)
        buf[off:] = view[:n]
        buf[off + 7] = h.hop_limit - 1
        if nic.rx_trusted and not route.nic.tx_offload and h.next_header in _CSUM_OFFSET:
            self._fix_checksum(buf, off + 40, off + n, h.next_header, h.src, h.dst)
        st["forwarded"] += 1
        route.nic.output(buf, off, route.next_hop)
