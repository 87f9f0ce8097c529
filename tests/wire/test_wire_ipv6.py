"""IPv6 fixed header and extension-header walk (RFC 8200) against scapy, plus malformed input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
    Pad1,
    PadN,
    RouterAlert,
)
from scapy.packet import Packet, Raw
from scapy.utils6 import in6_getnsma, in6_mactoifaceid
from wire_helpers import (
    PROPERTY,
    a6,
    every_truncation_malformed,
    expect_malformed,
    ip6,
    macs,
    p6,
    payloads,
    u8,
    u16,
    u32,
)

from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ipv6 import (
    IPV6_HLEN,
    MAX_EXTENSION_HEADERS,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_NONE,
    NH_ROUTING,
    NH_UDP,
    IPv6Chain,
    ipv6_is_link_local,
    ipv6_is_multicast,
    link_local_from_mac,
    pack_ipv6,
    pack_ipv6_fragment,
    parse_ipv6,
    parse_ipv6_chain,
    solicited_node_multicast,
)
from aionetstack.wire.udp import udp_checksum_ok

SRC = p6("fe80::1")
DST = p6("2001:db8::2")


def chain_of(data: bytes) -> IPv6Chain:
    return parse_ipv6_chain(parse_ipv6(memoryview(data)))


# Upper-layer next-header values (scapy's dissector trips over random extension-header bytes).
upper_nh = u8.filter(lambda v: v not in (0, 43, 44, 50, 51, 60, 135, 139, 140))


@PROPERTY
@given(ip6, ip6, u8, st.integers(0, 0xFFFFF), upper_nh, u8, payloads, st.booleans(), u32,
       st.integers(0, 0x1FFF), st.booleans())
def test_ipv6_ours_to_scapy(
    src: bytes,
    dst: bytes,
    tc: int,
    fl: int,
    nh: int,
    hlim: int,
    payload: bytes,
    fragment: bool,
    ident: int,
    frag: int,
    more: bool,
) -> None:
    extra = 8 if fragment else 0
    buf = bytearray(IPV6_HLEN + extra + len(payload))
    n = pack_ipv6(
        buf,
        0,
        src=src,
        dst=dst,
        next_header=NH_FRAGMENT if fragment else nh,
        payload_len=extra + len(payload),
        hop_limit=hlim,
        traffic_class=tc,
        flow_label=fl,
    )
    assert n == IPV6_HLEN
    if fragment:
        assert pack_ipv6_fragment(buf, n, nh, frag * 8, more, ident) == 8
    buf[IPV6_HLEN + extra :] = payload
    pkt = IPv6(bytes(buf))
    assert (pkt.version, pkt.tc, pkt.fl, pkt.plen, pkt.hlim) == (6, tc, fl, len(buf) - 40, hlim)
    assert (pkt.src, pkt.dst) == (a6(src), a6(dst))
    if fragment:
        assert pkt.nh == NH_FRAGMENT
        fh = pkt[IPv6ExtHdrFragment]
        assert (fh.nh, fh.offset, fh.m, fh.id) == (nh, frag, int(more), ident)
        chain = chain_of(bytes(buf))
        assert chain.protocol == NH_FRAGMENT and chain.fragment is not None
        assert chain.fragment.frag_offset == frag * 8 and chain.fragment.more == more
        assert chain.fragment.ident == ident and chain.fragment.next_header == nh
        assert bytes(chain.fragment.payload) == payload
    else:
        assert pkt.nh == nh


# ---- scapy-built extension chains ----------------------------------------------------------

# (types scapy dissects with a class of its own are left out: Jumbo, HAO, Router Alert, RPL, ...)
unknown_otypes = st.integers(2, 255).filter(
    lambda t: t not in (0xC2, 0xC9, 0x05, 0x04, 0x07, 0x63))
tlv_options = st.lists(
    st.one_of(
        st.just("pad1"),
        st.binary(max_size=5).map(lambda d: ("padn", d)),
        st.just("ra"),
        st.tuples(unknown_otypes, st.binary(max_size=6)),
    ),
    max_size=3,
)


def make_options(spec: list[Any]) -> list[Packet]:
    out: list[Packet] = []
    for item in spec:
        if item == "pad1":
            out.append(Pad1())
        elif item == "ra":
            out.append(RouterAlert())
        elif item[0] == "padn":
            out.append(PadN(optdata=item[1]))
        else:
            out.append(HBHOptUnknown(otype=item[0], optdata=item[1]))
    return out


middle_header = st.one_of(
    tlv_options.map(lambda o: ("dst", o)),
    st.tuples(st.just("rt"), st.integers(0, 3), st.integers(0, 3)),
)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[Any], Any, Any]:
    headers: list[Any] = []
    if draw(st.booleans()):
        headers.append(("hbh", draw(tlv_options)))
    headers += draw(st.lists(middle_header, max_size=4))
    frag = None
    if draw(st.booleans()):
        frag = (draw(st.integers(0, 0x1FFF)), draw(st.integers(0, 1)), draw(u32))
    upper = draw(
        st.one_of(
            st.tuples(st.just("udp"), u16, u16, payloads),
            st.tuples(st.just("icmp"), u16, u16),
            st.just(("none",)),
        )
    )
    return headers, frag, upper


def build_chain(headers: list[Any], frag: Any, upper: Any) -> Packet:
    pkt: Packet = IPv6(src=a6(SRC), dst=a6(DST), hlim=255)
    for h in headers:
        if h[0] == "hbh":
            pkt = pkt / IPv6ExtHdrHopByHop(options=make_options(h[1]))
        elif h[0] == "dst":
            pkt = pkt / IPv6ExtHdrDestOpt(options=make_options(h[1]))
        else:
            addrs = [f"2001:db8::{i + 10}" for i in range(h[2])]
            pkt = pkt / IPv6ExtHdrRouting(addresses=addrs, segleft=min(h[1], h[2]))
    if frag is not None:
        pkt = pkt / IPv6ExtHdrFragment(offset=frag[0], m=frag[1], id=frag[2])
    if upper[0] == "udp":
        pkt = pkt / UDP(sport=upper[1], dport=upper[2]) / Raw(upper[3])
    elif upper[0] == "icmp":
        pkt = pkt / ICMPv6EchoRequest(id=upper[1], seq=upper[2])
    else:
        pkt.lastlayer().nh = NH_NONE
    return pkt


_EXT_TYPES = {IPv6ExtHdrHopByHop: NH_HOPOPTS, IPv6ExtHdrDestOpt: NH_DSTOPTS,
              IPv6ExtHdrRouting: NH_ROUTING}


def expected_walk(data: bytes) -> dict[str, Any]:
    """What the walk should report, computed from scapy's dissection of ``data``."""
    layer = IPv6(data).payload
    offset = 0
    routing = None
    while type(layer) in _EXT_TYPES:
        raw_len = len(bytes(layer)) - len(bytes(layer.payload))
        if isinstance(layer, IPv6ExtHdrRouting):
            routing = (layer.type, layer.segleft)
        else:
            pos = offset + 2
            for opt in layer.options:
                action = opt.otype >> 6
                if opt.otype not in (0, 1) and action:
                    return {"protocol": _EXT_TYPES[type(layer)], "offset": offset,
                            "bad_option": (action, IPV6_HLEN + pos), "routing": routing}
                pos += len(bytes(opt))
        offset += raw_len
        layer = layer.payload
    if isinstance(layer, IPv6ExtHdrFragment):
        return {"protocol": NH_FRAGMENT, "offset": offset, "bad_option": None, "routing": routing,
                "fragment": layer}
    return {"protocol": None, "offset": offset, "bad_option": None, "routing": routing}


