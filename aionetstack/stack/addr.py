"""Address conversions at the API boundary.

Inside the core an address is ``bytes`` (4 bytes IPv4, 16 bytes IPv6): cheap to slice out of a
packet, hashable, and packed with no conversion.  Users speak strings and ``ipaddress`` objects;
these helpers convert, raising ``InvalidArgument`` for anything unparsable.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from aionetstack.errors import InvalidArgument

AddressLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address

ANY4: Final = bytes(4)
ANY6: Final = bytes(16)
BROADCAST4: Final = b"\xff\xff\xff\xff"
LOOPBACK4: Final = b"\x7f\x00\x00\x01"
LOOPBACK6: Final = bytes(15) + b"\x01"
ALL_NODES6: Final = b"\xff\x02" + bytes(13) + b"\x01"
ALL_ROUTERS6: Final = b"\xff\x02" + bytes(13) + b"\x02"


def to_bytes(addr: AddressLike) -> bytes:
    if isinstance(addr, bytes):
        if len(addr) not in (4, 16):
            raise InvalidArgument(f"an address is 4 or 16 bytes, not {len(addr)}")
        return addr
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return addr.packed
    if isinstance(addr, str):
        packed = _parsed.get(addr)
        if packed is None:
            packed = _parse_text(addr)
        return packed
    raise InvalidArgument(f"not an IP address: {addr!r}")


# Texts already parsed (every connect and sendto to a literal address converts one): bounded,
# emptied when full -- a plain dict hit is cheaper than an ``lru_cache`` call.
_parsed: dict[str, bytes] = {}
_PARSED_MAX: Final = 1024


def _parse_text(addr: str) -> bytes:
    text = addr.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # scope ids are handled by the caller
    try:
        packed = ipaddress.ip_address(text).packed
    except ValueError:
        raise InvalidArgument(f"not an IP address: {addr!r}") from None
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[addr] = packed
    return packed


def to_str(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def family_of(addr: bytes) -> int:
    """4 or 6."""
    return 4 if len(addr) == 4 else 6


def parse_interface(spec: str | ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                    ) -> tuple[bytes, int]:
    """``"198.18.0.1/24"`` -> (address bytes, prefix length).  A bare address is a host route."""
    if isinstance(spec, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return spec.ip.packed, spec.network.prefixlen
    if not isinstance(spec, str):
        raise InvalidArgument(f"not an address/prefix: {spec!r}")
    try:
        iface = ipaddress.ip_interface(spec.strip())
    except ValueError:
        raise InvalidArgument(f"not an address/prefix: {spec!r}") from None
    return iface.ip.packed, iface.network.prefixlen


def parse_network(spec: str) -> tuple[bytes, int]:
    """``"198.18.0.0/15"`` (host bits must be zero) -> (network bytes, prefix length)."""
    try:
        net = ipaddress.ip_network(spec.strip(), strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"not a network: {spec!r} ({exc})") from None
    return net.network_address.packed, net.prefixlen


def prefix_mask(length: int, prefixlen: int) -> int:
    bits = 8 * length
    return ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1)


def same_prefix(a: bytes, b: bytes, prefixlen: int) -> bool:
    if len(a) != len(b):
        return False
    mask = prefix_mask(len(a), prefixlen)
    return (int.from_bytes(a, "big") & mask) == (int.from_bytes(b, "big") & mask)


def is_multicast(addr: bytes) -> bool:
    return (addr[0] & 0xF0) == 0xE0 if len(addr) == 4 else addr[0] == 0xFF


def is_unspecified(addr: bytes) -> bool:
    return not any(addr)


def is_link_local6(addr: bytes) -> bool:
    return len(addr) == 16 and addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80


def is_loopback(addr: bytes) -> bool:
    return addr[0] == 127 if len(addr) == 4 else addr == LOOPBACK6
