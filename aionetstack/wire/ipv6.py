"""IPv6 header, extension-header walk and address helpers (RFC 8200, RFC 4291).

Theory of operation: ``parse_ipv6`` validates the 40-byte fixed header and returns the payload as
a zero-copy slice of exactly ``payload_length`` bytes (trailing link padding dropped).
``parse_ipv6_chain`` then walks the extension headers (RFC 8200 §4) from that payload:

* Hop-by-Hop (0) is allowed only directly after the fixed header (RFC 8200 §4.1); seen anywhere
  else it is ``bad-header`` (the network layer answers with a Parameter Problem).
* Hop-by-Hop and Destination Options carry TLV options (RFC 8200 §4.2): Pad1 is a single zero
  byte, everything else is type+length.  Options running past their header are ``bad-option``.
  An unrecognized option is skipped when its two high-order "action" bits are 00; otherwise the
  walk stops and reports ``bad_option = (action, pointer)`` so the caller can discard, and for
  actions 2/3 send ICMPv6 Parameter Problem code 2 with that pointer (RFC 8200 §4.2).
* Routing headers are recorded as ``(routing_type, segments_left)``; the caller applies RFC 8200
  §4.4 (unrecognized type with segments left != 0 -> Parameter Problem code 0).
* The walk stops at a Fragment header (RFC 8200 §4.5), reporting it in ``fragment`` with the
  fragmentable part as a zero-copy slice, or at the first upper-layer / unknown / No Next Header
  value.  AH and ESP are not walked (IPsec is unsupported) and end the walk like unknown values.
* Any header running off the end of the payload is ``truncated``, and more than
  ``MAX_EXTENSION_HEADERS`` headers is ``bad-header``, so crafted chains cannot burn CPU.

Jumbograms (RFC 2675: payload length 0 plus a Jumbo Payload option) are ``unsupported``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview

IPV6_HLEN: Final = 40
IPV6_MIN_MTU: Final = 1280
MAX_EXTENSION_HEADERS: Final = 16

NH_HOPOPTS: Final = 0
NH_TCP: Final = 6
NH_UDP: Final = 17
NH_ROUTING: Final = 43
NH_FRAGMENT: Final = 44
NH_ESP: Final = 50
NH_AH: Final = 51
NH_ICMPV6: Final = 58
NH_NONE: Final = 59
NH_DSTOPTS: Final = 60

OPT_PAD1: Final = 0
OPT_PADN: Final = 1
OPT_ROUTER_ALERT: Final = 5
OPT_JUMBO: Final = 0xC2

FRAG_HLEN: Final = 8

_HDR: Final = struct.Struct("!IHBB16s16s")
_FRAG: Final = struct.Struct("!BBHI")
_OPTION_HEADERS: Final = frozenset((NH_HOPOPTS, NH_DSTOPTS, NH_ROUTING))
_NONZERO: Final = re.compile(rb"[^\x00]")

_UNSPECIFIED: Final = bytes(16)
_LOOPBACK: Final = bytes(15) + b"\x01"
_SOLICITED_PREFIX: Final = b"\xff\x02" + bytes(9) + b"\x01\xff"
_LINK_LOCAL_PREFIX: Final = b"\xfe\x80" + bytes(6)

ALL_NODES: Final = b"\xff\x02" + bytes(13) + b"\x01"
ALL_ROUTERS: Final = b"\xff\x02" + bytes(13) + b"\x02"


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class IPv6Header:
    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes
    payload: _MemoryView


@dataclass(slots=True)
class IPv6Fragment:
    next_header: int
    frag_offset: int
    """Offset of this fragment's data in bytes (wire field * 8)."""
    more: bool
    ident: int
    payload: _MemoryView
    """The fragmentable data following the fragment header."""
    unfragmentable_len: int
    """Offset of the fragment header in the IPv6 payload (= length of the unfragmentable part)."""


