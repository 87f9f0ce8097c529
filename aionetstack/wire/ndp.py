"""IPv6 Neighbor Discovery messages and options (RFC 4861).

Theory of operation: ND messages are ICMPv6 messages (types 133-137) whose fixed part is
followed by TLV options ``type(1) length(1, in units of 8 octets) data``.  The message parsers
take an already checksum-verified ``IcmpV6Message`` and apply the syntactic validity checks of
RFC 4861 §6.1 / §7.1 that need only the message itself: ICMP code 0, minimum length, target not
multicast, and every option with a non-zero length that stays inside the message (§4.6: "Nodes
MUST silently discard an ND packet that contains an option with length zero").  The checks that
need the IP header (hop limit 255, source address rules) belong to the network layer.  Unknown
options are skipped (§4.6: "MUST silently ignore").  Link-layer address options are read as
Ethernet addresses (RFC 2464 §6: 6 bytes, option length 1).

Builders write a complete ICMPv6 message, checksum included, into a caller buffer;
``ndp_message_len`` sizes that buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.icmpv6 import (
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_REDIRECT,
    ND_ROUTER_ADVERT,
    ND_ROUTER_SOLICIT,
    IcmpV6Message,
    fill_icmpv6_checksum,
)

WritableBuffer = bytearray | memoryview

# Option types (RFC 4861 §4.6, RFC 3971 §5.3.2 for the nonce)
SLLA: Final = 1
TLLA: Final = 2
PREFIX_INFO: Final = 3
REDIRECTED: Final = 4
MTU: Final = 5
NONCE: Final = 14

# Whole-message sizes without options, and option sizes, in bytes.
RS_LEN: Final = 8
RA_LEN: Final = 16
NS_LEN: Final = 24
NA_LEN: Final = 24
REDIRECT_LEN: Final = 40
LLADDR_OPT_LEN: Final = 8
MTU_OPT_LEN: Final = 8
PREFIX_OPT_LEN: Final = 32

# Neighbor Advertisement flags in the ICMPv6 ``rest`` field (RFC 4861 §4.4)
NA_ROUTER: Final = 0x80000000
NA_SOLICITED: Final = 0x40000000
NA_OVERRIDE: Final = 0x20000000

# Router Advertisement flags (RFC 4861 §4.2) and prefix flags (§4.6.2)
RA_MANAGED: Final = 0x80
RA_OTHER: Final = 0x40
PI_ON_LINK: Final = 0x80
PI_AUTONOMOUS: Final = 0x40

_ICMP: Final = struct.Struct("!BBHI")
_LLADDR: Final = struct.Struct("!BB6s")
_PREFIX: Final = struct.Struct("!BBBBIII16s")
_MTU_OPT: Final = struct.Struct("!BBHI")
_RA_TIMERS: Final = struct.Struct("!II")
_U32: Final = struct.Struct("!I")


@dataclass(slots=True)
class PrefixInfo:
    """Prefix Information option (RFC 4861 §4.6.2); lifetimes in seconds, 0xffffffff = infinity."""

    prefix: bytes
    prefix_len: int
    on_link: bool = True
    autonomous: bool = True
    valid_lifetime: int = 2592000
    preferred_lifetime: int = 604800


@dataclass(slots=True)
class NdpOptions:
    source_lladdr: bytes | None = None
    target_lladdr: bytes | None = None
    mtu: int | None = None
    prefixes: list[PrefixInfo] = field(default_factory=list)
    redirected: memoryview | None = None
    """Redirected Header option data (the quoted packet), when present."""
    nonce: bytes | None = None


@dataclass(slots=True)
class NeighborSolicit:
    target: bytes
    options: NdpOptions


@dataclass(slots=True)
class NeighborAdvert:
    router: bool
    solicited: bool
    override: bool
    target: bytes
    options: NdpOptions


@dataclass(slots=True)
class RouterSolicit:
    options: NdpOptions


@dataclass(slots=True)
class RouterAdvert:
    cur_hop_limit: int
    managed: bool
    other: bool
    router_lifetime: int
    reachable_time: int
    retrans_timer: int
    options: NdpOptions


@dataclass(slots=True)
class Redirect:
    target: bytes
    destination: bytes
    options: NdpOptions


def parse_ndp_options(view: memoryview) -> NdpOptions:
    """Parse the ND options in ``view`` (RFC 4861 §4.6)."""
    opts = NdpOptions()
    n = len(view)
    i = 0
    while i < n:
        if i + 2 > n:
            raise MalformedPacket("bad-option", f"ND option header at {i} runs off the end")
        kind = view[i]
        olen = view[i + 1] << 3
        if olen == 0:
            # RFC 4861 §4.6: an option with length 0 MUST cause the packet to be discarded.
            raise MalformedPacket("bad-option", f"ND option {kind} with length 0")
        end = i + olen
        if end > n:
            raise MalformedPacket("bad-option", f"ND option {kind} runs off the end")
        if kind == SLLA:
            if opts.source_lladdr is None:
                opts.source_lladdr = bytes(view[i + 2 : i + 8])
        elif kind == TLLA:
            if opts.target_lladdr is None:
                opts.target_lladdr = bytes(view[i + 2 : i + 8])
        elif kind == PREFIX_INFO:
            if olen != PREFIX_OPT_LEN:
                raise MalformedPacket("bad-option", f"prefix information length {olen}")
            _, _, plen, flags, valid, preferred, _, prefix = _PREFIX.unpack_from(view, i)
            opts.prefixes.append(
                PrefixInfo(
                    prefix, plen, bool(flags & PI_ON_LINK), bool(flags & PI_AUTONOMOUS), valid,
                    preferred,
                )
            )
        elif kind == MTU:
            if olen != MTU_OPT_LEN:
                raise MalformedPacket("bad-option", f"MTU option length {olen}")
            opts.mtu = _U32.unpack_from(view, i + 4)[0]
        elif kind == REDIRECTED:
            opts.redirected = view[i + 8 : end]
        elif kind == NONCE:
            opts.nonce = bytes(view[i + 2 : end])
        # RFC 4861 §4.6: unrecognized options MUST be silently ignored.
        i = end
    return opts


def _require(msg: IcmpV6Message, min_len: int, what: str) -> None:
    if msg.code != 0:
        raise MalformedPacket("bad-header", f"{what} with ICMP code {msg.code}")
    if len(msg.body) + 4 < min_len:
        raise MalformedPacket("truncated", f"{what} of {len(msg.body) + 4} bytes")


def _check_target(target: bytes, what: str) -> None:
    if target[0] == 0xFF:
        raise MalformedPacket("bad-header", f"{what} target is multicast")


def parse_neighbor_solicit(msg: IcmpV6Message) -> NeighborSolicit:
    """RFC 4861 §4.3 / §7.1.1 (code 0, length >= 24, target not multicast)."""
    _require(msg, NS_LEN, "neighbor solicitation")
    p = msg.payload
    target = bytes(p[0:16])
    _check_target(target, "neighbor solicitation")
    return NeighborSolicit(target, parse_ndp_options(p[16:]))


def parse_neighbor_advert(msg: IcmpV6Message) -> NeighborAdvert:
    """RFC 4861 §4.4 / §7.1.2 (code 0, length >= 24, target not multicast)."""
    _require(msg, NA_LEN, "neighbor advertisement")
    p = msg.payload
    target = bytes(p[0:16])
    _check_target(target, "neighbor advertisement")
    rest = msg.rest
    return NeighborAdvert(
        bool(rest & NA_ROUTER),
        bool(rest & NA_SOLICITED),
        bool(rest & NA_OVERRIDE),
        target,
        parse_ndp_options(p[16:]),
    )


def parse_router_solicit(msg: IcmpV6Message) -> RouterSolicit:
    """RFC 4861 §4.1 / §6.1.1 (code 0, length >= 8)."""
    _require(msg, RS_LEN, "router solicitation")
    return RouterSolicit(parse_ndp_options(msg.payload))


def parse_router_advert(msg: IcmpV6Message) -> RouterAdvert:
    """RFC 4861 §4.2 / §6.1.2 (code 0, length >= 16)."""
    _require(msg, RA_LEN, "router advertisement")
    rest = msg.rest
    p = msg.payload
    reachable, retrans = _RA_TIMERS.unpack_from(p, 0)
    return RouterAdvert(
        rest >> 24,
        bool(rest & (RA_MANAGED << 16)),
        bool(rest & (RA_OTHER << 16)),
        rest & 0xFFFF,
        reachable,
        retrans,
        parse_ndp_options(p[8:]),
    )


def parse_redirect(msg: IcmpV6Message) -> Redirect:
    """RFC 4861 §4.5 / §8.1 (code 0, length >= 40, destination not multicast)."""
    _require(msg, REDIRECT_LEN, "redirect")
    p = msg.payload
    destination = bytes(p[16:32])
    _check_target(destination, "redirect destination")
    return Redirect(bytes(p[0:16]), destination, parse_ndp_options(p[32:]))


def ndp_message_len(
    type: int, *, lladdr: bool = False, mtu: bool = False, prefixes: int = 0
) -> int:
    """Length of an ND message of ``type`` with the given options (buffer sizing)."""
    base = {
        ND_ROUTER_SOLICIT: RS_LEN,
        ND_ROUTER_ADVERT: RA_LEN,
        ND_NEIGHBOR_SOLICIT: NS_LEN,
        ND_NEIGHBOR_ADVERT: NA_LEN,
        ND_REDIRECT: REDIRECT_LEN,
    }[type]
    return (
        base
        + (LLADDR_OPT_LEN if lladdr else 0)
        + (MTU_OPT_LEN if mtu else 0)
        + PREFIX_OPT_LEN * prefixes
    )


def _pack_target_msg(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    type: int,
    rest: int,
    target: bytes,
    opt_kind: int,
    lladdr: bytes | None,
) -> int:
    _ICMP.pack_into(buf, offset, type, 0, 0, rest)
    buf[offset + 8 : offset + 24] = target
    length = NS_LEN
    if lladdr is not None:
        _LLADDR.pack_into(buf, offset + NS_LEN, opt_kind, 1, lladdr)
        length += LLADDR_OPT_LEN
    fill_icmpv6_checksum(buf, offset, length, src, dst)
    return length


def pack_neighbor_solicit(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    target: bytes,
    source_lladdr: bytes | None = None,
) -> int:
    """Neighbor Solicitation (RFC 4861 §4.3); no SLLA when ``src`` is unspecified (DAD, §4.3)."""
    return _pack_target_msg(
        buf, offset, src, dst, ND_NEIGHBOR_SOLICIT, 0, target, SLLA, source_lladdr
    )


def pack_neighbor_advert(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    target: bytes,
    *,
    router: bool = False,
    solicited: bool = False,
    override: bool = False,
    target_lladdr: bytes | None = None,
) -> int:
    """Neighbor Advertisement (RFC 4861 §4.4)."""
    rest = (
        (NA_ROUTER if router else 0)
        | (NA_SOLICITED if solicited else 0)
        | (NA_OVERRIDE if override else 0)
    )
    return _pack_target_msg(
        buf, offset, src, dst, ND_NEIGHBOR_ADVERT, rest, target, TLLA, target_lladdr
    )


def pack_router_solicit(
    buf: WritableBuffer, offset: int, src: bytes, dst: bytes, source_lladdr: bytes | None = None
) -> int:
    """Router Solicitation (RFC 4861 §4.1)."""
    _ICMP.pack_into(buf, offset, ND_ROUTER_SOLICIT, 0, 0, 0)
    length = RS_LEN
    if source_lladdr is not None:
        _LLADDR.pack_into(buf, offset + RS_LEN, SLLA, 1, source_lladdr)
        length += LLADDR_OPT_LEN
    fill_icmpv6_checksum(buf, offset, length, src, dst)
    return length


def pack_router_advert(
    buf: WritableBuffer,
    offset: int,
    src: bytes,
    dst: bytes,
    *,
    cur_hop_limit: int = 64,
    managed: bool = False,
    other: bool = False,
    router_lifetime: int = 1800,
    reachable_time: int = 0,
    retrans_timer: int = 0,
    source_lladdr: bytes | None = None,
    mtu: int | None = None,
    prefixes: Sequence[PrefixInfo] = (),
) -> int:
    """Router Advertisement (RFC 4861 §4.2) with SLLA, MTU and Prefix Information options."""
    flags = (RA_MANAGED if managed else 0) | (RA_OTHER if other else 0)
    rest = cur_hop_limit << 24 | flags << 16 | router_lifetime
    _ICMP.pack_into(buf, offset, ND_ROUTER_ADVERT, 0, 0, rest)
    _RA_TIMERS.pack_into(buf, offset + 8, reachable_time, retrans_timer)
    pos = offset + RA_LEN
    if source_lladdr is not None:
        _LLADDR.pack_into(buf, pos, SLLA, 1, source_lladdr)
        pos += LLADDR_OPT_LEN
    if mtu is not None:
        _MTU_OPT.pack_into(buf, pos, MTU, 1, 0, mtu)
        pos += MTU_OPT_LEN
    for pi in prefixes:
        pflags = (PI_ON_LINK if pi.on_link else 0) | (PI_AUTONOMOUS if pi.autonomous else 0)
        _PREFIX.pack_into(
            buf, pos, PREFIX_INFO, 4, pi.prefix_len, pflags, pi.valid_lifetime,
            pi.preferred_lifetime, 0, pi.prefix,
        )
        pos += PREFIX_OPT_LEN
    length = pos - offset
    fill_icmpv6_checksum(buf, offset, length, src, dst)
    return length
