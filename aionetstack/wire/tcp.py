"""TCP header and options (RFC 9293 §3.1-3.2, RFC 7323, RFC 2018, RFC 6691).

Theory of operation: ``parse_tcp`` reads the 20-byte fixed header, checks the data offset
(>= 5 words and inside the buffer, RFC 9293 §3.1) and parses options into a ``TcpOptions``.
Two fast paths cover nearly all traffic: no options (data offset 5), and exactly
``NOP NOP TS(10)`` (data offset 8, the RFC 7323 Appendix A layout every stack sends on data
segments), each a single ``struct`` call.  Everything else goes through the general option loop
(at most 40 bytes):

* EOL ends the list, NOP is one byte (RFC 9293 §3.1);
* any other option must have a length byte >= 2 that stays inside the header; known kinds must
  have their defined length (MSS 4, window scale 3, SACK-permitted 2, timestamps 10, SACK
  2 + 8n with n in 1..4) -- otherwise ``bad-option`` (RFC 9293 §3.1 MUST-7: be prepared to
  handle an illegal option length such as zero; the segment is dropped and counted);
* unknown kinds are skipped and their kind numbers recorded in ``unknown`` (RFC 9293 §3.1
  MUST-6: ignore without error any option not implemented, using its length field).

Window scale values above 14 are passed through; the engine clamps them (RFC 7323 §2.3).

``TcpOptions.pack_into`` lays options out like Linux ``tcp_options_write``: MSS; SACK-permitted
folded in front of the timestamp (or ``NOP NOP SACK_PERM`` without timestamps); ``NOP WS``;
``NOP NOP TS`` on data segments; ``NOP NOP SACK`` blocks.  All lengths are multiples of 4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.checksum import transport_checksum as _transport_checksum
from aionetstack.wire.checksum import transport_verify as _transport_verify
from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview
Buffer = bytes | bytearray | memoryview

TCP_HLEN: Final = 20
TCP_MAX_HLEN: Final = 60
TCP_MAX_OPTIONS_LEN: Final = 40

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8
# Spec-style short aliases.
EOL: Final = OPT_EOL
NOP: Final = OPT_NOP
MSS: Final = OPT_MSS
WSCALE: Final = OPT_WSCALE
SACK_PERMITTED: Final = OPT_SACK_PERMITTED
SACK: Final = OPT_SACK
TIMESTAMP: Final = OPT_TIMESTAMP

MAX_SACK_BLOCKS: Final = 4

_HDR: Final = struct.Struct("!HHIIHHHH")
_U16: Final = struct.Struct("!H")
_FAST_TS: Final = struct.Struct("!III")
_FAST_TS_MAGIC: Final = 0x0101080A  # NOP NOP kind=8 len=10
_MSS: Final = struct.Struct("!BBH")
_TS: Final = struct.Struct("!BBBBII")
_WS: Final = struct.Struct("!BBBB")
_SACK_PERM: Final = struct.Struct("!BBBB")
_SACK_HDR: Final = struct.Struct("!BBBB")
_SACK_BLOCKS: Final = tuple(struct.Struct("!" + "II" * n) for n in range(MAX_SACK_BLOCKS + 1))
_U32X2: Final = struct.Struct("!II")
_HDR_TS: Final = struct.Struct("!HHIIHHHHIII")  # fixed header + NOP NOP TS(10) in one call


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class TcpOptions:
    """Parsed or to-be-sent TCP options.  Treat parsed instances as read-only.

    ``timestamp`` is (TSval, TSecr); ``unknown`` lists the kinds of options skipped while parsing
    (never emitted by ``pack_into``).
    """

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None
    unknown: tuple[int, ...] = ()

    def packed_len(self) -> int:
        """Bytes ``pack_into`` writes (a multiple of 4); ValueError if over 40."""
        if (self.mss is None and self.wscale is None and not self.sack_blocks
                and not self.sack_permitted):  # the data-segment case: timestamps or nothing
            return 0 if self.timestamp is None else 12
        n = 0
        if self.mss is not None:
            n += 4
        if self.timestamp is not None:
            n += 12  # NOP NOP TS, or SACK_PERM TS
        elif self.sack_permitted:
            n += 4  # NOP NOP SACK_PERM
        if self.wscale is not None:
            n += 4  # NOP WS
        nblocks = len(self.sack_blocks)
        if nblocks:
            if nblocks > MAX_SACK_BLOCKS:
                raise ValueError(f"{nblocks} SACK blocks (max {MAX_SACK_BLOCKS})")
            n += 4 + 8 * nblocks
        if n > TCP_MAX_OPTIONS_LEN:
            raise ValueError(f"TCP options need {n} bytes (max {TCP_MAX_OPTIONS_LEN})")
        return n

    def pack_into(self, buf: WritableBuffer, offset: int) -> int:
        """Write the options at ``buf[offset:]`` (Linux layout); returns the length written."""
        ts = self.timestamp
        if (self.mss is None and self.wscale is None and not self.sack_blocks
                and not self.sack_permitted):  # the data-segment case: one struct call
            if ts is None:
                return 0
            _FAST_TS.pack_into(buf, offset, _FAST_TS_MAGIC, ts[0], ts[1])
            return 12
        n = self.packed_len()
        pos = offset
        if self.mss is not None:
            _MSS.pack_into(buf, pos, OPT_MSS, 4, self.mss)
            pos += 4
        if ts is not None:
            if self.sack_permitted:
                _TS.pack_into(buf, pos, OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, ts[0], ts[1])
            else:
                _TS.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, ts[0], ts[1])
            pos += 12
        if self.wscale is not None:
            _WS.pack_into(buf, pos, OPT_NOP, OPT_WSCALE, 3, self.wscale)
            pos += 4
        if ts is None and self.sack_permitted:
            _SACK_PERM.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2)
            pos += 4
        blocks = self.sack_blocks
        if blocks:
            nb = len(blocks)
            _SACK_HDR.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * nb)
            flat = [edge for block in blocks for edge in block]
            _SACK_BLOCKS[nb].pack_into(buf, pos + 4, *flat)
            pos += 4 + 8 * nb
        return n


def _parse_options(view: memoryview, i: int, end: int) -> TcpOptions:
    """General option loop over ``view[i:end]`` (RFC 9293 §3.1-3.2)."""
    opts = TcpOptions()
    unknown: list[int] = []
    while i < end:
        kind = view[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise MalformedPacket("bad-option", f"TCP option {kind} has no length byte")
        olen = view[i + 1]
        if olen < 2 or i + olen > end:
            raise MalformedPacket("bad-option", f"TCP option {kind} length {olen}")
        if kind == OPT_MSS:
            if olen != 4:
                raise MalformedPacket("bad-option", f"MSS option length {olen}")
            opts.mss = _U16.unpack_from(view, i + 2)[0]
        elif kind == OPT_WSCALE:
            if olen != 3:
                raise MalformedPacket("bad-option", f"window scale option length {olen}")
            opts.wscale = view[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if olen != 2:
                raise MalformedPacket("bad-option", f"SACK-permitted option length {olen}")
            opts.sack_permitted = True
        elif kind == OPT_TIMESTAMP:
            if olen != 10:
                raise MalformedPacket("bad-option", f"timestamp option length {olen}")
            opts.timestamp = _U32X2.unpack_from(view, i + 2)
        elif kind == OPT_SACK:
            nb, r = divmod(olen - 2, 8)
            if r or not 1 <= nb <= MAX_SACK_BLOCKS:
                raise MalformedPacket("bad-option", f"SACK option length {olen}")
            edges = _SACK_BLOCKS[nb].unpack_from(view, i + 2)
            opts.sack_blocks = tuple(zip(edges[0::2], edges[1::2], strict=True))
        else:
            unknown.append(kind)
        i += olen
    if unknown:
        opts.unknown = tuple(unknown)
    return opts


@dataclass(slots=True, repr=False)
class TcpHeader:
    sport: int
    dport: int
    seq: int
    ack: int
    header_len: int
    flags: int
    window: int
    """Raw (unscaled) window field."""
    checksum: int
    urgent: int
    options: TcpOptions
    payload: _MemoryView

    def __repr__(self) -> str:
        return (
            f"TcpHeader(sport={self.sport}, dport={self.dport}, seq={self.seq}, ack={self.ack}, "
            f"flags={flags_str(self.flags)}, window={self.window}, urgent={self.urgent}, "
            f"options={self.options!r}, len={len(self.payload)})"
        )

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def ack_flag(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def psh(self) -> bool:
        return bool(self.flags & PSH)

    @property
    def urg(self) -> bool:
        return bool(self.flags & URG)

    @property
    def ece(self) -> bool:
        return bool(self.flags & ECE)

    @property
    def cwr(self) -> bool:
        return bool(self.flags & CWR)

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload length plus one each for SYN and FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (self.flags & SYN) // SYN + (self.flags & FIN)


def flags_str(flags: int) -> str:
    """``SYN|ACK``-style rendering for logs and reprs."""
    names = [n for bit, n in _FLAG_NAMES if flags & bit]
    return "|".join(names) if names else "0"


_FLAG_NAMES: Final = (
    (SYN, "SYN"),
    (FIN, "FIN"),
    (RST, "RST"),
    (PSH, "PSH"),
    (ACK, "ACK"),
    (URG, "URG"),
    (ECE, "ECE"),
    (CWR, "CWR"),
)


def parse_tcp(view: memoryview) -> TcpHeader:
    """Parse a TCP segment (the whole IP payload); ``payload`` is a slice of ``view``."""
    n = len(view)
    if n < TCP_HLEN:
        raise MalformedPacket("truncated", f"TCP segment of {n} bytes")
    sport, dport, seq, ack, off_flags, window, csum, urgent = _HDR.unpack_from(view, 0)
    hl = (off_flags >> 10) & 0x3C
    if hl < TCP_HLEN or hl > n:
        raise MalformedPacket("bad-length", f"TCP data offset {hl >> 2} in {n} bytes")
    if hl == TCP_HLEN:
        options = TcpOptions(None, None, False, (), None, ())
    elif hl == 32:
        magic, tsval, tsecr = _FAST_TS.unpack_from(view, TCP_HLEN)
        if magic == _FAST_TS_MAGIC:
            options = TcpOptions(None, None, False, (), (tsval, tsecr), ())
        else:
            options = _parse_options(view, TCP_HLEN, hl)
    else:
        options = _parse_options(view, TCP_HLEN, hl)
    return TcpHeader(
        sport, dport, seq, ack, hl, off_flags & 0xFF, window, csum, urgent, options, view[hl:]
    )


def tcp_checksum_ok(src: bytes, dst: bytes, view: memoryview) -> bool:
    """Verify the checksum of the TCP segment ``view`` (RFC 9293 §3.1: MUST verify)."""
    return _transport_verify(src, dst, PROTO_TCP, view)


def pack_tcp_header(
    buf: WritableBuffer,
    offset: int,
    *,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int = 0,
    options: TcpOptions | None = None,
) -> int:
    """Write header + options with a zero checksum at ``buf[offset:]``; returns header length."""
    hl = TCP_HLEN
    if options is not None:
        hl += options.pack_into(buf, offset + TCP_HLEN)
    _HDR.pack_into(
        buf, offset, sport, dport, seq, ack, (hl << 10) | (flags & 0xFF), window, 0, urgent
    )
    return hl


def fill_tcp_checksum(
    buf: WritableBuffer, offset: int, length: int, src: bytes, dst: bytes
) -> None:
    """Compute and store the checksum of the ``length``-byte segment at ``buf[offset:]``."""
    _U16.pack_into(buf, offset + 16, 0)
    seg = memoryview(buf)[offset : offset + length]
    _U16.pack_into(buf, offset + 16, _transport_checksum(src, dst, PROTO_TCP, seg))


def pack_tcp(
    buf: WritableBuffer,
    offset: int,
    *,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int = 0,
    options: TcpOptions | None = None,
    payload: Buffer = b"",
    checksum: bool = True,
) -> int:
    """Write a complete segment (header, options, payload, checksum); returns its length.

    With ``checksum=False`` the field is left 0 (for links with checksum offload).
    """
    hl = TCP_HLEN if options is None else TCP_HLEN + options.pack_into(buf, offset + TCP_HLEN)
    plen = len(payload)
    length = hl + plen
    if plen:
        # through a memoryview: a bytearray slice assigned from bytes or a view copies twice
        memoryview(buf)[offset + hl : offset + length] = payload
    _HDR.pack_into(
        buf, offset, sport, dport, seq, ack, (hl << 10) | (flags & 0xFF), window, 0, urgent
    )
    if checksum:
        seg = memoryview(buf)[offset : offset + length]
        _U16.pack_into(buf, offset + 16, _transport_checksum(src, dst, PROTO_TCP, seg))
    return length


def pack_tcp_ts(
    buf: WritableBuffer,
    offset: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    tsval: int,
    tsecr: int,
    payload: Buffer = b"",
) -> int:
    """The data-path segment (header, ``NOP NOP TS``, payload) in one ``struct`` call.

    Byte for byte what ``pack_tcp(..., options=TcpOptions(timestamp=(tsval, tsecr)),
    checksum=False)`` writes, without building a ``TcpOptions``: the header template of the
    RFC 7323 Appendix A layout every data segment and pure ACK carries.  The checksum field is
    left 0 (fill it with ``fill_tcp_checksum`` when the link does not offload it).
    """
    plen = len(payload)
    if plen:
        memoryview(buf)[offset + 32 : offset + 32 + plen] = payload  # one copy (see pack_tcp)
    _HDR_TS.pack_into(
        buf, offset, sport, dport, seq, ack, 0x8000 | (flags & 0xFF), window, 0, 0,
        _FAST_TS_MAGIC, tsval, tsecr,
    )
    return 32 + plen
