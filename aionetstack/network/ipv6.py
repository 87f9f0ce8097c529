"""IPv6 ingress and egress (RFC 8200, RFC 4291 addressing, RFC 5722 overlapping fragments).

Ingress: parse the fixed header, walk the extension-header chain (bounded), act on unrecognised
options as their two high bits demand (RFC 8200 §4.2: skip, discard, discard + ICMP parameter
problem, or the same only for non-multicast destinations), reassemble fragments (an overlap drops
the whole datagram), then demultiplex.  Egress: fixed header in place; source fragmentation with
a Fragment header when the route MTU (>= 1280) requires it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.network.fragment import Reassembler, fragment_payload
from aionetstack.network.packet import MULTICAST, UNICAST, PacketInfo
from aionetstack.stack.addr import ALL_NODES6
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.icmpv6 import PARAM_PROBLEM, TIME_EXCEEDED
from aionetstack.wire.ipv6 import (
    NH_FRAGMENT,
    NH_ICMPV6,
    NH_NONE,
    pack_ipv6,
    pack_ipv6_fragment,
    parse_ipv6,
    parse_ipv6_chain,
)

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.route import Route
    from aionetstack.stack.stack import CoreStack


class IPv6Protocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.ipv6
        lim = stack.limits
        self.reassembler = Reassembler(timeout=lim.reassembly_timeout6,
                                       max_bytes=lim.reassembly_bytes, ipv6=True)
        self._frag_timer = stack.timers.timer(self._expire_fragments)

    # -- ingress ---------------------------------------------------------------------------
    def deliver(self, nic: NIC, view: memoryview, trusted: bool = False) -> None:
        """``trusted``: checksums already verified (GRO); else the NIC's ``rx_trusted``."""
        st = self.stats
        st["received"] += 1
        trusted = trusted or nic.rx_trusted
        stack = self.stack
        try:
            h = parse_ipv6(view)
            src = h.src
            dst = h.dst
            martian = not nic.loopback and (
                src in (dst, _LOOPBACK) or src in stack._local or dst == _LOOPBACK)
            if src[0] == 0xFF or martian:
                st.drop("martian-source")
                return
            if dst in stack._local:
                cast = UNICAST
            elif dst[0] == 0xFF:
                if dst != ALL_NODES6 and dst not in stack.multicast_groups:
                    st.drop("multicast-not-joined")
                    return
                cast = MULTICAST
            elif nic.promiscuous:
                cast = UNICAST  # transparent mode: every destination is ours (forwarders)
            else:
                if stack.forwarding:
                    stack.forwarder.forward6(nic, h, view)
                else:
                    st.drop("not-for-us")
                return
            chain = parse_ipv6_chain(h)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        packet = view[: 40 + h.payload_length]
        if chain.bad_option is not None:
            action, pointer = chain.bad_option
            st.drop("unrecognized-option")
            if action == 2 or (action == 3 and cast != MULTICAST):
                pkt = PacketInfo(6, src, dst, nic, h.hop_limit, packet, cast, trusted=trusted)
                stack.icmp.send_error(pkt, PARAM_PROBLEM, 2, pointer, allow_multicast=True)
            return
        proto = chain.protocol
        payload = chain.payload
        if chain.fragment is not None:
            frag = chain.fragment
            if frag.frag_offset == 0 and not frag.more:
                proto = frag.next_header  # atomic fragment (RFC 6946): no reassembly
                payload = frag.payload
            else:
                if frag.more and len(frag.payload) % 8:
                    # RFC 8200 §4.5: parameter problem pointing at the payload length field
                    st.drop("bad-fragment-length")
                    pkt = PacketInfo(6, src, dst, nic, h.hop_limit, packet, cast, trusted=trusted)
                    stack.icmp.send_error(pkt, PARAM_PROBLEM, 0, 4)
                    return
                # kept for a time exceeded on timeout: the headers, the fragment header and the
                # first 8 bytes of data (the ports), so the source can tell what was lost
                unfrag = bytes(view[: 40 + chain.offset + 16])
                whole = self.reassembler.add((src, dst, frag.ident), frag.frag_offset, frag.more,
                                             frag.payload, stack.now(),
                                             unfrag if frag.frag_offset == 0 else None)
                stack.stats_.fragment["received"] += 1
                self._arm_fragments()
                if whole is None:
                    return
                stack.stats_.fragment["reassembled"] += 1
                # re-walk the chain over the reassembled datagram (RFC 8200 §4.5)
                rebuilt = bytearray(40 + len(whole))
                pack_ipv6(rebuilt, 0, src=src, dst=dst, next_header=frag.next_header,
                          payload_len=len(whole), hop_limit=h.hop_limit,
                          traffic_class=h.traffic_class, flow_label=h.flow_label)
                rebuilt[40:] = whole
                packet = memoryview(rebuilt)
                try:
                    chain = parse_ipv6_chain(parse_ipv6(packet))
                except MalformedPacket as exc:
                    st.malformed(exc.reason)
                    return
                if chain.fragment is not None:
                    st.malformed("nested-fragment")
                    return
                proto = chain.protocol
                payload = chain.payload
        st["delivered"] += 1
        pkt = PacketInfo(6, src, dst, nic, h.hop_limit, packet, cast, trusted=trusted)
        if proto == NH_ICMPV6:
            stack.icmp.deliver6(pkt, payload)
            return
        if proto == NH_NONE:
            return
        t = stack.transports.get(proto)
        if t is not None:
            t.deliver(pkt, payload)
        else:
            st.drop("unknown-protocol")
            # RFC 8200 §4: parameter problem code 1 pointing at the offending next-header field
            stack.icmp.send_error(pkt, PARAM_PROBLEM, 1, chain.nh_pointer)

    def _arm_fragments(self) -> None:
        d = self.reassembler.next_deadline()
        if d is not None:
            self._frag_timer.schedule(d)
        else:
            self._frag_timer.cancel()

    def _expire_fragments(self, now: float) -> None:
        for key, header in self.reassembler.expire(now):
            self.stack.stats_.fragment["timeout"] += 1
            if header is not None:  # RFC 8200 §4.5: time exceeded, code 1, if offset-0 arrived
                src, dst = key[0], key[1]  # type: ignore[index]
                nic = self.stack._local.get(dst)
                if nic is not None:
                    pkt = PacketInfo(6, src, dst, nic, 64, memoryview(header), UNICAST)
                    self.stack.icmp.send_error(pkt, TIME_EXCEEDED, 1)
        self._arm_fragments()

    # -- egress ----------------------------------------------------------------------------
    def send(self, route: Route, buf: bytearray, l4_len: int, next_header: int, *,
             hop_limit: int | None = None, traffic_class: int = 0, gso: int = 0) -> None:
        off = route.l3_offset
        hl = self.stack.default_ttl if hop_limit is None else hop_limit
        if 40 + l4_len <= route.mtu or (gso and l4_len <= 0xFFFF):
            pack_ipv6(buf, off, src=route.local, dst=route.remote, next_header=next_header,
                      payload_len=l4_len, hop_limit=hl, traffic_class=traffic_class)
            self.stats["sent"] += 1
            if gso:
                route.nic.output(buf, off, route.next_hop, gso)
            else:
                route.nic.output(buf, off, route.next_hop)
            return
        payload = memoryview(buf)[route.headroom:route.headroom + l4_len]
        room = (route.mtu - 48) & ~7
        ident = self.stack.rng.getrandbits(32)
        for start, length, more in fragment_payload(l4_len, room, room):
            fb = bytearray(off + 48 + length)
            fb[off + 48:] = payload[start:start + length]
            pack_ipv6(fb, off, src=route.local, dst=route.remote, next_header=NH_FRAGMENT,
                      payload_len=8 + length, hop_limit=hl, traffic_class=traffic_class)
            pack_ipv6_fragment(fb, off + 40, next_header, start, more, ident)
            self.stats["sent"] += 1
            self.stats["fragments-sent"] += 1
            route.nic.output(fb, off, route.next_hop)


_LOOPBACK = bytes(15) + b"\x01"
