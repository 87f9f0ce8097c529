"""RFC 1071 Internet checksum without a per-word Python loop.

Theory: a byte string read as one big-endian integer is a number in base 2**16 whose digits are
its 16-bit words.  Because 2**16 == 1 (mod 0xffff), that integer is congruent to the sum of its
words modulo 0xffff, and the one's-complement sum *is* the word sum modulo 0xffff (with 0xffff
standing for a non-zero multiple).  ``int.from_bytes`` and ``%`` run in C, so checksumming a
64 KiB segment costs two C calls.

``partial`` values are integers in ``[0, 0xffff)`` (0 meaning "0 or 0xffff"); they add freely and
are folded with ``% 0xffff``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Final

_from_bytes = int.from_bytes

_UNSET: Final = object()
np: Any = _UNSET  # numpy, loaded on first use by ``piece_sums`` (None: not installed)


def _numpy() -> Any:
    global np
    if np is _UNSET:
        # imported by name, not statically: numpy is optional, and the compiled core's build
        # (setup.py) type-checks without site-packages, so it must not depend on numpy's stubs
        try:
            np = import_module("numpy")
        except ImportError:  # pragma: no cover - the tests force ``np = None`` instead
            np = None
    return np

Buffer = bytes | bytearray | memoryview

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58


def ones_sum(data: Buffer) -> int:
    """Partial one's-complement sum of ``data`` (odd lengths padded with a zero byte)."""
    n = _from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """Partial sum of the IPv4 (RFC 793 §3.1) or IPv6 (RFC 8200 §8.1) pseudo-header.

    Both layouts reduce to the same sum: the addresses, the upper-layer protocol and length.
    """
    return (_from_bytes(src, "big") + _from_bytes(dst, "big") + protocol + length) % 0xFFFF


def finish(partial: int, nonzero: bool = True) -> int:
    """Turn a partial sum into the 16-bit checksum field value.

    ``nonzero`` says whether the summed data had any non-zero word: the one's-complement sum of
    such data is 0xffff (not 0) when ``partial`` is 0, which makes the checksum 0x0000, exactly
    what a word-by-word RFC 1071 implementation produces.
    """
    partial %= 0xFFFF
    if partial == 0 and nonzero:
        return 0
    return ~partial & 0xFFFF


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum of ``data`` plus an ``initial`` partial sum (e.g. a pseudo-header)."""
    n = _from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return finish(n % 0xFFFF + initial, bool(n or initial))


def verify(data: Buffer, initial: int = 0) -> bool:
    """True when ``data`` (checksum field included) plus ``initial`` sums to 0xffff (RFC 1071)."""
    n = _from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return (n % 0xFFFF + initial) % 0xFFFF == 0 and bool(n or initial)


def transport_checksum(src: bytes, dst: bytes, protocol: int, segment: Buffer) -> int:
    """Checksum for a UDP/TCP/ICMPv6 ``segment`` whose checksum field is zero."""
    return checksum(segment, pseudo_header_sum(src, dst, protocol, len(segment)))


def transport_verify(src: bytes, dst: bytes, protocol: int, segment: Buffer) -> bool:
    """Verify a UDP/TCP/ICMPv6 ``segment`` including its checksum field."""
    return verify(segment, pseudo_header_sum(src, dst, protocol, len(segment)))


def piece_sums(data: Buffer, size: int) -> list[int]:
    """Partial sums of ``data`` cut into ``size``-byte pieces (the last may be shorter), each
    congruent (mod 0xffff) to that piece's one's-complement sum, odd pieces padded (RFC 1071).

    With numpy installed, whole pieces of even size are summed in one vectorised call, which
    is what makes software segmentation's per-piece checksums cheap; otherwise each piece costs
    one ``int.from_bytes`` and one modulo.
    """
    n = len(data)
    full = n // size
    out: list[int] = []
    done = 0
    numpy = np if np is not _UNSET else _numpy()
    if numpy is not None and full > 2 and not size & 1:
        words = numpy.frombuffer(data, dtype=">u2", count=full * size // 2)
        out = words.reshape(full, size // 2).sum(axis=1, dtype=numpy.uint64).tolist()
        done = full * size
    mv = memoryview(data)
    for start in range(done, n, size):
        piece = mv[start:start + size]
        v = _from_bytes(piece, "big")
        if len(piece) & 1:
            v <<= 8
        out.append(v % 0xFFFF)
    return out
