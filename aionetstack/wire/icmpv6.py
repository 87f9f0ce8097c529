"""ICMPv6 (RFC 4443).

Theory of operation: an ICMPv6 message is ``type(1) code(1) checksum(2)`` followed by the
message body; every message this stack handles has a 32-bit field next (``rest``): identifier +
sequence for echo, the MTU for Packet Too Big, the pointer for Parameter Problem, flags/reserved
for Neighbor Discovery.  ``body`` is everything after the first 4 bytes and ``payload`` everything
after ``rest`` (echo data, the invoking packet of an error, or ND fields and options).

The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1) and is mandatory, so
``parse_icmpv6`` needs the source and destination addresses.  Error types are < 128, informational
types >= 128 (RFC 4443 §2.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.checksum import PROTO_ICMPV6
from aionetstack.wire.checksum import transport_checksum as _transport_checksum
from aionetstack.wire.checksum import transport_verify as _transport_verify
from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview
Buffer = bytes | bytearray | memoryview

ICMPV6_HLEN: Final = 8

DEST_UNREACH: Final = 1
PACKET_TOO_BIG: Final = 2
TIME_EXCEEDED: Final = 3
PARAM_PROBLEM: Final = 4
ECHO_REQUEST: Final = 128
ECHO_REPLY: Final = 129
MLD_QUERY: Final = 130
MLD_REPORT: Final = 131
MLD_DONE: Final = 132
ND_ROUTER_SOLICIT: Final = 133
ND_ROUTER_ADVERT: Final = 134
ND_NEIGHBOR_SOLICIT: Final = 135
ND_NEIGHBOR_ADVERT: Final = 136
ND_REDIRECT: Final = 137
MLDV2_REPORT: Final = 143

# Destination Unreachable codes (RFC 4443 §3.1)
NO_ROUTE: Final = 0
ADMIN: Final = 1
BEYOND_SCOPE: Final = 2
ADDR_UNREACH: Final = 3
PORT_UNREACH: Final = 4
SOURCE_POLICY: Final = 5
REJECT_ROUTE: Final = 6

# Time Exceeded codes (RFC 4443 §3.3)
HOP_LIMIT_EXCEEDED: Final = 0
REASSEMBLY_EXCEEDED: Final = 1

# Parameter Problem codes (RFC 4443 §3.4)
PARAM_ERRONEOUS_HEADER: Final = 0
PARAM_UNRECOGNIZED_NH: Final = 1
PARAM_UNRECOGNIZED_OPTION: Final = 2

_HDR: Final = struct.Struct("!BBHI")
_U16: Final = struct.Struct("!H")


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class IcmpV6Message:
    type: int
    code: int
    checksum: int
    rest: int
    """The 32-bit field after the checksum."""
    payload: _MemoryView
    """Everything after ``rest``."""
    body: _MemoryView
    """Everything after type/code/checksum (``rest`` included)."""

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Packet Too Big MTU (RFC 4443 §3.2)."""
        return self.rest

    @property
    def pointer(self) -> int:
        """Parameter Problem pointer (RFC 4443 §3.4)."""
        return self.rest

    @property
    def is_error(self) -> bool:
        """Error messages have types 0..127 (RFC 4443 §2.1)."""
        return self.type < 128


def parse_icmpv6(
    view: memoryview, src: bytes, dst: bytes, verify_checksum: bool = True
) -> IcmpV6Message:
    """Parse an ICMPv6 message (the upper-layer payload) sent from ``src`` to ``dst``."""
    n = len(view)
    if n < ICMPV6_HLEN:
        raise MalformedPacket("truncated", f"ICMPv6 message of {n} bytes")
    mtype, code, csum, rest = _HDR.unpack_from(view, 0)
    # RFC 4443 §2.3: the checksum is mandatory; a bad one means silent discard.
    if verify_checksum and not _transport_verify(src, dst, PROTO_ICMPV6, view):
        raise MalformedPacket("bad-checksum", "ICMPv6")
    return IcmpV6Message(mtype, code, csum, rest, view[ICMPV6_HLEN:], view[4:])


def pack_icmpv6(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    type: int,
    code: int,
    rest: int,
    payload: Buffer = b"",
) -> int:
    """Write an ICMPv6 message (checksum filled) at ``buf[offset:]``; returns its length."""
    length = ICMPV6_HLEN + len(payload)
    _HDR.pack_into(buf, offset, type, code, 0, rest)
    buf[offset + ICMPV6_HLEN : offset + length] = payload
    fill_icmpv6_checksum(buf, offset, length, src, dst)
    return length


def fill_icmpv6_checksum(
    buf: WritableBuffer, offset: int, length: int, src: bytes, dst: bytes
) -> None:
    """Compute and store the checksum of the ``length``-byte message at ``buf[offset:]``."""
    _U16.pack_into(buf, offset + 2, 0)
    msg = memoryview(buf)[offset : offset + length]
    _U16.pack_into(buf, offset + 2, _transport_checksum(src, dst, PROTO_ICMPV6, msg))


def echo_rest(ident: int, sequence: int) -> int:
    """The ``rest`` field of an echo request/reply."""
    return (ident & 0xFFFF) << 16 | (sequence & 0xFFFF)
