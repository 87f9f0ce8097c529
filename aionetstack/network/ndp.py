"""Neighbor Discovery for IPv6 (RFC 4861) on L2 NICs.

Handles neighbor solicitations (answered with a solicited advertisement when the target is ours)
and advertisements (fed to the neighbour cache per §7.2.5), and sends solicitations for address
resolution (multicast to the solicited-node group) and unreachability probes (unicast).  Every
received ND message must carry hop limit 255 and code 0 (§7.1.1/§7.1.2), or it is discarded.
Router solicitations/advertisements are validated and counted; a host stack with static routes
does not act on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.network.packet import MULTICAST, PacketInfo
from aionetstack.stack.addr import ALL_NODES6, is_unspecified
from aionetstack.wire import ndp as N
from aionetstack.wire.checksum import PROTO_ICMPV6
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ethernet import ETH_HLEN, ipv6_multicast_mac
from aionetstack.wire.icmpv6 import (
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_ROUTER_ADVERT,
    ND_ROUTER_SOLICIT,
    IcmpV6Message,
)
from aionetstack.wire.ipv6 import pack_ipv6, solicited_node_multicast

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack


class NdpProtocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.ndp

    @staticmethod
    def solicited_node(addr: bytes) -> bytes:
        return solicited_node_multicast(addr)

    def _send(self, nic: NIC, src: bytes, dst: bytes, dst_mac: bytes, body: bytearray) -> None:
        """Send an ND message (hop limit 255) straight to a known link address."""
        n = len(body)
        off = ETH_HLEN
        buf = bytearray(off + 40 + n)
        buf[off + 40:] = body
        pack_ipv6(buf, off, src=src, dst=dst, next_header=PROTO_ICMPV6, payload_len=n,
                  hop_limit=255)
        self.stack.stats_.ipv6["sent"] += 1
        nic.transmit(dst_mac, buf, off)

    def solicit(self, nic: NIC, target: bytes, unicast_mac: bytes | None) -> None:
        src = nic.primary(6, target)
        if src is None:
            self.stats.drop("no-source-address")
            return
        dst = target if unicast_mac is not None else solicited_node_multicast(target)
        body = bytearray(64)
        n = N.pack_neighbor_solicit(body, 0, src, dst, target, nic.mac)
        self.stats["ns-sent"] += 1
        self._send(nic, src, dst, unicast_mac or ipv6_multicast_mac(dst), body[:n])

    def deliver(self, pkt: PacketInfo, msg: IcmpV6Message) -> None:
        st = self.stats
        st["received"] += 1
        if pkt.hop_limit != 255 or msg.code != 0:  # RFC 4861 §7.1.1, §7.1.2, §6.1
            st.drop("bad-hop-limit-or-code")
            return
        nic = pkt.nic
        try:
            if msg.type == ND_NEIGHBOR_SOLICIT:
                self._ns(pkt, nic, N.parse_neighbor_solicit(msg))
            elif msg.type == ND_NEIGHBOR_ADVERT:
                self._na(pkt, nic, N.parse_neighbor_advert(msg))
            elif msg.type == ND_ROUTER_SOLICIT:
                N.parse_router_solicit(msg)
                st["rs-received"] += 1
            elif msg.type == ND_ROUTER_ADVERT:
                N.parse_router_advert(msg)
                st["ra-received"] += 1
            else:
                st.drop("unhandled")
        except MalformedPacket as exc:
            st.malformed(exc.reason)

    def _ns(self, pkt: PacketInfo, nic: NIC, ns: N.NeighborSolicit) -> None:
        st = self.stats
        st["ns-received"] += 1
        if ns.target[0] == 0xFF:  # §7.1.1: target must not be multicast
            st.malformed("multicast-target")
            return
        unspecified = is_unspecified(pkt.src)
        sll = ns.options.source_lladdr
        if unspecified and (sll is not None or pkt.dst[0] != 0xFF):  # §7.1.1 (DAD rules)
            st.malformed("bad-dad")
            return
        if not nic.has_address(ns.target):
            st.drop("not-our-target")
            return
        cache = nic.neigh6
        if cache is None:
            return
        if sll is not None:
            cache.update(pkt.src, sll, confirmed=False)  # §7.2.3
        body = bytearray(64)
        dst_mac: bytes | None
        if unspecified:  # reply to a DAD probe: all-nodes, not solicited (§7.2.4)
            dst, solicited = ALL_NODES6, False
            dst_mac = ipv6_multicast_mac(ALL_NODES6)
        else:
            dst, solicited = pkt.src, True
            # no source link-layer option and no cache entry: nowhere to send the answer
            dst_mac = sll or cache.lookup(pkt.src)
            if dst_mac is None:
                st.drop("no-lladdr")
                return
        n = N.pack_neighbor_advert(body, 0, ns.target, dst, ns.target, router=False,
                                   solicited=solicited, override=True, target_lladdr=nic.mac)
        st["na-sent"] += 1
        self._send(nic, ns.target, dst, dst_mac, body[:n])

    def _na(self, pkt: PacketInfo, nic: NIC, na: N.NeighborAdvert) -> None:
        st = self.stats
        st["na-received"] += 1
        if na.target[0] == 0xFF or (na.solicited and pkt.cast == MULTICAST):  # §7.1.2
            st.malformed("bad-advert")
            return
        cache = nic.neigh6
        if cache is None:
            return
        tll = na.options.target_lladdr
        if nic.has_address(na.target):
            st["duplicate-address"] += 1
            return
        if tll is None:
            e = cache.lookup(na.target)
            if e is not None and na.solicited:
                cache.update(na.target, e, confirmed=True)
            return
        cache.update(na.target, tll, confirmed=na.solicited, override=na.override, create=False)
