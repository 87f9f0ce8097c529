"""IPv4 header parsing and building (RFC 791, RFC 1122 §3.2.1).

Theory of operation: ``parse_ipv4`` validates the fixed header and hands back the payload as a
zero-copy ``memoryview`` slice of exactly ``total_length - header_len`` bytes, so Ethernet
minimum-size padding after the datagram is dropped here (the IP total length field, not the
link length, delimits the datagram).  Checks, in order:

* version == 4 (RFC 1122 §3.2.1.1: a datagram whose version is not 4 MUST be silently
  discarded) -> ``bad-version``;
* IHL >= 5 and total length within [header length, buffer length] -> ``bad-length``; a buffer too
  short for the fixed header or for IHL*4 bytes -> ``truncated``;
* header checksum (RFC 1122 §3.2.1.2: a host MUST verify it and silently discard on failure)
  -> ``bad-checksum``;
* option syntax (RFC 791 §3.1 "Options"): EOL ends the list, NOP is one byte, every other option
  is type+length with length >= 2 and not running past the header -> ``bad-option``.  Option
  semantics are ignored (RFC 1122 §3.2.1.8: options not understood MUST be ignored), so
  record-route, timestamps and source routes are skipped; the raw bytes stay in ``options``.

``frag_offset`` is in bytes (the wire field times 8).  ``pack_ipv4`` writes a header into a
caller-provided buffer, pads options to a 4-byte boundary with EOL, and fills the checksum.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.checksum import checksum as _checksum
from aionetstack.wire.checksum import verify as _verify
from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview

IPV4_HLEN: Final = 20
IPV4_MAX_HLEN: Final = 60

IPOPT_EOL: Final = 0
IPOPT_NOP: Final = 1
IPOPT_RR: Final = 7
IPOPT_TS: Final = 68
IPOPT_LSRR: Final = 131
IPOPT_SSRR: Final = 137
IPOPT_RA: Final = 148

_FLAG_DF: Final = 0x4000
_FLAG_MF: Final = 0x2000
_OFFSET_MASK: Final = 0x1FFF

_HDR: Final = struct.Struct("!BBHHHBBH4s4s")
_U16: Final = struct.Struct("!H")
_NO_OPTIONS: Final = memoryview(b"")
_from_bytes = int.from_bytes


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class IPv4Header:
    tos: int
    total_length: int
    ident: int
    df: bool
    mf: bool
    frag_offset: int
    """Fragment offset in bytes (wire field * 8)."""
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes
    options: _MemoryView
    header_len: int
    payload: _MemoryView

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0


def _check_options(opts: memoryview) -> None:
    """Walk option syntax (RFC 791 §3.1); at most 40 bytes, so a byte loop is cheap."""
    end = len(opts)
    i = 0
    while i < end:
        kind = opts[i]
        if kind == IPOPT_EOL:
            return
        if kind == IPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise MalformedPacket("bad-option", f"IPv4 option {kind} has no length byte")
        olen = opts[i + 1]
        if olen < 2 or i + olen > end:
            raise MalformedPacket("bad-option", f"IPv4 option {kind} length {olen} at {i}")
        i += olen


def parse_ipv4(view: memoryview, verify_checksum: bool = True) -> IPv4Header:
    """Parse and validate an IPv4 header; ``payload`` is a slice of ``view``."""
    n = len(view)
    if n < IPV4_HLEN:
        if n and view[0] >> 4 != 4:
            raise MalformedPacket("bad-version", f"version {view[0] >> 4}")
        raise MalformedPacket("truncated", f"IPv4 packet of {n} bytes")
    (vihl, tos, total_length, ident, frag, ttl, proto, csum, src, dst) = _HDR.unpack_from(view, 0)
    if vihl >> 4 != 4:
        raise MalformedPacket("bad-version", f"version {vihl >> 4}")
    hl = (vihl & 0x0F) << 2
    if hl < IPV4_HLEN:
        raise MalformedPacket("bad-length", f"IHL {hl >> 2}")
    if hl > n:
        raise MalformedPacket("truncated", f"header of {hl} bytes in {n}")
    if total_length < hl or total_length > n:
        raise MalformedPacket("bad-length", f"total length {total_length} (header {hl}, have {n})")
    if verify_checksum and not _verify(view[:hl]):
        raise MalformedPacket("bad-checksum", "IPv4 header")
    if hl > IPV4_HLEN:
        options = view[IPV4_HLEN:hl]
        _check_options(options)
    else:
        options = _NO_OPTIONS
    return IPv4Header(
        tos,
        total_length,
        ident,
        bool(frag & _FLAG_DF),
        bool(frag & _FLAG_MF),
        (frag & _OFFSET_MASK) << 3,
        ttl,
        proto,
        csum,
        src,
        dst,
        options,
        hl,
        view[hl:total_length],
    )


def pack_ipv4(
    buf: WritableBuffer,
    offset: int,
    *,
    src: bytes,
    dst: bytes,
    protocol: int,
    payload_len: int,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    df: bool = False,
    mf: bool = False,
    frag_offset: int = 0,
    options: bytes | bytearray | memoryview = b"",
) -> int:
    """Write an IPv4 header (checksum filled) at ``buf[offset:]``; returns the header length.

    ``frag_offset`` is in bytes and must be a multiple of 8; ``options`` are padded with EOL to
    a 4-byte boundary and may not exceed 40 bytes.
    """
    olen = len(options)
    if olen:
        padded = (olen + 3) & ~3
        if padded > IPV4_MAX_HLEN - IPV4_HLEN:
            raise ValueError(f"IPv4 options too long ({olen} bytes)")
    else:
        padded = 0
    hl = IPV4_HLEN + padded
    total = hl + payload_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram too long ({total} bytes)")
    if frag_offset & 7 or not 0 <= frag_offset <= _OFFSET_MASK << 3:
        raise ValueError(f"bad fragment offset {frag_offset}")
    frag = (frag_offset >> 3) | (_FLAG_DF if df else 0) | (_FLAG_MF if mf else 0)
    if not olen:
        return pack_ipv4_plain(buf, offset, src, dst, protocol, payload_len, ttl, tos, ident, frag)
    _HDR.pack_into(
        buf, offset, 0x40 | (hl >> 2), tos, total, ident, frag, ttl, protocol, 0, src, dst
    )
    if olen:
        start = offset + IPV4_HLEN
        buf[start : start + olen] = options
        if padded != olen:
            buf[start + olen : offset + hl] = bytes(padded - olen)
    _U16.pack_into(buf, offset + 10, _checksum(memoryview(buf)[offset : offset + hl]))
    return hl


def pack_ipv4_plain(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    protocol: int,
    payload_len: int,
    ttl: int,
    tos: int,
    ident: int,
    frag: int,
) -> int:
    """The fast path of ``pack_ipv4``: a 20-byte header without options, no argument checks.

    ``frag`` is the raw flags/fragment-offset field (``0x4000`` for DF).  The checksum comes from
    header arithmetic instead of re-reading the packed bytes: the one's-complement sum of the ten
    16-bit words modulo 0xffff, where an address read as one integer is congruent to the sum of
    its words.  The version byte makes the header non-zero, so a zero sum means 0xffff and the
    checksum is 0 (what RFC 1071 word-by-word summing gives).
    """
    total = IPV4_HLEN + payload_len
    p = (
        0x4500 + tos + total + ident + frag + (ttl << 8) + protocol
        + _from_bytes(src, "big") + _from_bytes(dst, "big")
    ) % 0xFFFF
    _HDR.pack_into(
        buf, offset, 0x45, tos, total, ident, frag, ttl, protocol, 0xFFFF - p if p else 0, src, dst
    )
    return IPV4_HLEN


def ipv4_is_multicast(addr: bytes) -> bool:
    """224.0.0.0/4 (RFC 5771)."""
    return addr[0] & 0xF0 == 0xE0


def ipv4_is_broadcast_limited(addr: bytes) -> bool:
    """255.255.255.255 (RFC 919, RFC 1122 §3.2.1.3)."""
    return addr == b"\xff\xff\xff\xff"


def ipv4_is_unspecified(addr: bytes) -> bool:
    return addr == b"\x00\x00\x00\x00"


def ipv4_is_loopback(addr: bytes) -> bool:
    """127.0.0.0/8 (RFC 1122 §3.2.1.3 (g))."""
    return addr[0] == 127
