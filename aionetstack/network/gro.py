"""Software GRO: merge consecutive TCP segments of one flow in a receive batch.

A link that reads frames in batches (a TUN fd read up to 64 times per wake-up, an in-memory pipe
draining its queue) hands the whole batch to ``NIC.link_deliver_batch``.  Like Linux's
``tcp_gro_receive``, this merges in-order data segments of one connection that differ only in
sequence number and PSH into one super-segment before the network layer sees them, so the TCP
engine (and its ACK) runs once per up to 64 KiB instead of once per 1.5 KiB.  TCP already
receives such super-segments from links with hardware-style offload (TUN with a vnet header).

A segment is merged only when all of these hold (anything else is delivered as it came, after
every pending merge, so a flow's segments keep their order and control segments keep their
place among all flows):

* IPv4 without options or fragmentation, or IPv6 with TCP as the first next header; total
  length equal to the frame (no link padding); the destination is one of the stack's addresses
  (or the NIC is promiscuous), never a packet to forward;
* TCP with ACK and optionally PSH only (no SYN, FIN, RST, URG, ECE, CWR), a payload, and the
  same IP TOS/TTL (IPv6: first word and hop limit), acknowledgment number, window and options
  (timestamps included) as the segments before it; its sequence number follows the previous
  one exactly; no earlier segment was shorter than the first or carried PSH;
* its checksums verify (unless the link's checksums are trusted).

Checksums are verified as a sum over the merge (RFC 1071 sums add): each segment's TCP bytes
are added up as one big integer, plus the pseudo-header words, and a single modulo at the end
says whether every segment summed to zero.  Random corruption slips through that with the same
odds as through one segment's own checksum (a corrupted segment is missed only if its own sum
happens to come out right).  When the sum fails, the segments are delivered one by one,
unmerged and unverified, and the normal path checks each one and counts and drops the bad ones.
IPv4 header checksums are checked per packet.

Pure ACKs are folded too: of a run of them for one connection in one batch (same sequence
number, rising acknowledgment numbers, no options but a timestamp) only the last is delivered,
since it carries everything the earlier ones did (ACKs are cumulative; its window and timestamp
are the newest).  Duplicate ACKs, ACKs with SACK blocks and window updates that acknowledge
nothing new are never folded: loss detection counts them.

The merged packet carries the first segment's headers with the IP length fixed and PSH from the
last segment; its TCP checksum is not recomputed: it is delivered as checksum-verified.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from aionetstack.wire.checksum import checksum

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC

_from_bytes = int.from_bytes
_ACK, _PSH = 0x10, 0x08
_MAX_IP = 65535
_TS_ONLY = b"\x01\x01\x08\x0a"  # NOP, NOP, timestamp: the only options a folded ACK carries


class _Chain:
    __slots__ = ("ack", "acks", "addrs", "frames", "hlen", "l3", "len_base", "len_shift", "mask",
                 "nxt", "psh", "psh_shift", "ref", "seq_shift", "sig", "size", "small", "sum",
                 "t", "total", "v6")

    def __init__(self, first: memoryview, l3: int, hlen: int, nxt: int, size: int,
                 sig: tuple[object, ...], psh: bool, v6: bool, big: int, small: int) -> None:
        self.frames = [first]
        self.l3 = l3
        self.hlen = hlen  # L2 + IP + TCP header bytes of each frame
        self.nxt = nxt  # sequence number the next merged segment must carry
        self.size = size  # payload length of the first segment (the sender's MSS)
        self.sig = sig
        self.psh = psh
        self.v6 = v6
        self.total = size
        self.sum = big  # the segments' bytes as integers, added (0: trusted, nothing to check)
        self.small = small  # their pseudo-header words, added
        self.acks = size == 0  # a run of pure ACKs (only the last is delivered)
        self.ack = 0
        # the fast path's view of the headers (set by ``Gro._template``): the first frame's
        # headers as one integer, and the mask of the bits every later segment must repeat
        self.ref = self.mask = 0
        self.t = self.addrs = self.len_base = 0
        self.seq_shift = self.len_shift = self.psh_shift = 0


# IPv4 header (no options) + TCP header; IPv6 header + TCP header: one unpack per segment.
# Addresses come out as integers: an address's value is congruent (mod 0xffff) to the sum of
# its 16-bit words, which is all the pseudo-header sum needs (RFC 1071).
_TCP = "4xIIBBH2xH"  # ports skipped; seq, ack, data offset, flags, window, urgent pointer
_V4 = struct.Struct("!BBHHHBBHII" + _TCP)
_V6 = struct.Struct("!IHBBQQQQ" + _TCP)


class Gro:
    """Per-NIC merge state for one batch at a time (nothing is held between batches)."""

    __slots__ = ("_masks", "deliver", "local", "nic", "stats")

    def __init__(self, nic: NIC) -> None:
        self.nic = nic
        # where what GRO passes on goes: the NIC's input (a benchmark or a test may observe it
        # here; the compiled NIC's methods cannot be replaced)
        self.deliver: Callable[..., None] = nic.link_deliver
        self._masks: dict[tuple[int, bool, int], tuple[int, int, int, int, int, int]] = {}
        self.local = nic.stack._local
        self.stats = {"gro_merged": 0, "gro_packets": 0, "gro_bad_sum": 0,
                      "gro_acks_folded": 0}

    def run(self, frames: list[memoryview]) -> None:
        """Deliver ``frames`` through the NIC, merging what can be merged."""
        nic = self.nic
        verify = not nic.rx_trusted
        promisc = nic.promiscuous
        local = self.local
        l3 = 14 if nic.l2 else 0
        unpack4 = _V4.unpack_from
        unpack6 = _V6.unpack_from
        from_bytes = _from_bytes
        chains: dict[bytes, _Chain] = {}
        cur: _Chain | None = None  # the data chain the last segment went to
        for f in frames:
            n = len(f)
            if cur is not None and n > cur.hlen:
                # fast path: the next segment of the same flow.  Its headers, read as one
                # integer, must equal the chain's first headers everywhere but in the fields
                # that vary (lengths, IPv4 ID, checksums, sequence number, PSH); the rest of the
                # rules are checked on the extracted fields, exactly as on the full path below.
                hl = cur.hlen
                h = from_bytes(f[:hl], "big")
                if (not (h ^ cur.ref) & cur.mask and not cur.psh
                        and (h >> cur.seq_shift) & 0xFFFFFFFF == cur.nxt
                        and (h >> cur.len_shift) & 0xFFFF == n - cur.len_base
                        and n - hl <= cur.size and cur.total == cur.size * len(cur.frames)
                        and hl - l3 + cur.total + n - hl <= _MAX_IP
                        and not (verify and not cur.v6
                                 and from_bytes(f[l3:l3 + 20], "big") % 0xFFFF)):
                    plen = n - hl
                    cur.frames.append(f)
                    cur.total += plen
                    cur.nxt = (cur.nxt + plen) & 0xFFFFFFFF
                    cur.psh = (h >> cur.psh_shift) & 1 == 1
                    if verify:
                        t = cur.t
                        big = from_bytes(f[t:], "big")
                        if (n - t) & 1:
                            big <<= 8
                        cur.sum += big
                        cur.small += cur.addrs + 6 + n - t
                    continue
            cur = None
            if n < l3 + 40 or (l3 and f[12] != 0x08 and f[12] != 0x86):
                self._alone(chains, f)
                continue
            b0 = f[l3]
            if b0 == 0x45:
                if f[l3 + 9] != 6:
                    self._alone(chains, f)
                    continue
                (_, tos, iplen, _, frag, ttl, _, _, src, dst, seq, ack, doff, flags, win,
                 urg) = unpack4(f, l3)
                t = l3 + 20
                v6 = False
                key = bytes(f[l3 + 12:t + 4])
                ok = not frag & 0x3FFF and iplen + l3 == n and not (
                    verify and from_bytes(f[l3:t], "big") % 0xFFFF)
                ip = tos << 24 | frag << 8 | ttl
            elif b0 >> 4 == 6 and n >= l3 + 60 and f[l3 + 6] == 6:
                (w0, plen6, _, ip, s0, s1, d0, d1, seq, ack, doff, flags, win,
                 urg) = unpack6(f, l3)
                t = l3 + 40
                v6 = True
                key = bytes(f[l3 + 8:t + 4])
                ok = plen6 + 40 + l3 == n
                ip |= w0 << 8
                src = s0 + s1
                dst = d0 + d1
            else:
                self._alone(chains, f)
                continue
            thl = (doff >> 4) * 4
            plen = n - t - thl
            if (plen == 0 and flags == _ACK and ok
                    and (thl == 20 or (thl == 32 and f[t + 20:t + 24] == _TS_ONLY))):
                self._pure_ack(chains, key, f, t, n, thl, seq, ack, ip, verify, src + dst,
                               v6)
                continue
            if not ok or thl < 20 or plen <= 0 or flags & ~_PSH != _ACK:
                self._alone(chains, f)
                continue
            # everything but lengths, IDs, checksums, sequence number and PSH must match:
            # IPv4 TOS, DF, TTL (IPv6 traffic class, flow label, hop limit); TCP acknowledgment
            # number, window, urgent pointer and options
            sig = (ip, ack, win, urg, bytes(f[t + 20:t + thl]) if thl > 20 else b"",
                   bytes(f[:6]) if l3 else b"")  # and on Ethernet the destination MAC
            if verify:
                big = from_bytes(f[t:], "big")
                if (n - t) & 1:
                    big <<= 8
                small = src + dst + 6 + n - t
            else:
                big = small = 0
            psh = flags & _PSH != 0
            c = chains.get(key)
            if c is not None:
                if (c.nxt == seq and c.sig == sig and not c.acks and not c.psh and plen <= c.size
                        and c.total == c.size * len(c.frames)
                        and c.hlen - l3 + c.total + plen <= _MAX_IP):
                    c.frames.append(f)
                    c.total += plen
                    c.nxt = (seq + plen) & 0xFFFFFFFF
                    c.psh = psh
                    if verify:
                        c.sum += big
                        c.small += small
                    cur = c if c.ref else None
                    continue
                del chains[key]
                self._deliver(c)
            if not (promisc or (key[16:32] if v6 else key[4:8]) in local):
                # not ours: forwarding (or dropping) is the network layer's business
                self._alone(chains, f)
                continue
            c = chains[key] = _Chain(f, l3, t + thl, (seq + plen) & 0xFFFFFFFF, plen, sig, psh,
                                     v6, big, small)
            self._template(c, f, t, src + dst)
            cur = c if c.ref else None
        for c in chains.values():
            self._deliver(c)

    def _template(self, c: _Chain, f: memoryview, t: int, addrs: int) -> None:
        """Prepare chain ``c`` (first segment ``f``, TCP header at ``t``) for the fast path."""
        l3 = c.l3
        hl = c.hlen
        k = (l3, c.v6, hl)
        m = self._masks.get(k)
        if m is None:
            mask = bytearray(b"\xff" * hl)
            # what may differ between merged segments (see the module docstring)
            varying = [(l3 + 4, 2)] if c.v6 else [(l3 + 2, 4), (l3 + 10, 2)]
            varying += [(t + 4, 4), (t + 16, 2)]
            for at, w in varying:
                mask[at:at + w] = bytes(w)
            mask[t + 13] &= ~_PSH & 0xFF
            len_at, len_base = (l3 + 4, l3 + 40) if c.v6 else (l3 + 2, l3)
            m = self._masks[k] = (_from_bytes(mask, "big"), 8 * (hl - t - 8),
                                  8 * (hl - len_at - 2), len_base, 8 * (hl - t - 14) + 3, t)
        c.mask, c.seq_shift, c.len_shift, c.len_base, c.psh_shift, c.t = m
        c.ref = _from_bytes(f[:hl], "big")
        c.addrs = addrs

    def _alone(self, chains: dict[bytes, _Chain], f: memoryview) -> None:
        """Deliver a frame that is not merged, after everything pending: control segments,
        other protocols and packets for other hosts keep their place relative to every flow's
        merged data (a SYN never overtakes the ACK that completed an earlier handshake)."""
        if chains:
            for c in chains.values():
                self._deliver(c)
            chains.clear()
        self.deliver(f)

    def _pure_ack(self, chains: dict[bytes, _Chain], key: bytes, f: memoryview, t: int, n: int,
                  thl: int, seq: int, ack: int, ip: int, verify: bool, addrs: int,
                  v6: bool) -> None:
        """A pure ACK (no data, no flags but ACK, no options but a timestamp).  Of a run of
        them in one batch with the same sequence number and rising acknowledgment numbers only
        the last is delivered: it says everything the earlier ones said (cumulative ACK, the
        newest window and timestamp).  Duplicate ACKs, SACK blocks and window updates without
        a new acknowledgment are never folded, so loss detection sees every one of them."""
        big = small = 0
        if verify:
            big = _from_bytes(f[t:], "big")
            small = addrs + 6 + n - t
        c = chains.get(key)
        if c is not None:
            if (c.acks and c.nxt == seq and c.sig[0] == ip and c.hlen == t + thl
                    and 0 < (ack - c.ack) & 0xFFFFFFFF < 0x80000000):
                c.frames.append(f)
                c.ack = ack
                c.sum += big
                c.small += small
                return
            del chains[key]
            self._deliver(c)
        if not (self.nic.promiscuous or (key[16:32] if v6 else key[4:8]) in self.local):
            self._alone(chains, f)
            return
        c = _Chain(f, self.nic.link_header_len, t + thl, seq, 0, (ip,), False, v6, big, small)
        c.ack = ack
        chains[key] = c

    def _deliver(self, c: _Chain) -> None:
        frames = c.frames
        if c.sum and (c.sum % 0xFFFF + c.small) % 0xFFFF:
            # some segment's checksum is wrong: hand them over one by one, to be verified (and
            # the bad ones counted and dropped) by the normal path
            self.stats["gro_bad_sum"] += 1
            for f in frames:
                self.deliver(f)
            return
        if len(frames) == 1:
            self.deliver(frames[0], True)
            return
        if c.acks:
            self.stats["gro_acks_folded"] += len(frames) - 1
            self.deliver(frames[-1], True)
            return
        st = self.stats
        st["gro_merged"] += 1
        st["gro_packets"] += len(frames)
        hlen = c.hlen
        l3 = c.l3
        buf = bytearray(frames[0][:hlen])  # the first segment's headers, patched
        size = hlen + c.total
        if c.v6:
            n = size - l3 - 40
            buf[l3 + 4] = n >> 8
            buf[l3 + 5] = n & 0xFF
            t = l3 + 40
        else:
            n = size - l3
            buf[l3 + 2] = n >> 8
            buf[l3 + 3] = n & 0xFF
            buf[l3 + 10:l3 + 12] = b"\x00\x00"
            buf[l3 + 10:l3 + 12] = checksum(memoryview(buf)[l3:l3 + 20]).to_bytes(2, "big")
            t = l3 + 20
        if c.psh:
            buf[t + 13] |= _PSH
        # one copy, into an immutable packet: TCP can keep the payload by reference
        packet = b"".join([buf, *[f[hlen:] for f in frames]])
        self.deliver(memoryview(packet), True)
