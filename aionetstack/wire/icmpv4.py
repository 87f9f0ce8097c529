"""ICMP for IPv4 (RFC 792, RFC 1122 §3.2.2, RFC 1191 §4).

Theory of operation: every ICMPv4 message starts with ``type(1) code(1) checksum(2)`` and a
32-bit type-specific field (``rest``): identifier+sequence for echo, unused+next-hop MTU for
"fragmentation needed" (RFC 1191 §4), pointer in the high byte for Parameter Problem, the
gateway address for Redirect.  ``payload`` is what follows: echo data, or the quoted original IP
header + at least 8 bytes for error messages.  The checksum covers the whole ICMP message
(RFC 792); RFC 1122 §3.2.2 lets us silently discard messages with a bad checksum.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.checksum import checksum as _checksum
from aionetstack.wire.checksum import verify as _verify
from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview
Buffer = bytes | bytearray | memoryview

ICMPV4_HLEN: Final = 8

ECHO_REPLY: Final = 0
DEST_UNREACH: Final = 3
SOURCE_QUENCH: Final = 4
REDIRECT: Final = 5
ECHO_REQUEST: Final = 8
TIME_EXCEEDED: Final = 11
PARAM_PROBLEM: Final = 12
TIMESTAMP_REQUEST: Final = 13
TIMESTAMP_REPLY: Final = 14

# Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1)
NET_UNREACH: Final = 0
HOST_UNREACH: Final = 1
PROTO_UNREACH: Final = 2
PORT_UNREACH: Final = 3
FRAG_NEEDED: Final = 4
SOURCE_ROUTE_FAILED: Final = 5
NET_UNKNOWN: Final = 6
HOST_UNKNOWN: Final = 7
HOST_ISOLATED: Final = 8
NET_PROHIBITED: Final = 9
HOST_PROHIBITED: Final = 10
NET_UNREACH_TOS: Final = 11
HOST_UNREACH_TOS: Final = 12
ADMIN_PROHIBITED: Final = 13
PRECEDENCE_VIOLATION: Final = 14
PRECEDENCE_CUTOFF: Final = 15

# Time Exceeded codes
TTL_EXCEEDED: Final = 0
REASSEMBLY_EXCEEDED: Final = 1

# Parameter Problem codes
PARAM_POINTER: Final = 0
PARAM_MISSING_OPTION: Final = 1
PARAM_BAD_LENGTH: Final = 2

ERROR_TYPES: Final = frozenset(
    (DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM)
)

_HDR: Final = struct.Struct("!BBHI")
_U16: Final = struct.Struct("!H")


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class IcmpV4Message:
    type: int
    code: int
    checksum: int
    rest: int
    """The 32-bit field after the checksum."""
    payload: _MemoryView

    @property
    def ident(self) -> int:
        """Echo identifier (high 16 bits of ``rest``)."""
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        """Echo sequence number (low 16 bits of ``rest``)."""
        return self.rest & 0xFFFF

    @property
    def next_hop_mtu(self) -> int:
        """Next-hop MTU of a "fragmentation needed" message (RFC 1191 §4); 0 if not given."""
        return self.rest & 0xFFFF

    @property
    def pointer(self) -> int:
        """Parameter Problem pointer (high byte of ``rest``)."""
        return self.rest >> 24

    @property
    def gateway(self) -> bytes:
        """Redirect gateway address."""
        return self.rest.to_bytes(4, "big")

    @property
    def is_error(self) -> bool:
        return self.type in ERROR_TYPES


def parse_icmpv4(view: memoryview, verify_checksum: bool = True) -> IcmpV4Message:
    """Parse an ICMPv4 message (the whole IP payload); ``payload`` is a slice of ``view``."""
    n = len(view)
    if n < ICMPV4_HLEN:
        raise MalformedPacket("truncated", f"ICMP message of {n} bytes")
    mtype, code, csum, rest = _HDR.unpack_from(view, 0)
    if verify_checksum and not _verify(view):
        raise MalformedPacket("bad-checksum", "ICMP")
    return IcmpV4Message(mtype, code, csum, rest, view[ICMPV4_HLEN:])


def pack_icmpv4(
    buf: WritableBuffer, offset: int, type: int, code: int, rest: int, payload: Buffer = b""
) -> int:
    """Write an ICMPv4 message (header, payload, checksum) at ``buf[offset:]``; returns length."""
    end = offset + ICMPV4_HLEN + len(payload)
    _HDR.pack_into(buf, offset, type, code, 0, rest)
    buf[offset + ICMPV4_HLEN : end] = payload
    _U16.pack_into(buf, offset + 2, _checksum(memoryview(buf)[offset:end]))
    return end - offset


def fill_icmpv4_checksum(buf: WritableBuffer, offset: int, length: int) -> None:
    """Compute and store the checksum of the ``length``-byte message at ``buf[offset:]``."""
    _U16.pack_into(buf, offset + 2, 0)
    _U16.pack_into(buf, offset + 2, _checksum(memoryview(buf)[offset : offset + length]))


def echo_rest(ident: int, sequence: int) -> int:
    """The ``rest`` field of an echo request/reply."""
    return (ident & 0xFFFF) << 16 | (sequence & 0xFFFF)
