"""ARP for Ethernet/IPv4 (RFC 826).

Theory of operation: an ARP packet is ``htype(2) ptype(2) hlen(1) plen(1) op(2)`` followed by the
sender and target hardware/protocol addresses.  Only Ethernet (htype 1, hlen 6) carrying IPv4
(ptype 0x0800, plen 4) is supported; anything else raises ``MalformedPacket("unsupported")``
(RFC 826 "Packet Reception": a host that does not speak the hardware/protocol pair discards the
packet).  ``op`` is returned as-is; the ARP module acts on REQUEST and REPLY only.  Trailing
bytes (Ethernet minimum-size padding) are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview

ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
ARP_LEN: Final = 28
ARP_HTYPE_ETHERNET: Final = 1
ARP_PTYPE_IPV4: Final = 0x0800

_FIXED: Final = struct.Struct("!HHBBH")
_PKT: Final = struct.Struct("!HHBBH6s4s6s4s")
# (htype, ptype, hlen, plen) of the one supported pairing: Ethernet carrying IPv4
_ETH_IPV4: Final = (ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, 6, 4)


@dataclass(slots=True)
class ArpPacket:
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


def parse_arp(view: memoryview) -> ArpPacket:
    """Parse an Ethernet/IPv4 ARP packet."""
    n = len(view)
    if n < _FIXED.size:
        raise MalformedPacket("truncated", f"ARP packet of {n} bytes")
    htype, ptype, hlen, plen, _op = _FIXED.unpack_from(view, 0)
    if (htype, ptype, hlen, plen) != _ETH_IPV4:
        raise MalformedPacket(
            "unsupported", f"ARP htype={htype} ptype={ptype:#06x} hlen={hlen} plen={plen}"
        )
    if n < ARP_LEN:
        raise MalformedPacket("truncated", f"ARP packet of {n} bytes")
    _, _, _, _, op, sha, spa, tha, tpa = _PKT.unpack_from(view, 0)
    return ArpPacket(op, sha, spa, tha, tpa)


def pack_arp(
    buf: WritableBuffer, offset: int, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes
) -> int:
    """Write a 28-byte Ethernet/IPv4 ARP packet at ``buf[offset:]``; returns 28."""
    _PKT.pack_into(buf, offset, ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, 6, 4, op, sha, spa, tha, tpa)
    return ARP_LEN
