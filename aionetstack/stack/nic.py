"""Network interface cards: the join between a link and the network layer.

A NIC owns one link, its addresses and (on L2 links) a neighbour cache per family.  Inbound it is
the link's ``LinkReceiver``: Ethernet frames are filtered by destination MAC and demultiplexed by
ethertype; L3 frames by the IP version nibble.  Outbound it takes a packet buffer whose IP header
starts at ``l3_offset`` (with room for the Ethernet header in front on L2 links), resolves the
next hop's link address and hands the frame to the link.

In *promiscuous* mode the network layer hands the transports packets for any destination address
(not only the NIC's); with *spoofing* the stack may send from any source address through it.
Together they are the "transparent mode" the TCP/UDP forwarders need
(``CoreStack.set_transparent``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aionetstack.link.base import Link, LinkCaps
from aionetstack.link.vnet import segment
from aionetstack.network.gro import Gro
from aionetstack.stack.addr import is_link_local6, is_multicast, same_prefix, to_str
from aionetstack.stack.neighbour import NeighbourCache
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ethernet import (
    BROADCAST_MAC,
    ETH_HLEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ipv4_multicast_mac,
    ipv6_multicast_mac,
    mac_ntoa,
    pack_ethernet,
    parse_ethernet,
)

if TYPE_CHECKING:
    from aionetstack.stack.stack import CoreStack


SOFTWARE_GSO_MAX = 65535


@dataclass(slots=True, frozen=True)
class NicAddress:
    address: bytes
    prefixlen: int

    @property
    def family(self) -> int:
        return 4 if len(self.address) == 4 else 6

    def __str__(self) -> str:
        return f"{to_str(self.address)}/{self.prefixlen}"


class NIC:
    """One interface of a stack."""

    def __init__(self, stack: CoreStack, nic_id: int, name: str, link: Link,
                 mtu: int | None = None, loopback: bool = False) -> None:
        self.stack = stack
        self.id = nic_id
        self.name = name
        self.link = link
        caps: LinkCaps = link.caps
        self.caps = caps
        self.mtu = min(mtu, caps.mtu) if mtu else caps.mtu
        self.l2 = caps.l2
        self.mac: bytes = caps.mac or bytes(6)
        self.loopback = loopback
        self.addresses: list[NicAddress] = []
        self.up = True
        # transparent mode (forwarders): take packets for any destination, send from any source
        self.promiscuous = False
        self.spoofing = False
        self.echo_any = False  # with promiscuous: answer echo requests to any address
        self.rx_trusted = caps.rx_checksum_trusted
        self.tx_offload = caps.tx_checksum_offload
        self.link_header_len = ETH_HLEN if self.l2 else 0
        # segmentation offload: what TCP may hand ``output`` as one super-segment.  A link with
        # TSO takes it whole (``caps.gso_max_size``); for any other link the NIC cuts it into
        # MTU-sized packets itself (software GSO, as Linux does before a driver without TSO),
        # which costs far less per packet than running TCP's output once per MSS.
        # ``software_gso = False`` (before connections open) turns that off.
        self.software_gso = True
        self._poll_timer = stack.timers.timer(self._poll)
        # receive offload for batches (link_deliver_batch); ``gro = None`` turns it off
        self.gro: Gro | None = Gro(self)
        self.neigh4: NeighbourCache | None = None
        self.neigh6: NeighbourCache | None = None
        if self.l2:
            self.neigh4 = NeighbourCache(
                stack.timers, lambda: stack.now(), stack.stats_.neighbour,
                solicit=lambda ip, mac: stack.arp.solicit(self, ip, mac),
                transmit=self.transmit,
                on_unreachable=stack.on_neighbour_unreachable,
                max_entries=stack.limits.neighbour_entries)
            self.neigh6 = NeighbourCache(
                stack.timers, lambda: stack.now(), stack.stats_.neighbour,
                solicit=lambda ip, mac: stack.ndp.solicit(self, ip, mac),
                transmit=self.transmit,
                on_unreachable=stack.on_neighbour_unreachable,
                max_entries=stack.limits.neighbour_entries)

    @property
    def gso_max(self) -> int:
        """Largest super-segment (IP packet bytes) ``output`` takes with ``gso``; 0: none."""
        hw = self.caps.gso_max_size
        return hw if hw else (SOFTWARE_GSO_MAX if self.software_gso else 0)

    def _send_gso(self, frame: bytearray | memoryview, gso: int) -> None:
        if self.caps.gso_max_size:
            self.link.send_gso(frame, gso)
            return
        self.link.send_many(segment(frame, self.link_header_len, gso, not self.tx_offload))

    def __repr__(self) -> str:
        addrs = ", ".join(str(a) for a in self.addresses)
        return f"<NIC {self.id} {self.name} mtu={self.mtu} [{addrs}]>"

    # -- addresses -----------------------------------------------------------------------
    def primary(self, family: int, dst: bytes | None = None) -> bytes | None:
        """Source address selection (RFC 6724, much simplified): same prefix, then scope."""
        candidates = [a for a in self.addresses if a.family == family]
        if not candidates:
            return None
        if dst is None:
            return candidates[0].address
        for a in candidates:
            if same_prefix(a.address, dst, a.prefixlen):
                return a.address
        dst_ll = is_link_local6(dst)
        for a in candidates:  # RFC 6724 rule 2: prefer an address of the destination's scope
            if is_link_local6(a.address) == dst_ll:
                return a.address
        return candidates[0].address

    def has_address(self, addr: bytes) -> bool:
        return any(a.address == addr for a in self.addresses)

    def is_directed_broadcast(self, addr: bytes) -> bool:
        for a in self.addresses:
            if len(a.address) == 4 and a.prefixlen < 31:
                host_bits = (1 << (32 - a.prefixlen)) - 1
                if (int.from_bytes(addr, "big") & host_bits) == host_bits and same_prefix(
                        addr, a.address, a.prefixlen):
                    return True
        return False

    # -- link receiver -------------------------------------------------------------------
    def link_deliver_batch(self, frames: list[memoryview]) -> None:
        """Deliver a batch of frames read together, merging TCP segments with GRO
        (``aionetstack.network.gro``) unless ``gro`` is off."""
        gro = self.gro
        if gro is None or len(frames) < 2:
            for f in frames:
                self.link_deliver(f)
            return
        gro.run(frames)

    def link_deliver(self, frame: memoryview, trusted: bool = False) -> None:
        """Deliver one frame; ``trusted``: its checksums are known good (GRO verified them)."""
        stack = self.stack
        stats = stack.stats_
        stats.link["rx-frames"] += 1
        if not self.up:
            stats.link.drop("nic-down")
            return
        if not self.l2:
            if not frame:
                stats.link.malformed("empty")
                return
            v = frame[0] >> 4
            if v == 4:
                stack.ipv4.deliver(self, frame, trusted)
            elif v == 6:
                stack.ipv6.deliver(self, frame, trusted)
            else:
                stats.link.malformed("bad-version")
            return
        try:
            eth = parse_ethernet(frame)
        except MalformedPacket as exc:
            stats.ethernet.malformed(exc.reason)
            return
        dst = eth.dst
        if dst != self.mac and dst != BROADCAST_MAC and not (dst[0] & 1):
            stats.ethernet.drop("not-for-us")
            return
        et = eth.ethertype
        if et == ETHERTYPE_IPV4:
            stack.ipv4.deliver(self, eth.payload, trusted)
        elif et == ETHERTYPE_IPV6:
            stack.ipv6.deliver(self, eth.payload, trusted)
        elif et == ETHERTYPE_ARP:
            stack.arp.deliver(self, eth.payload)
        else:
            stats.ethernet.drop("unknown-ethertype")

    def link_wakeup(self, at: float) -> None:
        self._poll_timer.schedule_if_earlier(at)

    def _poll(self, now: float) -> None:
        nxt = self.link.poll()
        if nxt is not None:
            self._poll_timer.schedule_if_earlier(nxt)

    # -- output --------------------------------------------------------------------------
    def output(self, buf: bytearray, l3_offset: int, next_hop: bytes, gso: int = 0) -> None:
        """Send the IP packet at ``buf[l3_offset:]`` to neighbour ``next_hop``.

        ``gso`` > 0: the packet is a TCP super-segment to be cut into ``gso``-byte payloads
        (by the link's segmentation offload, or in software by ``Link.send_gso``)."""
        if not self.up:
            self.stack.stats_.link.drop("nic-down")
            return
        if not self.l2:
            self.stack.stats_.link["tx-frames"] += 1
            frame = buf if l3_offset == 0 else memoryview(buf)[l3_offset:]
            if gso:
                self._send_gso(frame, gso)
            else:
                self.link.send(frame)
            return
        if gso:
            assert len(next_hop) in (4, 16)
            neigh = self.neigh4 if len(next_hop) == 4 else self.neigh6
            assert neigh is not None
            mac = neigh.lookup(next_hop)
            if mac is None:  # unresolved: queue ordinary packets behind the resolution
                for piece in segment(memoryview(buf)[l3_offset:], 0, gso, not self.tx_offload):
                    pb = bytearray(l3_offset) + piece
                    self.output(pb, l3_offset, next_hop)
                return
            neigh.send(next_hop, buf, l3_offset, gso)
            return
        if len(next_hop) == 4:
            if next_hop == b"\xff\xff\xff\xff" or self.is_directed_broadcast(next_hop):
                self.transmit(BROADCAST_MAC, buf, l3_offset)
            elif is_multicast(next_hop):
                self.transmit(ipv4_multicast_mac(next_hop), buf, l3_offset)
            else:
                assert self.neigh4 is not None
                self.neigh4.send(next_hop, buf, l3_offset)
        elif next_hop[0] == 0xFF:
            self.transmit(ipv6_multicast_mac(next_hop), buf, l3_offset)
        else:
            assert self.neigh6 is not None
            self.neigh6.send(next_hop, buf, l3_offset)

    def transmit(self, mac: bytes, buf: bytearray, l3_offset: int, gso: int = 0) -> None:
        """Frame and send a packet whose link address is known."""
        start = l3_offset - ETH_HLEN
        et = ETHERTYPE_IPV4 if (buf[l3_offset] >> 4) == 4 else ETHERTYPE_IPV6
        pack_ethernet(buf, start, mac, self.mac, et)
        self.stack.stats_.link["tx-frames"] += 1
        frame = buf if start == 0 else memoryview(buf)[start:]
        if gso:
            self._send_gso(frame, gso)
        else:
            self.link.send(frame)

    def send_raw_frame(self, frame: bytearray) -> None:
        """Send a complete link-layer frame (ARP)."""
        self.stack.stats_.link["tx-frames"] += 1
        self.link.send(frame)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "mtu": self.mtu,
            "l2": self.l2,
            "mac": mac_ntoa(self.mac) if self.l2 else None,
            "addresses": [str(a) for a in self.addresses],
            "link": self.link.stats(),
        }

    def close(self) -> None:
        self.up = False
        self._poll_timer.cancel()
        for n in (self.neigh4, self.neigh6):
            if n is not None:
                n.clear()
        self.link.close()