@PROPERTY
@given(chains())
def test_ipv6_chain_scapy_to_ours(spec: tuple[list[Any], Any, Any]) -> None:
    headers, frag, upper = spec
    pkt = build_chain(headers, frag, upper)
    data = bytes(pkt)
    hdr = parse_ipv6(memoryview(data + b"\x00\x00"))  # trailing padding is excluded
    ref = IPv6(data)
    assert hdr.payload_length == ref.plen == len(data) - IPV6_HLEN
    assert (hdr.next_header, hdr.hop_limit) == (ref.nh, 255)
    assert (hdr.src, hdr.dst) == (SRC, DST)
    chain = parse_ipv6_chain(hdr)
    exp = expected_walk(data)
    assert chain.offset == exp["offset"]
    assert chain.bad_option == exp["bad_option"]
    assert chain.hop_by_hop_seen == bool(headers and headers[0][0] == "hbh")
    assert bytes(chain.payload) == data[IPV6_HLEN + chain.offset :]
    if exp["bad_option"] is not None:
        assert chain.protocol == exp["protocol"]
        return
    assert chain.routing == exp["routing"]
    assert chain.ext_count == len(headers) + (frag is not None)
    if frag is not None:
        fh = exp["fragment"]
        assert chain.protocol == NH_FRAGMENT and chain.fragment is not None
        assert chain.fragment.frag_offset == fh.offset * 8
        assert chain.fragment.more == bool(fh.m) and chain.fragment.ident == fh.id
        assert chain.fragment.unfragmentable_len == chain.offset
        assert bytes(chain.fragment.payload) == bytes(fh.payload)
        return
    expected_proto = {"udp": NH_UDP, "icmp": NH_ICMPV6, "none": NH_NONE}[upper[0]]
    assert chain.protocol == expected_proto
    if upper[0] == "udp" and not any(h[0] == "rt" and min(h[1], h[2]) for h in headers):
        assert udp_checksum_ok(SRC, DST, chain.payload)
    # Cutting the payload length anywhere inside the extension headers is "truncated".
    for k in range(chain.offset):
        cut = bytearray(data[: IPV6_HLEN + k])
        cut[4:6] = k.to_bytes(2, "big")
        with pytest.raises(MalformedPacket) as info:
            chain_of(bytes(cut))
        assert info.value.reason == "truncated"
    every_truncation_malformed(parse_ipv6, data)