@dataclass(slots=True)
class IPv6Chain:
    protocol: int
    """Next-header value where the walk stopped (NH_FRAGMENT when it stopped at a fragment
    header; the extension header type when it stopped at a ``bad_option``)."""
    offset: int
    """Offset in the IPv6 payload of the upper-layer data (or fragment header)."""
    payload: _MemoryView
    fragment: IPv6Fragment | None = None
    routing: tuple[int, int] | None = None
    """(routing type, segments left) of the last routing header seen."""
    bad_option: tuple[int, int] | None = None
    """(action 1..3, pointer from the start of the IPv6 header) of an option demanding discard."""
    hop_by_hop_seen: bool = False
    nh_pointer: int = 6
    """Offset from the start of the IPv6 header of the Next Header field holding ``protocol``
    (the pointer for a Parameter Problem code 1, RFC 8200 §4)."""
    routing_offset: int = -1
    """Offset in the IPv6 payload of the last routing header (-1: none)."""
    ext_count: int = 0


def parse_ipv6(view: memoryview) -> IPv6Header:
    """Parse the fixed IPv6 header; ``payload`` is exactly ``payload_length`` bytes of ``view``."""
    n = len(view)
    if n < IPV6_HLEN:
        if n and view[0] >> 4 != 6:
            raise MalformedPacket("bad-version", f"version {view[0] >> 4}")
        raise MalformedPacket("truncated", f"IPv6 packet of {n} bytes")
    word, plen, nh, hlim, src, dst = _HDR.unpack_from(view, 0)
    if word >> 28 != 6:
        raise MalformedPacket("bad-version", f"version {word >> 28}")
    if plen == 0 and nh == NH_HOPOPTS and n > IPV6_HLEN and _has_jumbo(view[IPV6_HLEN:]):
        raise MalformedPacket("unsupported", "jumbogram")
    if plen > n - IPV6_HLEN:
        raise MalformedPacket("bad-length", f"payload length {plen}, have {n - IPV6_HLEN}")
    return IPv6Header(
        (word >> 20) & 0xFF,
        word & 0xFFFFF,
        plen,
        nh,
        hlim,
        src,
        dst,
        view[IPV6_HLEN : IPV6_HLEN + plen],
    )


def _has_jumbo(hbh: memoryview) -> bool:
    """True when a Hop-by-Hop header (possibly malformed) carries a Jumbo Payload option."""
    n = len(hbh)
    if n < 8:
        return False
    end = min(n, (hbh[1] + 1) << 3)
    try:
        _walk_options(hbh, 2, end, 0)
    except MalformedPacket as exc:
        return exc.reason == "unsupported"
    return False


def _walk_options(p: memoryview, i: int, end: int, base: int) -> tuple[int, int] | None:
    """Check the TLV options in ``p[i:end]`` (RFC 8200 §4.2).

    Returns ``(action, pointer)`` for the first unrecognized option whose action bits are not
    00, with ``pointer = base + offset of its type byte``; None when all options are acceptable.
    """
    while i < end:
        kind = p[i]
        if kind == OPT_PAD1:
            m = _NONZERO.search(p, i, end)  # skip a run of Pad1 bytes in C
            if m is None:
                return None
            i = m.start()
            continue
        if i + 2 > end:
            raise MalformedPacket("bad-option", f"option {kind} without length at {base + i}")
        nxt = i + 2 + p[i + 1]
        if nxt > end:
            raise MalformedPacket("bad-option", f"option {kind} runs past its header")
        if kind == OPT_JUMBO:
            raise MalformedPacket("unsupported", "jumbo payload option")
        action = kind >> 6
        if action and kind != OPT_PADN:
            return action, base + i
        i = nxt
    return None


