"""32-bit sequence number arithmetic (RFC 9293 §3.4, RFC 1982 serial numbers).

All comparisons are modulo 2**32: ``a`` is "less than" ``b`` when ``b - a`` taken modulo 2**32
lies in ``(0, 2**31)``.  Every sequence comparison in the TCP engine is one of these; the
per-segment hot paths (``Sender.output``/``_send``/``on_ack``) spell a few of them out inline,
each with a comment naming the function it stands for.
"""

from __future__ import annotations

from typing import Final

MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance ``a - b`` in ``[-2**31, 2**31)``."""
    d = (a - b) & MASK
    return d - 0x100000000 if d & _HALF else d


def seq_lt(a: int, b: int) -> bool:
    return 0 < ((b - a) & MASK) < _HALF


def seq_le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < _HALF


def seq_gt(a: int, b: int) -> bool:
    return 0 < ((a - b) & MASK) < _HALF


def seq_ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < _HALF


def seq_in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` modulo 2**32 (RFC 9293 §3.10.7.4 acceptability test)."""
    return ((x - start) & MASK) < size


def seq_max(a: int, b: int) -> int:
    return b if seq_lt(a, b) else a


def seq_min(a: int, b: int) -> int:
    return a if seq_lt(a, b) else b
