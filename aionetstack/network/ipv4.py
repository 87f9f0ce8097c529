"""IPv4 ingress and egress (RFC 791, RFC 1122 §3.2.1, RFC 1812 for forwarding).

Ingress: parse and validate (header checksum unless the link is trusted), drop martians
(RFC 1122 §3.2.1.3: multicast/broadcast/loopback sources, a local source arriving from outside,
src == dst "land"), accept the stack's own unicast addresses (weak host model), broadcast and
joined multicast groups, and on a promiscuous NIC any unicast destination (transparent mode),
reassemble fragments, then demultiplex by protocol.  Anything else is forwarded when the stack
forwards, else dropped.  Egress: fill the header in place in front of the
transport segment, fragment when the route MTU requires it and DF is clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.errors import MessageTooLong
from aionetstack.network.fragment import Reassembler, fragment_payload
from aionetstack.network.packet import BROADCAST, MULTICAST, UNICAST, PacketInfo
from aionetstack.wire.checksum import PROTO_ICMP, checksum
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.icmpv4 import DEST_UNREACH, ECHO_REPLY, ECHO_REQUEST, TIME_EXCEEDED
from aionetstack.wire.ipv4 import pack_ipv4, pack_ipv4_plain, parse_ipv4

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.route import Route
    from aionetstack.stack.stack import CoreStack

_ALL_HOSTS = b"\xe0\x00\x00\x01"


class IPv4Protocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.ipv4
        self._ident = stack.rng.getrandbits(16)
        lim = stack.limits
        self.reassembler = Reassembler(timeout=lim.reassembly_timeout4,
                                       max_bytes=lim.reassembly_bytes, ipv6=False)
        self._frag_timer = stack.timers.timer(self._expire_fragments)

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    # -- ingress ---------------------------------------------------------------------------
    def deliver(self, nic: NIC, view: memoryview, trusted: bool = False) -> None:
        """``trusted``: checksums already verified (GRO); else the NIC's ``rx_trusted``."""
        st = self.stats
        st["received"] += 1
        trusted = trusted or nic.rx_trusted
        try:
            h = parse_ipv4(view, not trusted)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        stack = self.stack
        src = h.src
        dst = h.dst
        s0 = src[0]
        if s0 >= 224 or (not nic.loopback and (s0 == 127 or dst[0] == 127 or src == dst
                                                 or src in stack._local)) or (
                # a directed broadcast (prefix < 31) has at least two host bits, all ones
                src[3] & 3 == 3 and nic.is_directed_broadcast(src)):  # RFC 1122 §3.2.1.3
            st.drop("martian-source")
            return
        if dst in stack._local:
            cast = UNICAST
        elif dst == b"\xff\xff\xff\xff" or nic.is_directed_broadcast(dst):
            cast = BROADCAST
        elif dst[0] >= 224 and dst[0] < 240:
            if dst != _ALL_HOSTS and dst not in stack.multicast_groups:
                st.drop("multicast-not-joined")
                return
            cast = MULTICAST
        elif nic.promiscuous:
            cast = UNICAST  # transparent mode: every destination is ours (forwarders)
        else:
            if stack.forwarding:
                stack.forwarder.forward4(nic, h, view)
            else:
                st.drop("not-for-us")
            return
        if src == b"\x00\x00\x00\x00" and cast == UNICAST and h.protocol != 17:
            st.drop("martian-source")
            return
        packet = view[: h.total_length]
        payload = h.payload
        first = True
        if h.mf or h.frag_offset:
            whole = self.reassembler.add((src, dst, h.protocol, h.ident), h.frag_offset, h.mf,
                                         payload, stack.now(),
                                         # header + 64 bits of data: what a time
                                         # exceeded quotes (RFC 792)
                                         bytes(view[: h.header_len + 8]) if h.frag_offset == 0
                                         else None)
            stack.stats_.fragment["received"] += 1
            self._arm_fragments()
            if whole is None:
                return
            stack.stats_.fragment["reassembled"] += 1
            payload = memoryview(whole)
            # the reassembled datagram (quoted by ICMP errors) is no longer a fragment
            hdr = bytearray(view[: h.header_len])
            hdr[2:4] = min(h.header_len + len(whole), 0xFFFF).to_bytes(2, "big")
            hdr[6] &= 0x40  # keep DF, clear MF and the offset
            hdr[7] = 0
            hdr[10:12] = b"\x00\x00"
            hdr[10:12] = checksum(hdr).to_bytes(2, "big")
            packet = memoryview(bytes(hdr) + whole)
        st["delivered"] += 1
        proto = h.protocol
        if proto == PROTO_ICMP:
            # echo requests and replies skip the general ICMP demux (no PacketInfo either):
            # a request's reply is written before this returns
            if len(payload) >= 8:
                itype = payload[0]
                if itype == ECHO_REQUEST and cast == UNICAST:
                    stack.icmp.echo_request4(nic, src, dst, payload, trusted)
                    return
                if itype == ECHO_REPLY:
                    stack.icmp.echo_reply4(nic, src, payload, trusted)
                    return
            stack.icmp.deliver4(PacketInfo(4, src, dst, nic, h.ttl, packet, cast, first,
                                           trusted), payload)
            return
        pkt = PacketInfo(4, src, dst, nic, h.ttl, packet, cast, first, trusted)
        t = stack.transports.get(proto)
        if t is not None:
            t.deliver(pkt, payload)
        else:
            st.drop("unknown-protocol")
            stack.icmp.send_error(pkt, DEST_UNREACH, 2)  # protocol unreachable

    def _arm_fragments(self) -> None:
        d = self.reassembler.next_deadline()
        if d is not None:
            self._frag_timer.schedule(d)
        else:
            self._frag_timer.cancel()

    def _expire_fragments(self, now: float) -> None:
        for key, header in self.reassembler.expire(now):
            self.stack.stats_.fragment["timeout"] += 1
            if header is not None:
                src, dst = key[0], key[1]  # type: ignore[index]
                nic = self.stack._local.get(dst)
                if nic is not None:
                    pkt = PacketInfo(4, src, dst, nic, 64, memoryview(header), UNICAST)
                    self.stack.icmp.send_error(pkt, TIME_EXCEEDED, 1)
        self._arm_fragments()

    # -- egress ----------------------------------------------------------------------------
    def send(self, route: Route, buf: bytearray, l4_len: int, protocol: int, *,
             ttl: int | None = None, tos: int = 0, df: bool = False, gso: int = 0) -> None:
        off = route.l3_offset
        total = 20 + l4_len
        ttl = self.stack.default_ttl if ttl is None else ttl
        if total <= route.mtu or (gso and total <= 0xFFFF):
            # a super-segment (``gso``) is cut to the MTU below us, each piece with DF
            ident = self._ident = (self._ident + 1) & 0xFFFF  # next_ident(), inlined
            pack_ipv4_plain(buf, off, route.local, route.remote, protocol, l4_len, ttl, tos,
                            ident, 0x4000 if df else 0)
            self.stats["sent"] += 1
            if gso:
                route.nic.output(buf, off, route.next_hop, gso)
            else:
                route.nic.output(buf, off, route.next_hop)
            return
        if df:
            self.stats.drop("too-big")
            raise MessageTooLong(f"{total}-byte packet exceeds the path MTU {route.mtu}")
        self.fragment_out(route, memoryview(buf)[route.headroom:route.headroom + l4_len],
                          protocol, ttl, tos)

    def fragment_out(self, route: Route, payload: memoryview, protocol: int, ttl: int,
                     tos: int, ident: int | None = None, frag_offset: int = 0,
                     mf: bool = False) -> None:
        """RFC 791 §3.2 fragmentation: every piece but the last a multiple of 8 bytes.

        A router re-fragmenting a datagram (or a fragment of one) passes its ``ident``, its
        ``frag_offset`` and its MF flag, which the pieces keep.
        """
        room = (route.mtu - 20) & ~7
        if ident is None:
            ident = self.next_ident()
        off = route.l3_offset
        for start, length, more in fragment_payload(len(payload), room, room):
            fb = bytearray(off + 20 + length)
            fb[off + 20:] = payload[start:start + length]
            pack_ipv4(fb, off, src=route.local, dst=route.remote, protocol=protocol,
                      payload_len=length, ttl=ttl, tos=tos, ident=ident, mf=more or mf,
                      frag_offset=frag_offset + start)
            self.stats["sent"] += 1
            self.stats["fragments-sent"] += 1
            route.nic.output(fb, off, route.next_hop)
