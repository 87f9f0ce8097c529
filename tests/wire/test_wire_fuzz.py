"""Arbitrary bytes fed to every parser raise nothing but MalformedPacket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wire_helpers import FUZZ, only_malformed

from aionetstack.wire.arp import parse_arp
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ethernet import parse_ethernet
from aionetstack.wire.icmpv4 import parse_icmpv4
from aionetstack.wire.icmpv6 import parse_icmpv6
from aionetstack.wire.ipv4 import parse_ipv4
from aionetstack.wire.ipv6 import parse_ipv6, parse_ipv6_chain
from aionetstack.wire.ndp import (
    parse_ndp_options,
    parse_neighbor_advert,
    parse_neighbor_solicit,
    parse_redirect,
    parse_router_advert,
    parse_router_solicit,
)
from aionetstack.wire.tcp import parse_tcp, tcp_checksum_ok
from aionetstack.wire.udp import parse_udp, udp_checksum_ok

SRC6 = bytes(15) + b"\x01"
DST6 = bytes(15) + b"\x02"
blobs = st.binary(max_size=200)


def _ipv6_full(view: memoryview) -> None:
    parse_ipv6_chain(parse_ipv6(view))


def _icmpv6_ndp(view: memoryview) -> None:
    msg = parse_icmpv6(view, SRC6, DST6, verify_checksum=False)
    for parse in (
        parse_neighbor_solicit,
        parse_neighbor_advert,
        parse_router_solicit,
        parse_router_advert,
        parse_redirect,
    ):
        try:
            parse(msg)
        except MalformedPacket:
            pass


PARSERS = [
    parse_ethernet,
    parse_arp,
    parse_ipv4,
    lambda v: parse_ipv4(v, verify_checksum=False),
    parse_ipv6,
    _ipv6_full,
    parse_icmpv4,
    lambda v: parse_icmpv4(v, verify_checksum=False),
    lambda v: parse_icmpv6(v, SRC6, DST6),
    _icmpv6_ndp,
    parse_ndp_options,
    parse_udp,
    parse_tcp,
]


@FUZZ
@given(blobs)
def test_every_parser_on_arbitrary_bytes(data: bytes) -> None:
    for parse in PARSERS:
        only_malformed(parse, data)
    # The checksum predicates never raise at all.
    view = memoryview(data)
    udp_checksum_ok(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", view)
    udp_checksum_ok(SRC6, DST6, view)
    tcp_checksum_ok(SRC6, DST6, view)


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=300), st.integers(0, 15))
def test_ipv6_extension_chains(first_nh: int, exts: bytes, tc: int) -> None:
    """Well-formed fixed header, arbitrary extension bytes: exercises the chain walk."""
    # Bias the bytes towards extension-header next-header values so chains get long.
    header = bytes((0x60 | tc, 0, 0, 0)) + len(exts).to_bytes(2, "big") + bytes((first_nh, 64))
    only_malformed(_ipv6_full, header + SRC6 + DST6 + exts)


ext_chain = st.lists(
    st.tuples(st.sampled_from([0, 43, 44, 60, 60, 60, 6, 17, 58, 59]), st.integers(0, 3),
              st.binary(max_size=40)),
    max_size=20,
)


@FUZZ
@given(st.sampled_from([0, 43, 44, 60]), ext_chain)
def test_ipv6_structured_chains(first_nh: int, chain: list[tuple[int, int, bytes]]) -> None:
    body = b""
    for nh, hlen, filler in chain:
        size = (hlen + 1) * 8
        body += (bytes((nh, hlen)) + filler + bytes(size))[:size]
    header = b"\x60\x00\x00\x00" + len(body).to_bytes(2, "big") + bytes((first_nh, 64))
    only_malformed(_ipv6_full, header + SRC6 + DST6 + body)


@FUZZ
@given(st.integers(5, 15), st.binary(max_size=40), st.binary(max_size=20))
def test_tcp_option_bytes(words: int, options: bytes, payload: bytes) -> None:
    hl = words * 4
    opts = (options + bytes(40))[: hl - 20]
    seg = bytearray(20) + opts + payload
    seg[12] = words << 4
    only_malformed(parse_tcp, bytes(seg))


@FUZZ
@given(st.integers(5, 15), st.binary(max_size=40), st.binary(max_size=20))
def test_ipv4_option_bytes(ihl: int, options: bytes, payload: bytes) -> None:
    hl = ihl * 4
    opts = (options + bytes(40))[: hl - 20]
    pkt = bytearray(20) + opts + payload
    pkt[0] = 0x40 | ihl
    pkt[2:4] = len(pkt).to_bytes(2, "big")
    only_malformed(lambda v: parse_ipv4(v, verify_checksum=False), bytes(pkt))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 4), st.binary(max_size=16)),
                max_size=8))
def test_ndp_option_lists(options: list[tuple[int, int, bytes]]) -> None:
    body = b"".join(bytes((kind, length)) + data for kind, length, data in options)
    only_malformed(parse_ndp_options, body)
