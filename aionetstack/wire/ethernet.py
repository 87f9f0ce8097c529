"""Ethernet II framing (IEEE 802.3 / RFC 894) and MAC address helpers.

Theory of operation: a frame is ``dst(6) src(6) ethertype(2) payload``.  ``parse_ethernet``
reads the 14-byte header from a ``memoryview`` and hands back the payload as a zero-copy slice.
One IEEE 802.1Q tag (TPID 0x8100) is skipped: ``header_len`` becomes 18 and ``ethertype`` is the
inner type, with the tag's VLAN id kept in ``vlan``.  Frames are never padded or FCS-checked
here; the link delivers them without the FCS, and IP trims trailing padding using its own
length field.

Multicast mapping: IPv4 groups map to 01:00:5e + low 23 bits (RFC 1112 §6.4), IPv6 groups to
33:33 + low 32 bits (RFC 2464 §7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.wire.errors import MalformedPacket

WritableBuffer = bytearray | memoryview

ETH_HLEN: Final = 14
ETH_VLAN_HLEN: Final = 18
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_VLAN: Final = 0x8100
BROADCAST_MAC: Final = b"\xff" * 6
ZERO_MAC: Final = b"\x00" * 6

_HDR: Final = struct.Struct("!6s6sH")
_U16: Final = struct.Struct("!H")
_VLAN: Final = struct.Struct("!HH")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


# a dataclass field type, as a module global: mypyc's compiled dataclasses load each field's
# type by its name from the module (the builtin memoryview is not one)
_MemoryView = memoryview


@dataclass(slots=True)
class EthernetHeader:
    dst: bytes
    src: bytes
    ethertype: int
    payload: _MemoryView
    header_len: int = ETH_HLEN
    vlan: int | None = None
    """VLAN id (low 12 bits of the 802.1Q TCI) when a tag was skipped."""


def parse_ethernet(frame: memoryview) -> EthernetHeader:
    """Parse an Ethernet II frame; the payload is a slice of ``frame``."""
    n = len(frame)
    if n < ETH_HLEN:
        raise MalformedPacket("truncated", f"ethernet frame of {n} bytes")
    dst, src, ethertype = _HDR.unpack_from(frame, 0)
    if ethertype != ETHERTYPE_VLAN:
        return EthernetHeader(dst, src, ethertype, frame[ETH_HLEN:], ETH_HLEN)
    if n < ETH_VLAN_HLEN:
        raise MalformedPacket("truncated", f"802.1Q frame of {n} bytes")
    tci, ethertype = _VLAN.unpack_from(frame, ETH_HLEN)
    return EthernetHeader(dst, src, ethertype, frame[ETH_VLAN_HLEN:], ETH_VLAN_HLEN, tci & 0x0FFF)


def pack_ethernet(buf: WritableBuffer, offset: int, dst: bytes, src: bytes, ethertype: int) -> int:
    """Write a 14-byte Ethernet II header at ``buf[offset:]``; returns 14."""
    _HDR.pack_into(buf, offset, dst, src, ethertype)
    return ETH_HLEN


def mac_ntoa(b: bytes) -> str:
    """``b"\\x02\\0\\0\\0\\0\\x01"`` -> ``"02:00:00:00:00:01"``."""
    return b.hex(":")


def mac_aton(s: str) -> bytes:
    """``"02:00:00:00:00:01"`` (``-`` separators accepted) -> 6 bytes; ValueError if malformed."""
    parts = s.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {s!r}")
    out = bytearray(6)
    for i, part in enumerate(parts):
        if not 1 <= len(part) <= 2 or not _HEX.issuperset(part):
            raise ValueError(f"bad MAC address {s!r}")
        out[i] = int(part, 16)
    return bytes(out)


def mac_is_multicast(mac: bytes) -> bool:
    """True for group addresses (I/G bit set), broadcast included."""
    return bool(mac[0] & 0x01)


def ipv4_multicast_mac(addr: bytes) -> bytes:
    """01:00:5e + low 23 bits of the IPv4 group address (RFC 1112 §6.4)."""
    return b"\x01\x00\x5e" + bytes((addr[1] & 0x7F,)) + addr[2:4]


def ipv6_multicast_mac(addr: bytes) -> bytes:
    """33:33 + last 32 bits of the IPv6 group address (RFC 2464 §7)."""
    return b"\x33\x33" + addr[12:16]
