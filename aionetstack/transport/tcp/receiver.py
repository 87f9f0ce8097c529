"""The receive side: reassembly and the advertised window (RFC 9293 §3.8.6, §3.10.7.4).

State (RFC 9293 §3.3.1 names): ``irs``, ``rcv_nxt``; ``rcv_adv`` is the right edge of the window
last advertised, so ``rcv_wnd = rcv_adv - rcv_nxt``.

* In-order bytes go to ``buffer`` (unread data); the window offered to the peer is the free space
  ``capacity - len(buffer)``.  The right edge never moves left (RFC 9293 §3.8.6.2.1: shrinking the
  window is strongly discouraged), and only moves right by at least ``min(capacity/2, MSS)``
  (receiver SWS avoidance, RFC 9293 §3.8.6.2.2).
* With window scaling (RFC 7323 §2.3) the field carries ``window >> rcv_wscale``; the window is
  rounded *up* to a multiple of the scale so the advertised edge never shrinks by rounding (the
  buffer may overshoot ``capacity`` by less than ``1 << rcv_wscale``).
* Segments are trimmed to ``[rcv_nxt, rcv_adv)`` (duplicate and overlapping bytes dropped).  Bytes
  beyond ``rcv_nxt`` wait in a sorted list of disjoint, non-adjacent blocks, merged on insert
  (the first block touched grows in place, so a long run behind one hole costs O(bytes)); their
  total is bounded by the window, their number by ``max(64, capacity // 1024)`` (a segment that
  would open one more block is dropped: ``dropped.ooo-block-limit``).  A hole filling releases
  every contiguous block.  A FIN beyond a hole is remembered and consumed when the hole fills.
* Memory: ``buffer`` plus the out-of-order bytes never exceed the window last offered
  (``capacity`` plus less than ``1 << rcv_wscale`` of rounding), the per-connection cap.  Over
  all connections, ``account`` (the stack's ``TcpMemory``) caps out-of-order bytes at
  ``Limits.max_ooo_bytes`` and everything buffered at ``Limits.max_buffer_bytes``: a segment
  that would add out-of-order bytes past either is dropped (``dropped.ooo-budget``) -- queued
  blocks are never dropped (no reneging on SACKed data, RFC 2018 §8), and in-order data is
  always taken since it lies inside the window already offered (RFC 9293 §3.8.6.2.1).
  ``release`` returns the connection's bytes to the budget when it reaches CLOSED.
* ``sack_blocks`` reports the out-of-order blocks for RFC 2018 SACK options, the block holding
  the most recently received segment first, the rest most recently changed first (RFC 2018 §4).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

from aionetstack.stack.limits import TcpMemory
from aionetstack.stack.stats import Counters
from aionetstack.transport.tcp.bytequeue import ByteQueue
from aionetstack.wire.seqnum import MASK, seq_add, seq_le, seq_lt, seq_sub

_HALF: Final = 0x80000000

#: Out-of-order blocks kept per connection: ``max(MIN_OOO_BLOCKS, capacity // 1024)`` (256 for
#: the default 256 KiB buffer -- a full window of 1460-byte segments has at most 180 holes).
MIN_OOO_BLOCKS: Final = 64


class _Block:
    """A run of out-of-order bytes starting at sequence number ``seq``."""

    __slots__ = ("data", "seq", "stamp")

    def __init__(self, seq: int, data: bytearray, stamp: int) -> None:
        self.seq = seq
        self.data = data
        self.stamp = stamp  # when a segment last landed in this block (for SACK order)


class Receiver:
    __slots__ = ("account", "buffer", "bytes_received", "capacity", "dsack", "fin_received",
                 "fin_seq",
                 "irs", "last_sack", "mss", "ooo", "ooo_bytes", "ooo_dropped", "rcv_adv",
                 "rcv_nxt", "rcv_wscale", "stats")

    def __init__(self, capacity: int, rcv_wscale: int) -> None:
        self.capacity = capacity
        self.rcv_wscale = rcv_wscale
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.mss = 536
        self.buffer = ByteQueue()
        self.ooo: list[_Block] = []  # disjoint, not adjacent, sorted by sequence number
        self.ooo_bytes = 0
        self.ooo_dropped = 0  # segments refused by the out-of-order block limit or budget
        self.stats: Counters | None = None  # the stack's TCP counters, for those limits
        self.account: TcpMemory | None = None  # the stack's TCP memory (Limits.max_ooo_bytes)
        self.fin_seq: int | None = None  # a FIN seen but not yet in order
        self.fin_received = False
        self.bytes_received = 0
        self.last_sack = 0  # counts out-of-order segments: the stamp of the latest block
        self.dsack: tuple[int, int] | None = None  # a duplicate to report once (RFC 2883)

    def start(self, irs: int) -> None:
        self.irs = irs
        self.rcv_nxt = seq_add(irs, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, min(self._free(), 0xFFFF))  # the SYN's window

    @property
    def rcv_wnd(self) -> int:
        d = (self.rcv_adv - self.rcv_nxt) & MASK
        return 0 if d & _HALF else d  # max(seq_sub(rcv_adv, rcv_nxt), 0)

    # -- window ------------------------------------------------------------------------------
    def _free(self) -> int:
        free = self.capacity - self.buffer.nbytes
        return free if free > 0 else 0

    def max_window(self) -> int:
        """The largest window that can be offered: the buffer, or what the field can carry."""
        return min(self.capacity, 0xFFFF << self.rcv_wscale)

    def window_increase(self) -> int:
        """How far the right edge would move if a window were advertised now (SWS-filtered)."""
        # the arithmetic of seq_add / seq_sub, inline: this runs for every segment sent
        free = self.capacity - self.buffer.nbytes
        cap = 0xFFFF << self.rcv_wscale
        offer = 0 if free <= 0 else free if free < cap else cap
        grow = (self.rcv_nxt + offer - self.rcv_adv) & MASK  # right edge - rcv_adv
        if grow & _HALF:
            return 0
        half = self.capacity // 2
        if grow < (half if half < self.mss else self.mss):
            return 0
        return grow

    def advertise(self, syn: bool = False) -> int:
        """The window field for an outgoing segment; moves ``rcv_adv``."""
        nxt = self.rcv_nxt
        if syn:
            wnd = min(self._free(), 0xFFFF)
            self.rcv_adv = (nxt + wnd) & MASK
            return wnd
        adv = self.rcv_adv
        grow = self.window_increase()
        if grow > 0:
            adv = (adv + grow) & MASK
        wnd = (adv - nxt) & MASK
        if wnd & _HALF:
            wnd = 0
        scale = self.rcv_wscale
        field = (wnd + (1 << scale) - 1) >> scale
        if field > 0xFFFF:
            field = 0xFFFF
        # never behind rcv_nxt: field << scale < 2**30
        self.rcv_adv = (nxt + (field << scale)) & MASK
        return field

    # -- data ----------------------------------------------------------------------------------
    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 §3.10.7.4 segment acceptability test.  ``RCV.NXT =< x < RCV.NXT+RCV.WND``
        is ``(x - RCV.NXT) mod 2**32 < RCV.WND`` (``seq_in_window``; the window is < 2**31)."""
        nxt = self.rcv_nxt
        wnd = (self.rcv_adv - nxt) & MASK
        if wnd == 0 or wnd & _HALF:  # no window
            return seq == nxt  # allowance for ACK/RST/FIN processing; the text is trimmed
        if ((seq - nxt) & MASK) < wnd:
            return True
        return seg_len > 0 and ((seq + seg_len - 1 - nxt) & MASK) < wnd

    def on_data(self, seq: int, data: memoryview, fin: bool) -> tuple[int, bool]:
        """Take a segment's text (and FIN).  Returns (bytes now readable in order, out_of_order)."""
        nxt = self.rcv_nxt
        off = (nxt - seq) & MASK  # seq_sub(nxt, seq), inline: this runs for every segment
        if off & _HALF:
            off -= 0x100000000
        if off > 0:
            self.duplicate(seq, min(off, len(data)))
            if off >= len(data) + (1 if fin else 0):
                return 0, False  # a pure duplicate
            data = data[off:]
            seq = nxt
        room = (self.rcv_adv - seq) & MASK  # seq_sub(rcv_adv, seq)
        if room & _HALF:
            room -= 0x100000000
        if len(data) > room:
            data = data[:max(room, 0)]
            fin = False
        if fin and self.fin_received:
            fin = False
        if seq != nxt:
            if data:
                self._ooo_insert(seq, data)
            if fin:
                self.fin_seq = seq_add(seq, len(data))
            return 0, bool(data) or fin
        delivered = len(data)
        self.buffer.append(data)
        self.rcv_nxt = nxt = (nxt + delivered) & MASK
        if fin:
            self.fin_seq = nxt
        filled = False
        moved = 0  # out-of-order bytes dropped from the queue (moved to ``buffer`` or stale)
        while self.ooo and seq_le(self.ooo[0].seq, nxt):
            blk = self.ooo.pop(0)
            moved += len(blk.data)
            skip = seq_sub(nxt, blk.seq)
            if skip < len(blk.data):
                self.buffer.append(memoryview(blk.data)[skip:])
                delivered += len(blk.data) - skip
                nxt = seq_add(nxt, len(blk.data) - skip)
            filled = True
        self.rcv_nxt = nxt
        self.bytes_received += delivered
        self.ooo_bytes -= moved
        acct = self.account
        if acct is not None:
            if moved:
                acct.add_ooo(-moved)
            acct.add(delivered)
        if self.fin_seq is not None and not self.fin_received and self.fin_seq == nxt:
            self.fin_received = True
            self.rcv_nxt = seq_add(nxt, 1)
            self._drop_ooo()
        return delivered, filled

    def _drop_ooo(self) -> None:
        """Forget every out-of-order block (and give their bytes back to the budget)."""
        if self.account is not None:
            self.account.add_ooo(-self.ooo_bytes)
        self.ooo.clear()
        self.ooo_bytes = 0

    def release(self) -> None:
        """The connection reached CLOSED: give everything back to the stack's budget.  Unread
        in-order bytes stay readable but are no longer accounted (idempotent)."""
        acct = self.account
        if acct is not None:
            self._drop_ooo()
            acct.add(-len(self.buffer))
            self.account = None

    def _ooo_insert(self, seq: int, data: memoryview) -> None:
        """Add ``data`` at ``seq`` (beyond RCV.NXT) to the out-of-order blocks, merging.

        The block that ``data`` touches first is extended in place, so a run of segments
        arriving in order behind a hole costs O(bytes), not O(bytes**2).  Where the new bytes
        overlap stored ones the stored ones are kept (a correct sender sends the same bytes).
        """
        nxt = self.rcv_nxt
        blocks = self.ooo
        s = seq_sub(seq, nxt)
        e = s + len(data)
        n = len(blocks)
        if n >= max(MIN_OOO_BLOCKS, self.capacity // 1024) and not self._touches(s, e):
            # A peer sending tiny segments with gaps between them would make a block per byte:
            # ~150 bytes of bookkeeping per byte of data and O(n) work per segment.  Refuse new
            # blocks past the limit (in O(log n)); a real sender retransmits.
            self._refuse("ooo-block-limit")
            return
        i = 0
        while i < n and seq_sub(blocks[i].seq, nxt) + len(blocks[i].data) < s:
            i += 1
        j = i
        while j < n and seq_sub(blocks[j].seq, nxt) <= e:
            j += 1
        acct = self.account
        if acct is not None and not acct.ooo_fits(e - s):
            # The stack's out-of-order budget (Limits.max_ooo_bytes, or max_buffer_bytes) is
            # spent: refuse the bytes this segment adds.  Nothing already queued is dropped, so
            # nothing we SACKed is reneged on (RFC 2018 §8); in-order data is still taken, and
            # the sender retransmits what we refused.
            new = e - s
            for b in blocks[i:j]:
                bs = seq_sub(b.seq, nxt)
                new -= max(min(e, bs + len(b.data)) - max(s, bs), 0)
            if new > 0 and not acct.ooo_fits(new):
                self._refuse("ooo-budget")
                return
        self.last_sack += 1
        if i == j:  # touches nothing: a new block
            blocks.insert(i, _Block(seq, bytearray(data), self.last_sack))
            self.ooo_bytes += len(data)
            if acct is not None:
                acct.add_ooo(len(data))
            return
        removed = sum(len(b.data) for b in blocks[i:j])
        first = blocks[i]
        first_s = seq_sub(first.seq, nxt)
        if first_s <= s:
            merged, k = first, i + 1
            cur = first_s + len(first.data)
        else:
            merged, k = _Block(seq, bytearray(data[:first_s - s]), 0), i
            cur = first_s
        out = merged.data
        for b in blocks[k:j]:
            bs = seq_sub(b.seq, nxt)
            if cur < bs:
                out += data[cur - s:bs - s]
                cur = bs
            be = bs + len(b.data)
            if be > cur:
                out += memoryview(b.data)[cur - bs:]
                cur = be
        if cur < e:
            out += data[cur - s:]
        blocks[i:j] = [merged]
        self.ooo_bytes += len(out) - removed
        if acct is not None:
            acct.add_ooo(len(out) - removed)
        merged.stamp = self.last_sack

    def _refuse(self, reason: str) -> None:
        """An out-of-order segment was not queued because of a limit."""
        self.ooo_dropped += 1
        if self.stats is not None:
            self.stats.drop(reason)

    def _touches(self, s: int, e: int) -> bool:
        """Whether ``[s, e]`` (offsets from RCV.NXT) overlaps or abuts a stored block."""
        nxt = self.rcv_nxt
        blocks = self.ooo
        k = bisect_right(blocks, s, key=lambda b: seq_sub(b.seq, nxt))
        if k and seq_sub(blocks[k - 1].seq, nxt) + len(blocks[k - 1].data) >= s:
            return True
        return k < len(blocks) and seq_sub(blocks[k].seq, nxt) <= e

    def duplicate(self, seq: int, n: int) -> None:
        """``n`` bytes from ``seq`` arrived again: below RCV.NXT they go in a D-SACK block, the
        first of the next ACK (RFC 2883 §4)."""
        end = seq_add(seq, n)
        if n > 0 and seq_lt(seq, self.rcv_nxt):
            self.dsack = (seq, end if seq_le(end, self.rcv_nxt) else self.rcv_nxt)

    def sack_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """SACK blocks for an ACK (RFC 2018 §4): a pending D-SACK block first (RFC 2883 §4,
        reported once), then the block holding the latest segment, then the others from the
        most recently changed (so the sender sees each block repeated in several ACKs)."""
        recent = sorted(self.ooo, key=lambda b: -b.stamp)
        out = [(b.seq, seq_add(b.seq, len(b.data))) for b in recent]
        if self.dsack is not None:
            out.insert(0, self.dsack)
            self.dsack = None
        return tuple(out[:limit])

    def read(self, n: int, whole: bool = True) -> bytes:
        """Take up to ``n`` unread bytes (all with ``n < 0``).  With ``whole=False`` a large
        received segment at the front comes out on its own, uncopied, even if more follows."""
        out = self.buffer.pop(n) if whole else self.buffer.pop_chunk(n)
        if self.account is not None:
            self.account.add(-len(out))
        return out

    def read_into(self, out: bytearray | memoryview) -> int:
        """Move up to ``len(out)`` unread bytes into ``out``; returns how many."""
        n = self.buffer.pop_into(out)
        if self.account is not None:
            self.account.add(-n)
        return n
