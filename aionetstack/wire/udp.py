"""UDP (RFC 768, RFC 1122 §4.1, RFC 8200 §8.1).

Theory of operation: ``sport(2) dport(2) length(2) checksum(2)`` then the data.  ``parse_udp``
checks that the length field covers at least the header and no more than the IP payload, and
returns exactly ``length - 8`` payload bytes as a zero-copy slice (bytes after the datagram are
ignored).  The checksum covers a pseudo-header (addresses, protocol 17, UDP length) plus the
datagram.  A transmitted checksum of 0 means "no checksum" over IPv4 (RFC 768), so a computed
0 is sent as 0xffff; over IPv6 a zero checksum is invalid and the datagram MUST be discarded
(RFC 8200 §8.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.checksum import PROTO_UDP
from aionetstack.wire.checksum import transport_checksum as _transport_checksum
from aionetstack.wire.checksum import transport_verify as _transport_verify
from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview
Buffer = bytes | bytearray | memoryview

UDP_HLEN: Final = 8
UDP_MAX_PAYLOAD: Final = 0xFFFF - UDP_HLEN

_HDR: Final = struct.Struct("!HHHH")
_U16: Final = struct.Struct("!H")


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class UdpHeader:
    sport: int
    dport: int
    length: int
    checksum: int
    payload: _MemoryView


def parse_udp(view: memoryview) -> UdpHeader:
    """Parse a UDP datagram; ``payload`` is exactly ``length - 8`` bytes of ``view``."""
    n = len(view)
    if n < UDP_HLEN:
        raise MalformedPacket("truncated", f"UDP datagram of {n} bytes")
    sport, dport, length, csum = _HDR.unpack_from(view, 0)
    if length < UDP_HLEN or length > n:
        raise MalformedPacket("bad-length", f"UDP length {length}, have {n}")
    return UdpHeader(sport, dport, length, csum, view[UDP_HLEN:length])


def udp_checksum_ok(src: bytes, dst: bytes, view: memoryview) -> bool:
    """Verify the checksum of the UDP datagram in ``view`` (delimited by its length field).

    A zero checksum field means "none": accepted over IPv4, rejected over IPv6 (RFC 8200 §8.1).
    """
    if len(view) < UDP_HLEN:
        return False
    length = _U16.unpack_from(view, 4)[0]
    if length < UDP_HLEN or length > len(view):
        return False
    if view[6] == 0 and view[7] == 0:
        return len(src) == 4
    return _transport_verify(src, dst, PROTO_UDP, view[:length])


def pack_udp_header(buf: WritableBuffer, offset: int, sport: int, dport: int, length: int) -> int:
    """Write a UDP header with a zero checksum; ``length`` includes the header.  Returns 8."""
    _HDR.pack_into(buf, offset, sport, dport, length, 0)
    return UDP_HLEN


def fill_udp_checksum(
    buf: WritableBuffer, offset: int, length: int, src: bytes, dst: bytes
) -> None:
    """Compute and store the checksum of the ``length``-byte datagram at ``buf[offset:]``."""
    _U16.pack_into(buf, offset + 6, 0)
    csum = _transport_checksum(src, dst, PROTO_UDP, memoryview(buf)[offset : offset + length])
    # RFC 768: a computed checksum of zero is transmitted as all ones.
    _U16.pack_into(buf, offset + 6, csum or 0xFFFF)


def pack_udp(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    payload: Buffer,
    checksum: bool = True,
) -> int:
    """Write header + payload (one slice copy) at ``buf[offset:]``; returns ``8 + len(payload)``.

    With ``checksum=False`` the checksum field is 0 ("none"; valid for IPv4 only).
    """
    length = UDP_HLEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram too long ({length} bytes)")
    _HDR.pack_into(buf, offset, sport, dport, length, 0)
    buf[offset + UDP_HLEN : offset + length] = payload
    if checksum:
        csum = _transport_checksum(src, dst, PROTO_UDP, memoryview(buf)[offset : offset + length])
        _U16.pack_into(buf, offset + 6, csum or 0xFFFF)
    return length