def test_fixed_header_errors() -> None:
    good = bytes(IPv6(src="::1", dst="::2", nh=59) / Raw(b"abcd"))
    every_truncation_malformed(parse_ipv6, good)
    expect_malformed(parse_ipv6, b"\x45" + good[1:], "bad-version")
    expect_malformed(parse_ipv6, b"\x45" + good[1:10], "bad-version")
    lying = bytearray(good)
    lying[4:6] = (5).to_bytes(2, "big")
    expect_malformed(parse_ipv6, bytes(lying), "bad-length")
    assert bytes(parse_ipv6(memoryview(good + b"pad")).payload) == b"abcd"


def test_jumbogram_unsupported() -> None:
    jumbo = IPv6(src="::1", dst="::2", plen=0) / IPv6ExtHdrHopByHop(
        options=[Jumbo(jumboplen=70000)], nh=59
    ) / Raw(b"x" * 8)
    expect_malformed(parse_ipv6, bytes(jumbo), "unsupported")


def _opt_header(nh: int, options: bytes) -> bytes:
    assert (len(options) + 2) % 8 == 0
    return bytes((nh, (len(options) + 2) // 8 - 1)) + options


def _packet(first_nh: int, exts: bytes) -> bytes:
    buf = bytearray(IPV6_HLEN + len(exts))
    pack_ipv6(buf, 0, src=SRC, dst=DST, next_header=first_nh, payload_len=len(exts))
    buf[IPV6_HLEN:] = exts
    return bytes(buf)


@pytest.mark.parametrize(
    "options",
    [
        b"\x3e\x05\x00\x00\x00\x00",  # option data runs past the header
        b"\x01\x03\x00\x00\x00\x3e",  # type byte with no length byte at the end
        b"\x00\x00\x00\x00\x01\x01",  # PadN needs one more byte
    ],
)
@pytest.mark.parametrize("kind", [NH_HOPOPTS, NH_DSTOPTS])
def test_option_overrun(kind: int, options: bytes) -> None:
    data = _packet(kind, _opt_header(NH_NONE, options))
    with pytest.raises(MalformedPacket) as info:
        chain_of(data)
    assert info.value.reason == "bad-option"


@pytest.mark.parametrize(
    ("otype", "action"), [(0x3E, 0), (0x7E, 1), (0xBE, 2), (0xFE, 3)]
)
def test_option_actions(otype: int, action: int) -> None:
    # DestOpt [PadN(0) unknown(otype, 0 bytes) Pad1 Pad1] -> DestOpt [Pad1 * 6] -> No Next Header
    exts = _opt_header(NH_DSTOPTS, b"\x01\x00" + bytes((otype, 0)) + b"\x00\x00")
    exts += _opt_header(NH_NONE, b"\x00" * 6)
    chain = chain_of(_packet(NH_DSTOPTS, exts))
    if action == 0:
        assert chain.bad_option is None and chain.protocol == NH_NONE and chain.offset == 16
    else:
        assert chain.bad_option == (action, IPV6_HLEN + 4)
        assert chain.protocol == NH_DSTOPTS and chain.offset == 0


def test_pad1_runs_and_padn() -> None:
    exts = _opt_header(NH_NONE, b"\x00" * 14)
    assert chain_of(_packet(NH_HOPOPTS, exts)).protocol == NH_NONE
    exts = _opt_header(NH_NONE, b"\x01\x0c" + b"\x00" * 12)
    assert chain_of(_packet(NH_HOPOPTS, exts)).hop_by_hop_seen


def test_hop_by_hop_must_be_first() -> None:
    exts = _opt_header(NH_HOPOPTS, b"\x01\x04\x00\x00\x00\x00")
    exts += _opt_header(NH_NONE, b"\x01\x04\x00\x00\x00\x00")
    with pytest.raises(MalformedPacket) as info:
        chain_of(_packet(NH_DSTOPTS, exts))
    assert info.value.reason == "bad-header"
    # scapy builds the same thing
    bad = IPv6() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / Raw(b"")
    with pytest.raises(MalformedPacket):
        chain_of(bytes(bad))


@pytest.mark.parametrize(
    ("dest_opts", "fragment", "ok"),
    [
        (MAX_EXTENSION_HEADERS, False, True),
        (MAX_EXTENSION_HEADERS - 1, True, True),
        (MAX_EXTENSION_HEADERS, True, False),
        (MAX_EXTENSION_HEADERS + 1, False, False),
        (300, False, False),
    ],
)
def test_extension_header_cap(dest_opts: int, fragment: bool, ok: bool) -> None:
    pkt: Packet = IPv6(src=a6(SRC), dst=a6(DST))
    for _ in range(dest_opts):
        pkt = pkt / IPv6ExtHdrDestOpt()
    if fragment:
        pkt = pkt / IPv6ExtHdrFragment()
    pkt.lastlayer().nh = NH_NONE
    data = bytes(pkt)
    if ok:
        assert chain_of(data).ext_count == dest_opts + fragment
    else:
        with pytest.raises(MalformedPacket) as info:
            chain_of(data)
        assert info.value.reason == "bad-header"


def test_extension_runs_off_the_end() -> None:
    hbh = bytes((NH_NONE, 1)) + b"\x01\x04" + b"\x00" * 4  # claims 16 bytes, has 8
    with pytest.raises(MalformedPacket) as info:
        chain_of(_packet(NH_HOPOPTS, hbh))
    assert info.value.reason == "truncated"
    for n in range(8):
        with pytest.raises(MalformedPacket) as info:
            chain_of(_packet(NH_FRAGMENT, bytes(n)))
        assert info.value.reason == "truncated"


def test_routing_and_pointer() -> None:
    rt = IPv6ExtHdrRouting(addresses=["2001:db8::1"], segleft=1, type=0)
    data = bytes(IPv6(src="2001:db8::5", dst="2001:db8::6") / rt / UDP(sport=1, dport=2))
    chain = chain_of(data)
    assert chain.routing == (0, 1) and chain.routing_offset == 0
    assert chain.protocol == NH_UDP and chain.offset == 24 and chain.nh_pointer == IPV6_HLEN
    assert chain_of(bytes(IPv6() / UDP())).nh_pointer == 6


def test_address_helpers() -> None:
    for text in ("2001:db8::1234:5678", "fe80::1", "::", "ffff:ffff::abcd:ef01"):
        addr = p6(text)
        assert solicited_node_multicast(addr) == in6_getnsma(addr)
        assert ipv6_is_multicast(solicited_node_multicast(addr))
    assert ipv6_is_link_local(p6("fe80::1")) and ipv6_is_link_local(p6("febf::1"))
    assert not ipv6_is_link_local(p6("fec0::1")) and not ipv6_is_link_local(p6("ff02::1"))
    assert ipv6_is_multicast(p6("ff02::1")) and not ipv6_is_multicast(p6("fe80::1"))


@PROPERTY
@given(macs)
def test_link_local_from_mac(mac: bytes) -> None:
    ll = link_local_from_mac(mac)
    iid = in6_mactoifaceid(mac.hex(":"))
    assert ll == p6("fe80::" + iid.lower())
    assert ipv6_is_link_local(ll)


def test_pack_fragment_rejects_unaligned_offset() -> None:
    with pytest.raises(ValueError):
        pack_ipv6_fragment(bytearray(8), 0, NH_UDP, 12, False, 1)