def parse_ipv6_chain(hdr: IPv6Header) -> IPv6Chain:
    """Walk the extension headers of ``hdr`` up to the upper-layer header or a fragment header."""
    p = hdr.payload
    n = len(p)
    nh = hdr.next_header
    off = 0
    count = 0
    nh_pointer = 6
    routing: tuple[int, int] | None = None
    routing_offset = -1
    hbh = False
    while True:
        if nh in _OPTION_HEADERS:
            if nh == NH_HOPOPTS:
                if count:
                    # RFC 8200 §4.1: Hop-by-Hop is restricted to immediately after the IPv6 header.
                    raise MalformedPacket("bad-header", f"hop-by-hop header at {off}")
                hbh = True
            count += 1
            if count > MAX_EXTENSION_HEADERS:
                raise MalformedPacket("bad-header", "too many extension headers")
            if off + 8 > n:
                raise MalformedPacket("truncated", f"extension header {nh} at {off}")
            hlen = (p[off + 1] + 1) << 3
            if off + hlen > n:
                raise MalformedPacket("truncated", f"extension header {nh} of {hlen} at {off}")
            if nh == NH_ROUTING:
                routing = (p[off + 2], p[off + 3])
                routing_offset = off
            else:
                bad = _walk_options(p, off + 2, off + hlen, IPV6_HLEN)
                if bad is not None:
                    return IPv6Chain(
                        nh, off, p[off:], None, routing, bad, hbh, nh_pointer, routing_offset, count
                    )
            nh = p[off]
            nh_pointer = IPV6_HLEN + off
            off += hlen
            continue
        if nh == NH_FRAGMENT:
            count += 1
            if count > MAX_EXTENSION_HEADERS:
                raise MalformedPacket("bad-header", "too many extension headers")
            if off + FRAG_HLEN > n:
                raise MalformedPacket("truncated", f"fragment header at {off}")
            fnh, _reserved, fo, ident = _FRAG.unpack_from(p, off)
            frag = IPv6Fragment(fnh, fo & 0xFFF8, bool(fo & 1), ident, p[off + FRAG_HLEN :], off)
            return IPv6Chain(
                NH_FRAGMENT, off, p[off:], frag, routing, None, hbh, nh_pointer, routing_offset,
                count,
            )
        return IPv6Chain(
            nh, off, p[off:], None, routing, None, hbh, nh_pointer, routing_offset, count
        )


def pack_ipv6(
    buf: WritableBuffer,
    offset: int,
    *,
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_len: int,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> int:
    """Write a 40-byte IPv6 header at ``buf[offset:]``; returns 40."""
    if not 0 <= payload_len <= 0xFFFF:
        raise ValueError(f"IPv6 payload length {payload_len} (jumbograms unsupported)")
    word = 0x60000000 | (traffic_class & 0xFF) << 20 | (flow_label & 0xFFFFF)
    _HDR.pack_into(buf, offset, word, payload_len, next_header, hop_limit, src, dst)
    return IPV6_HLEN


def pack_ipv6_fragment(
    buf: WritableBuffer, offset: int, next_header: int, frag_offset: int, more: bool, ident: int
) -> int:
    """Write an 8-byte fragment header (RFC 8200 §4.5); ``frag_offset`` in bytes, multiple of 8."""
    if frag_offset & 7 or not 0 <= frag_offset <= 0xFFF8:
        raise ValueError(f"bad fragment offset {frag_offset}")
    _FRAG.pack_into(buf, offset, next_header, 0, frag_offset | (1 if more else 0), ident)
    return FRAG_HLEN


def ipv6_is_multicast(addr: bytes) -> bool:
    """ff00::/8 (RFC 4291 §2.7)."""
    return addr[0] == 0xFF


def ipv6_is_link_local(addr: bytes) -> bool:
    """fe80::/10 (RFC 4291 §2.5.6)."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def ipv6_is_unspecified(addr: bytes) -> bool:
    return addr == _UNSPECIFIED


def ipv6_is_loopback(addr: bytes) -> bool:
    return addr == _LOOPBACK


def solicited_node_multicast(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX from the low 24 bits of ``addr`` (RFC 4291 §2.7.1)."""
    return _SOLICITED_PREFIX + addr[13:16]


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 + modified EUI-64 interface id (RFC 4291 §2.5.1 and Appendix A)."""
    return _LINK_LOCAL_PREFIX + bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE)) + mac[3:6]
