"""ARP (RFC 826) on L2 NICs, feeding the shared neighbour cache.

Requests for one of the NIC's addresses are answered and teach us the sender (RFC 826 "merge":
an existing entry is always refreshed; a new one is created only when the request targets us).
Replies confirm an entry (REACHABLE).  Gratuitous ARP refreshes an existing entry only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.wire.arp import ARP_LEN, ARP_REPLY, ARP_REQUEST, pack_arp, parse_arp
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ethernet import BROADCAST_MAC, ETH_HLEN, ETHERTYPE_ARP, pack_ethernet

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack


class ArpProtocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.arp

    def _send(self, nic: NIC, op: int, dst_mac: bytes, spa: bytes, tha: bytes,
              tpa: bytes) -> None:
        frame = bytearray(ETH_HLEN + ARP_LEN)
        pack_ethernet(frame, 0, dst_mac, nic.mac, ETHERTYPE_ARP)
        pack_arp(frame, ETH_HLEN, op, nic.mac, spa, tha, tpa)
        nic.send_raw_frame(frame)

    def solicit(self, nic: NIC, ip: bytes, unicast_mac: bytes | None) -> None:
        spa = nic.primary(4, ip)
        if spa is None:
            self.stats.drop("no-source-address")
            return
        self.stats["request-sent"] += 1
        self._send(nic, ARP_REQUEST, unicast_mac or BROADCAST_MAC, spa, bytes(6), ip)

    def deliver(self, nic: NIC, view: memoryview) -> None:
        st = self.stats
        st["received"] += 1
        try:
            p = parse_arp(view)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        cache = nic.neigh4
        if cache is None:
            return
        if p.sha == nic.mac:
            st.drop("own-frame")
            return
        if p.sha[0] & 1 or not any(p.sha):
            st.drop("bad-sender-mac")
            return
        for_us = nic.has_address(p.tpa)
        sender_ok = any(p.spa) and p.spa[0] < 224 and p.spa != b"\xff\xff\xff\xff"
        if p.op == ARP_REQUEST:
            st["request-received"] += 1
            if sender_ok:
                cache.update(p.spa, p.sha, confirmed=False, create=for_us)
            if for_us:
                st["reply-sent"] += 1
                self._send(nic, ARP_REPLY, p.sha, p.tpa, p.sha, p.spa)
        elif p.op == ARP_REPLY:
            st["reply-received"] += 1
            if sender_ok:
                cache.update(p.spa, p.sha, confirmed=for_us, create=False)
        else:
            st.drop("unknown-op")
