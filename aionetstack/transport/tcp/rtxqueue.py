"""The retransmission queue of a SACK connection: what was sent, when, and what became of it.

Entries cover ``[SND.UNA, SND.MAX)`` exactly, in sequence order, without gaps or overlap. An entry
is one transmission -- a segment or a super-segment (GSO) -- with its last transmission time, a
transmission number (``order``: which of two transmissions went later, even within one clock tick)
and three flags (Linux's ``TCPCB_SACKED_ACKED``, ``TCPCB_LOST``, ``TCPCB_SACKED_RETRANS``):

* ``SACKED``: the receiver holds it (RFC 2018); never also ``LOST`` or ``RETRANS``;
* ``LOST``: presumed lost (RACK, RFC 8985 §6.2, or the timeout);
* ``RETRANS``: retransmitted and the retransmission is still presumed in flight.

An entry splits when a SACK block, a cumulative ACK or a retransmission covers part of it.  Byte
counters per flag give the RFC 6675 ``pipe`` in O(1): ``flight - sacked - lost + retrans``
(a lost, retransmitted entry counts once, a retransmitted entry not presumed lost twice, as
RFC 6675 §4 SetPipe does).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

from aionetstack.wire.seqnum import _HALF, MASK, seq_gt, seq_lt, seq_sub

SACKED: Final = 1
LOST: Final = 2
RETRANS: Final = 4

Delivered = tuple[int, float, int, bool]  # (order, xmit time, end sequence, retransmitted)


class Seg:
    __slots__ = ("end", "flags", "order", "start", "xmit")

    def __init__(self, start: int, end: int, xmit: float, order: int, flags: int = 0) -> None:
        self.start = start
        self.end = end
        self.xmit = xmit  # time of the latest transmission
        self.order = order  # number of the latest transmission (sending order)
        self.flags = flags

    def __len__(self) -> int:
        return seq_sub(self.end, self.start)

    def __repr__(self) -> str:
        f = "".join(c for c, b in (("S", SACKED), ("L", LOST), ("R", RETRANS)) if self.flags & b)
        return f"<Seg {self.start}-{self.end} @{self.xmit:.4f}#{self.order} {f}>"


class RtxQueue:
    __slots__ = ("lost", "order", "retrans", "sacked", "segs")

    def __init__(self) -> None:
        self.segs: list[Seg] = []
        self.order = 0
        self.sacked = 0
        self.lost = 0
        self.retrans = 0

    def clear(self) -> None:
        self.segs = []
        self.sacked = self.lost = self.retrans = self.order = 0

    def _count(self, seg: Seg, sign: int) -> None:
        n = sign * len(seg)
        f = seg.flags
        if f & SACKED:
            self.sacked += n
        if f & LOST:
            self.lost += n
        if f & RETRANS:
            self.retrans += n

    def _set(self, seg: Seg, flags: int) -> None:
        self._count(seg, -1)
        seg.flags = flags
        self._count(seg, 1)

    def _index(self, seq: int) -> int:
        """Index of the entry holding ``seq`` (len(segs) past the end)."""
        segs = self.segs
        base = segs[0].start
        return bisect_right(segs, seq_sub(seq, base), key=lambda s: seq_sub(s.start, base)) - 1

    def split(self, seq: int) -> int:
        """Make ``seq`` an entry boundary; the index of the entry starting there."""
        segs = self.segs
        if not segs or not seq_gt(seq, segs[0].start):
            return 0
        if not seq_lt(seq, segs[-1].end):
            return len(segs)
        i = self._index(seq)
        s = segs[i]
        if s.start == seq:
            return i
        tail = Seg(seq, s.end, s.xmit, s.order, s.flags)
        s.end = seq  # the counters are unchanged: the bytes only moved to two entries
        segs.insert(i + 1, tail)
        return i + 1

    # -- events --------------------------------------------------------------------------------
    def sent(self, seq: int, end: int, now: float) -> None:
        """New data ``[seq, end)`` went out (``seq`` is the old SND.MAX)."""
        segs = self.segs
        self.order += 1
        if segs and segs[-1].flags == 0 and segs[-1].order == self.order - 1:
            segs[-1].end = end  # sent right after the last entry: one entry
            segs[-1].order = self.order
        else:
            segs.append(Seg(seq, end, now, self.order))

    def resent(self, seq: int, end: int, now: float) -> int:
        """``[seq, end)`` was retransmitted; returns the bytes newly marked ``RETRANS``."""
        if not self.segs or not seq_lt(seq, end):
            return 0
        i, j = self.split(seq), self.split(end)
        n = 0
        self.order += 1
        for s in self.segs[i:j]:
            if s.flags & SACKED:
                continue
            s.xmit = now
            s.order = self.order
            if not s.flags & RETRANS:
                n += len(s)
                self._set(s, s.flags | RETRANS)
        return n

    def ack(self, una: int) -> list[Delivered]:
        """Cumulative ACK up to ``una``: drop those entries; returns ``(xmit, end,
        retransmitted)`` of the ones not SACKed before (newly delivered)."""
        segs = self.segs
        if not segs or not 0 < (una - segs[0].start) & MASK < _HALF:  # seq_gt(una, start)
            return []
        # everything acknowledged (the usual case) needs no split
        k = len(segs) if una == segs[-1].end else self.split(una)
        gone = segs[:k]
        del segs[:k]
        out = []
        for s in gone:
            if s.flags:  # (an entry without flags counts in no counter)
                self._count(s, -1)
            if not s.flags & SACKED:
                out.append((s.order, s.xmit, s.end, bool(s.flags & RETRANS)))
        return out

    def sack(self, start: int, end: int) -> list[Delivered]:
        """A SACK block ``[start, end)`` (already clipped to ``[SND.UNA, SND.MAX)``); returns
        ``(xmit, end, retransmitted)`` of the entries newly SACKed."""
        if not self.segs or not seq_lt(start, end):
            return []
        i, j = self.split(start), self.split(end)
        out = []
        for s in self.segs[i:j]:
            if not s.flags & SACKED:
                out.append((s.order, s.xmit, s.end, bool(s.flags & RETRANS)))
                self._set(s, SACKED)
        return out

    def mark_lost(self, s: Seg) -> None:
        """RFC 8985 §6.2 step 5: lost, and a retransmission of it no longer in flight."""
        self._set(s, (s.flags | LOST) & ~RETRANS)

    def mark_all_lost(self, renege: bool = False) -> None:
        """After a retransmission timeout every entry not SACKed is lost (RFC 8985 §6.3); with
        ``renege`` SACKed ones too (the receiver may have dropped them, RFC 2018 §8)."""
        for s in self.segs:
            if renege or not s.flags & SACKED:
                self._set(s, LOST)

    def first_lost(self) -> Seg | None:
        """The lowest entry presumed lost and not yet retransmitted (RFC 6675 NextSeg rule 1)."""
        if self.lost:
            for s in self.segs:
                if s.flags & (LOST | RETRANS) == LOST:
                    return s
        return None

    def pipe(self, flight: int) -> int:
        """RFC 6675 §4 SetPipe, in bytes."""
        return max(flight - self.sacked - self.lost + self.retrans, 0)

    def end_seq(self) -> int | None:
        return self.segs[-1].end if self.segs else None

    def covered(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` lies inside the queue."""
        segs = self.segs
        return bool(segs) and not seq_lt(start, segs[0].start) and not seq_gt(
            end, segs[-1].end)

    def check(self, una: int, snd_max: int) -> None:  # pragma: no cover - test aid
        """Assert the invariants (tests)."""
        cur = una
        counts = [0, 0, 0]
        for s in self.segs:
            assert s.start == cur, (s, cur)
            assert seq_lt(s.start, s.end), s
            assert not (s.flags & SACKED and s.flags & (LOST | RETRANS)), s
            for k, b in enumerate((SACKED, LOST, RETRANS)):
                if s.flags & b:
                    counts[k] += len(s)
            cur = s.end
        assert not self.segs or cur == snd_max, (cur, snd_max)
        assert counts == [self.sacked, self.lost, self.retrans], (counts, self)
