"""Software GRO: merge consecutive TCP segments of one flow in a receive batch.

A link that reads frames in batches (a TUN fd read up to 64 times per wake-up, an in-memory pipe
draining its queue) hands the whole batch to ``NIC.link_deliver_batch``.  Like Linux's
``tcp_gro_receive``, this merges in-order data segments of one connection that differ only in
sequence number and PSH into one super-segment before the network layer sees them, so the TCP
engine (and its ACK) runs once per up to 64 KiB instead of once per 1.5 KiB.  TCP already
receives such super-segments from links with hardware-style offload (TUN with a vnet header).

A segment is merged only when all of these hold (anything else is delivered as it came, after
the flow's pending merge, so a flow's segments keep their order):

* IPv4 without options or fragmentation, or IPv6 with TCP as the first next header; total
  length equal to the frame (no link padding); the destination is one of the stack's addresses
  (or the NIC is promiscuous), never a packet to forward;
* TCP with ACK and optionally PSH only (no SYN, FIN, RST, URG, ECE, CWR), a payload, and the
  same IP TOS/TTL (IPv6: first word and hop limit), acknowledgment number, window and options
  (timestamps included) as the segments before it; its sequence number follows the previous
  one exactly; no earlier segment was shorter than the first or carried PSH;
* its checksums verify (unless the link's checksums are trusted).  A segment that fails is
  delivered alone and the normal path counts and drops it.

The merged packet carries the first segment's headers with the IP length fixed and PSH from the
last segment; its TCP checksum is not recomputed: it is delivered as checksum-verified.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from aionetstack.wire.checksum import checksum

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC

_from_bytes = int.from_bytes
_ACK, _PSH = 0x10, 0x08
_MAX_IP = 65535


class _Chain:
    __slots__ = ("first", "hlen", "l3", "nxt", "payloads", "psh", "sig", "size", "total", "v6")

    def __init__(self, first: memoryview, l3: int, hlen: int, nxt: int, size: int,
                 sig: tuple[object, ...], psh: bool, v6: bool) -> None:
        self.first = first
        self.l3 = l3
        self.hlen = hlen  # L2 + IP + TCP header bytes of ``first``
        self.nxt = nxt  # sequence number the next merged segment must carry
        self.size = size  # payload length of the first segment (the sender's MSS)
        self.sig = sig
        self.psh = psh
        self.v6 = v6
        self.total = size
        self.payloads: list[memoryview] = [first[hlen:]]


# IPv4 header (no options) + TCP header; IPv6 header + TCP header: one unpack per segment.
# Addresses come out as integers: an address's value is congruent (mod 0xffff) to the sum of
# its 16-bit words, which is all the pseudo-header sum needs (RFC 1071).
_V4 = struct.Struct("!BBHHHBBHII12xBB2x")  # ... TCP up to the data offset and flags
_V6 = struct.Struct("!IHBBQQQQ12xBB2x")
_SEQ = struct.Struct("!I")


class Gro:
    """Per-NIC merge state for one batch at a time (nothing is held between batches)."""

    __slots__ = ("local", "nic", "stats")

    def __init__(self, nic: NIC) -> None:
        self.nic = nic
        self.local = nic.stack._local
        self.stats = {"gro_merged": 0, "gro_packets": 0}

    def run(self, frames: list[memoryview]) -> None:
        """Deliver ``frames`` through the NIC, merging what can be merged."""
        nic = self.nic
        deliver = nic.link_deliver
        trusted = nic.rx_trusted
        promisc = nic.promiscuous
        local = self.local
        l3 = 14 if nic.l2 else 0
        unpack4 = _V4.unpack_from
        unpack6 = _V6.unpack_from
        seq_of = _SEQ.unpack_from
        from_bytes = _from_bytes
        chains: dict[bytes, _Chain] = {}
        for f in frames:
            n = len(f)
            if n < l3 + 40 or (l3 and f[12] != 0x08 and f[12] != 0x86):
                deliver(f)
                continue
            b0 = f[l3]
            if b0 == 0x45:
                (_, tos, iplen, _, frag, ttl, proto, _, src, dst, doff, flags) = unpack4(f, l3)
                if proto != 6:
                    deliver(f)
                    continue
                v6 = False
                t = l3 + 20
                key = bytes(f[l3 + 12:t + 4])
                ip = (tos, ttl, frag)
                ok = not frag & 0x3FFF and iplen + l3 == n and (promisc or key[4:8] in local)
            elif b0 >> 4 == 6 and n >= l3 + 56 and f[l3 + 6] == 6:
                (w0, plen6, _, ttl, s0, s1, d0, d1, doff, flags) = unpack6(f, l3)
                v6 = True
                t = l3 + 40
                key = bytes(f[l3 + 8:t + 4])
                ip = (w0, ttl, 0)
                ok = plen6 + 40 + l3 == n and (promisc or key[16:32] in local)
                src = s0 + s1
                dst = d0 + d1
            else:
                deliver(f)
                continue
            thl = (doff >> 4) * 4
            plen = n - t - thl
            if not ok or thl < 20 or plen <= 0 or flags & ~_PSH != _ACK:
                self._flush_key(chains, key)
                deliver(f)
                continue
            if not trusted:
                # RFC 1071 sums: the IPv4 header, then the TCP segment with its pseudo-header
                body = from_bytes(f[t:], "big")
                if (n - t) & 1:
                    body <<= 8
                if ((not v6 and from_bytes(f[l3:t], "big") % 0xFFFF)
                        or (body + src + dst + 6 + n - t) % 0xFFFF):
                    self._flush_key(chains, key)
                    deliver(f)  # the normal path counts and drops it
                    continue
            (seq,) = seq_of(f, t + 4)
            # everything but lengths, IDs, checksums, sequence number and PSH must match:
            # IPv4 TOS, TTL, DF (IPv6 first word and hop limit); TCP acknowledgment number,
            # window, urgent pointer and options
            sig = (ip, bytes(f[t + 8:t + 12]), bytes(f[t + 14:t + 16]), bytes(f[t + 18:t + thl]))
            psh = bool(flags & _PSH)
            c = chains.get(key)
            if c is not None:
                if (c.nxt == seq and c.sig == sig and not c.psh and plen <= c.size
                        and c.total == c.size * len(c.payloads)
                        and c.hlen - l3 + c.total + plen <= _MAX_IP):
                    c.payloads.append(f[t + thl:])
                    c.total += plen
                    c.nxt = (seq + plen) & 0xFFFFFFFF
                    c.psh = psh
                    continue
                del chains[key]
                self._deliver(c)
            chains[key] = _Chain(f, l3, t + thl, (seq + plen) & 0xFFFFFFFF, plen, sig, psh, v6)
        for c in chains.values():
            self._deliver(c)

    def _flush_key(self, chains: dict[bytes, _Chain], key: bytes) -> None:
        c = chains.pop(key, None)
        if c is not None:
            self._deliver(c)

    def _deliver(self, c: _Chain) -> None:
        nic = self.nic
        parts = c.payloads
        if len(parts) == 1:
            nic.link_deliver(c.first, True)
            return
        st = self.stats
        st["gro_merged"] += 1
        st["gro_packets"] += len(parts)
        hlen = c.hlen
        l3 = c.l3
        buf = bytearray(c.first[:hlen])
        buf += b"".join(parts)
        if c.v6:
            n = len(buf) - l3 - 40
            buf[l3 + 4] = n >> 8
            buf[l3 + 5] = n & 0xFF
            t = l3 + 40
        else:
            n = len(buf) - l3
            buf[l3 + 2] = n >> 8
            buf[l3 + 3] = n & 0xFF
            buf[l3 + 10:l3 + 12] = b"\x00\x00"
            buf[l3 + 10:l3 + 12] = checksum(memoryview(buf)[l3:l3 + 20]).to_bytes(2, "big")
            t = l3 + 20
        if c.psh:
            buf[t + 13] |= _PSH
        nic.link_deliver(memoryview(buf), True)
