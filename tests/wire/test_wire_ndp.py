"""Neighbor Discovery (RFC 4861) messages and options against scapy, plus malformed input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.packet import Packet
from wire_helpers import PROPERTY, a6, expect_malformed, ip6, mac_bytes, mac_str, macs, p6, u8, u16
from wire_helpers import u32 as u32s

from aionetstack.wire import icmpv6
from aionetstack.wire.checksum import transport_checksum
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.icmpv6 import IcmpV6Message, parse_icmpv6
from aionetstack.wire.ipv6 import IPV6_HLEN, NH_ICMPV6, pack_ipv6, parse_ipv6
from aionetstack.wire.ndp import (
    LLADDR_OPT_LEN,
    NS_LEN,
    PrefixInfo,
    ndp_message_len,
    pack_neighbor_advert,
    pack_neighbor_solicit,
    pack_router_advert,
    pack_router_solicit,
    parse_ndp_options,
    parse_neighbor_advert,
    parse_neighbor_solicit,
    parse_redirect,
    parse_router_advert,
    parse_router_solicit,
)

LL_SRC = p6("fe80::1")
ALL_NODES = p6("ff02::1")
unicast6 = ip6.filter(lambda a: a[0] != 0xFF)
maybe_mac = st.one_of(st.none(), macs)


def wrap(src: bytes, dst: bytes, build: Any, size: int) -> bytes:
    """Put the ND message written by ``build(buf, offset)`` in an IPv6 packet (hop limit 255)."""
    buf = bytearray(IPV6_HLEN + size)
    n = build(buf, IPV6_HLEN)
    assert n == size
    pack_ipv6(buf, 0, src=src, dst=dst, next_header=NH_ICMPV6, payload_len=n, hop_limit=255)
    return bytes(buf)


def scapy_checksum_agrees(data: bytes, cls: type[Packet]) -> None:
    pkt = IPv6(data)
    ours = pkt[cls].cksum
    del pkt[cls].cksum
    assert IPv6(bytes(pkt))[cls].cksum == ours


def ours(data: bytes) -> IcmpV6Message:
    ip = parse_ipv6(memoryview(data))
    assert ip.hop_limit == 255 and ip.next_header == NH_ICMPV6
    return parse_icmpv6(ip.payload, ip.src, ip.dst)


# ---- ours -> scapy ------------------------------------------------------------------------


@PROPERTY
@given(unicast6, ip6, unicast6, maybe_mac)
def test_ns_ours_to_scapy(src: bytes, dst: bytes, target: bytes, lladdr: bytes | None) -> None:
    size = ndp_message_len(icmpv6.ND_NEIGHBOR_SOLICIT, lladdr=lladdr is not None)
    data = wrap(src, dst, lambda b, o: pack_neighbor_solicit(b, o, src, dst, target, lladdr), size)
    pkt = IPv6(data)
    ns = pkt[ICMPv6ND_NS]
    assert (ns.type, ns.code, ns.tgt) == (135, 0, a6(target))
    if lladdr is None:
        assert ICMPv6NDOptSrcLLAddr not in pkt
    else:
        assert mac_bytes(pkt[ICMPv6NDOptSrcLLAddr].lladdr) == lladdr
    scapy_checksum_agrees(data, ICMPv6ND_NS)
    parsed = parse_neighbor_solicit(ours(data))
    assert parsed.target == target and parsed.options.source_lladdr == lladdr


@PROPERTY
@given(unicast6, ip6, unicast6, st.booleans(), st.booleans(), st.booleans(), maybe_mac)
def test_na_ours_to_scapy(
    src: bytes, dst: bytes, target: bytes, r: bool, s: bool, o: bool, lladdr: bytes | None
) -> None:
    size = ndp_message_len(icmpv6.ND_NEIGHBOR_ADVERT, lladdr=lladdr is not None)
    data = wrap(
        src,
        dst,
        lambda b, off: pack_neighbor_advert(
            b, off, src, dst, target, router=r, solicited=s, override=o, target_lladdr=lladdr
        ),
        size,
    )
    pkt = IPv6(data)
    na = pkt[ICMPv6ND_NA]
    assert (na.type, na.code, na.tgt) == (136, 0, a6(target))
    assert (int(r), int(s), int(o)) == (na.R, na.S, na.O)
    if lladdr is not None:
        assert mac_bytes(pkt[ICMPv6NDOptDstLLAddr].lladdr) == lladdr
    scapy_checksum_agrees(data, ICMPv6ND_NA)
    parsed = parse_neighbor_advert(ours(data))
    assert (parsed.router, parsed.solicited, parsed.override) == (r, s, o)
    assert parsed.target == target and parsed.options.target_lladdr == lladdr


@PROPERTY
@given(unicast6, maybe_mac)
def test_rs_ours_to_scapy(src: bytes, lladdr: bytes | None) -> None:
    dst = p6("ff02::2")
    size = ndp_message_len(icmpv6.ND_ROUTER_SOLICIT, lladdr=lladdr is not None)
    data = wrap(src, dst, lambda b, o: pack_router_solicit(b, o, src, dst, lladdr), size)
    pkt = IPv6(data)
    assert (pkt[ICMPv6ND_RS].type, pkt[ICMPv6ND_RS].code) == (133, 0)
    if lladdr is not None:
        assert mac_bytes(pkt[ICMPv6NDOptSrcLLAddr].lladdr) == lladdr
    scapy_checksum_agrees(data, ICMPv6ND_RS)
    assert parse_router_solicit(ours(data)).options.source_lladdr == lladdr


prefix_infos = st.builds(
    PrefixInfo,
    ip6,
    st.integers(0, 128),
    st.booleans(),
    st.booleans(),
    u32s,
    u32s,
)


@PROPERTY
@given(
    u8,
    st.booleans(),
    st.booleans(),
    u16,
    u32s,
    u32s,
    maybe_mac,
    st.one_of(st.none(), st.integers(1280, 0xFFFFFFFF)),
    st.lists(prefix_infos, max_size=3),
)
def test_ra_ours_to_scapy(
    hop: int,
    managed: bool,
    other: bool,
    lifetime: int,
    reachable: int,
    retrans: int,
    lladdr: bytes | None,
    mtu: int | None,
    prefixes: list[PrefixInfo],
) -> None:
    size = ndp_message_len(
        icmpv6.ND_ROUTER_ADVERT, lladdr=lladdr is not None, mtu=mtu is not None,
        prefixes=len(prefixes),
    )
    data = wrap(
        LL_SRC,
        ALL_NODES,
        lambda b, o: pack_router_advert(
            b, o, LL_SRC, ALL_NODES, cur_hop_limit=hop, managed=managed, other=other,
            router_lifetime=lifetime, reachable_time=reachable, retrans_timer=retrans,
            source_lladdr=lladdr, mtu=mtu, prefixes=prefixes,
        ),
        size,
    )
    pkt = IPv6(data)
    ra = pkt[ICMPv6ND_RA]
    assert (ra.chlim, ra.M, ra.O, ra.routerlifetime) == (hop, int(managed), int(other), lifetime)
    assert (ra.reachabletime, ra.retranstimer) == (reachable, retrans)
    if lladdr is not None:
        assert mac_bytes(pkt[ICMPv6NDOptSrcLLAddr].lladdr) == lladdr
    if mtu is not None:
        assert pkt[ICMPv6NDOptMTU].mtu == mtu
    layer = pkt.getlayer(ICMPv6NDOptPrefixInfo)
    for pi in prefixes:
        assert layer is not None
        assert (layer.prefixlen, layer.L, layer.A) == (pi.prefix_len, pi.on_link, pi.autonomous)
        assert (layer.validlifetime, layer.preferredlifetime) == (
            pi.valid_lifetime, pi.preferred_lifetime)
        assert layer.prefix == a6(pi.prefix)
        layer = layer.payload.getlayer(ICMPv6NDOptPrefixInfo)
    assert layer is None
    scapy_checksum_agrees(data, ICMPv6ND_RA)
    parsed = parse_router_advert(ours(data))
    assert (parsed.cur_hop_limit, parsed.managed, parsed.other) == (hop, managed, other)
    assert (parsed.router_lifetime, parsed.reachable_time, parsed.retrans_timer) == (
        lifetime, reachable, retrans)
    assert parsed.options.source_lladdr == lladdr and parsed.options.mtu == mtu
    assert parsed.options.prefixes == prefixes


# ---- scapy -> ours ------------------------------------------------------------------------

def _extra_options(spec: list[Any]) -> Packet | None:
    out: Packet | None = None
    for item in spec:
        if item[0] == "mtu":
            opt = ICMPv6NDOptMTU(mtu=item[1])
        elif item[0] == "rdnss":  # an option we do not know: skipped
            opt = ICMPv6NDOptRDNSS(dns=["2001:db8::53"] * item[1])
        else:
            opt = ICMPv6NDOptPrefixInfo(prefix=a6(item[1]), prefixlen=item[2], L=item[3],
                                        A=item[4], validlifetime=item[5], preferredlifetime=item[6])
        out = opt if out is None else out / opt
    return out


extra_options = st.lists(
    st.one_of(
        st.tuples(st.just("mtu"), u32s),
        st.tuples(st.just("rdnss"), st.integers(1, 3)),
        st.tuples(st.just("pi"), ip6, st.integers(0, 128), st.integers(0, 1), st.integers(0, 1),
                  u32s, u32s),
    ),
    max_size=3,
)


@PROPERTY
@given(
    st.sampled_from(["ns", "na", "rs", "ra", "redirect"]),
    unicast6,
    unicast6,
    maybe_mac,
    st.integers(0, 7),
    u8,
    u16,
    u32s,
    u32s,
    extra_options,
)
def test_ndp_scapy_to_ours(
    kind: str,
    target: bytes,
    dest: bytes,
    lladdr: bytes | None,
    flags: int,
    hop: int,
    lifetime: int,
    reachable: int,
    retrans: int,
    extra: list[Any],
) -> None:
    if kind == "ns":
        msg: Packet = ICMPv6ND_NS(tgt=a6(target))
        ll_cls: type[Packet] = ICMPv6NDOptSrcLLAddr
    elif kind == "na":
        msg = ICMPv6ND_NA(tgt=a6(target), R=flags >> 2, S=(flags >> 1) & 1, O=flags & 1)
        ll_cls = ICMPv6NDOptDstLLAddr
    elif kind == "rs":
        msg = ICMPv6ND_RS()
        ll_cls = ICMPv6NDOptSrcLLAddr
    elif kind == "ra":
        msg = ICMPv6ND_RA(chlim=hop, M=flags >> 2, O=(flags >> 1) & 1, H=flags & 1,
                          routerlifetime=lifetime, reachabletime=reachable, retranstimer=retrans)
        ll_cls = ICMPv6NDOptSrcLLAddr
    else:
        msg = ICMPv6ND_Redirect(tgt=a6(target), dst=a6(dest))
        ll_cls = ICMPv6NDOptDstLLAddr
    if lladdr is not None:
        msg = msg / ll_cls(lladdr=mac_str(lladdr))
    tail = _extra_options(extra)
    if tail is not None:
        msg = msg / tail
    data = bytes(IPv6(src=a6(LL_SRC), dst=a6(ALL_NODES), hlim=255) / msg)
    m = ours(data)
    if kind == "ns":
        ns = parse_neighbor_solicit(m)
        assert ns.target == target and ns.options.source_lladdr == lladdr
        options = ns.options
    elif kind == "na":
        na = parse_neighbor_advert(m)
        assert na.target == target and na.options.target_lladdr == lladdr
        assert (na.router, na.solicited, na.override) == (
            bool(flags & 4), bool(flags & 2), bool(flags & 1))
        options = na.options
    elif kind == "rs":
        rs = parse_router_solicit(m)
        assert rs.options.source_lladdr == lladdr
        options = rs.options
    elif kind == "ra":
        ra = parse_router_advert(m)
        assert (ra.cur_hop_limit, ra.managed, ra.other) == (hop, bool(flags & 4), bool(flags & 2))
        assert (ra.router_lifetime, ra.reachable_time, ra.retrans_timer) == (
            lifetime, reachable, retrans)
        assert ra.options.source_lladdr == lladdr
        options = ra.options
    else:
        rd = parse_redirect(m)
        assert (rd.target, rd.destination) == (target, dest)
        assert rd.options.target_lladdr == lladdr
        options = rd.options
    mtus = [e[1] for e in extra if e[0] == "mtu"]
    assert options.mtu == (mtus[-1] if mtus else None)
    pis = [e for e in extra if e[0] == "pi"]
    assert [(p.prefix, p.prefix_len, p.on_link, p.autonomous, p.valid_lifetime,
             p.preferred_lifetime) for p in options.prefixes] == [
        (e[1], e[2], bool(e[3]), bool(e[4]), e[5], e[6]) for e in pis]


# ---- malformed ------------------------------------------------------------------------------


def _ns_with_options(options: bytes, code: int = 0, target: str = "fe80::2") -> IcmpV6Message:
    body = bytes(ICMPv6ND_NS(tgt=target, code=code)) + options
    data = bytes(IPv6(src=a6(LL_SRC), dst="ff02::1:ff00:2", hlim=255, nh=58, plen=len(body)))
    return ours(data[:IPV6_HLEN] + _fix(body, data[:IPV6_HLEN]))


def _fix(body: bytes, ip: bytes) -> bytes:
    """Recompute the ICMPv6 checksum of ``body`` for the addresses in the IPv6 header ``ip``."""
    body = body[:2] + b"\x00\x00" + body[4:]
    csum = transport_checksum(ip[8:24], ip[24:40], 58, body)
    return body[:2] + csum.to_bytes(2, "big") + body[4:]


@pytest.mark.parametrize(
    "options",
    [
        b"\x01\x00" + bytes(6),  # length 0 (RFC 4861 §4.6: MUST discard)
        b"\x01\x01\x02\x00\x00\x00\x00\x01" + b"\x0e\x00" + bytes(6),  # later option, length 0
        b"\x01\x02\x02\x00\x00\x00\x00\x01",  # claims 16 bytes, has 8
        b"\x01",  # lone type byte
        b"\x01\x01\x02\x00\x00\x00\x00\x01\x19",  # trailing byte
        b"\x03\x01" + bytes(6),  # prefix information of the wrong length
        b"\x05\x02" + bytes(14),  # MTU option of the wrong length
    ],
)
def test_bad_options(options: bytes) -> None:
    msg = _ns_with_options(options)
    with pytest.raises(MalformedPacket) as info:
        parse_neighbor_solicit(msg)
    assert info.value.reason == "bad-option"
    expect_malformed(parse_ndp_options, options, "bad-option")


def test_unknown_options_skipped_and_first_lladdr_kept() -> None:
    options = (
        b"\x0e\x01" + b"n" * 6  # nonce
        + b"\xc8\x02" + bytes(14)  # unknown type 200
        + b"\x01\x01" + bytes.fromhex("020000000001")
        + b"\x01\x01" + bytes.fromhex("020000000002")
    )
    ns = parse_neighbor_solicit(_ns_with_options(options))
    assert ns.options.source_lladdr == bytes.fromhex("020000000001")
    assert ns.options.nonce == b"n" * 6


def test_message_validity_checks() -> None:
    with pytest.raises(MalformedPacket) as info:
        parse_neighbor_solicit(_ns_with_options(b"", code=1))
    assert info.value.reason == "bad-header"
    with pytest.raises(MalformedPacket) as info:
        parse_neighbor_solicit(_ns_with_options(b"", target="ff02::1"))
    assert info.value.reason == "bad-header"
    na = bytes(IPv6(src=a6(LL_SRC), dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="ff02::5"))
    with pytest.raises(MalformedPacket) as info:
        parse_neighbor_advert(ours(na))
    assert info.value.reason == "bad-header"
    # A Neighbor Solicitation cut short of its target (only 8..23 bytes) is truncated.
    full = bytes(IPv6(src=a6(LL_SRC), dst="ff02::1", hlim=255) / ICMPv6ND_NS(tgt="fe80::2"))
    for n in range(8, NS_LEN):
        body = full[IPV6_HLEN : IPV6_HLEN + n]
        ip = bytearray(full[:IPV6_HLEN])
        ip[4:6] = n.to_bytes(2, "big")
        with pytest.raises(MalformedPacket) as info:
            parse_neighbor_solicit(ours(bytes(ip) + _fix(body, bytes(ip))))
        assert info.value.reason == "truncated"
    ra = bytes(IPv6(src=a6(LL_SRC), dst="ff02::1", hlim=255) / ICMPv6ND_RA())
    ip = bytearray(ra[:IPV6_HLEN])
    ip[4:6] = (12).to_bytes(2, "big")
    with pytest.raises(MalformedPacket) as info:
        parse_router_advert(ours(bytes(ip) + _fix(ra[IPV6_HLEN : IPV6_HLEN + 12], bytes(ip))))
    assert info.value.reason == "truncated"


def test_message_len_helper() -> None:
    assert ndp_message_len(icmpv6.ND_NEIGHBOR_SOLICIT) == NS_LEN
    assert ndp_message_len(icmpv6.ND_NEIGHBOR_SOLICIT, lladdr=True) == NS_LEN + LLADDR_OPT_LEN
    assert ndp_message_len(icmpv6.ND_ROUTER_ADVERT, lladdr=True, mtu=True, prefixes=2) == 96
    assert ndp_message_len(icmpv6.ND_ROUTER_SOLICIT) == 8
