"""IPv4 header (RFC 791) round trips against scapy, options, and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import (
    IP,
    IPOption_EOL,
    IPOption_LSRR,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
)
from scapy.packet import Packet, Raw
from wire_helpers import (
    PROPERTY,
    a4,
    every_truncation_malformed,
    expect_malformed,
    ip4,
    p4,
    payloads,
    u8,
    u16,
)

from aionetstack.wire.checksum import checksum
from aionetstack.wire.ipv4 import (
    IPV4_HLEN,
    ipv4_is_broadcast_limited,
    ipv4_is_multicast,
    pack_ipv4,
    parse_ipv4,
)


def _rr(n: int) -> bytes:
    return bytes((7, 3 + 4 * n, 4)) + bytes(4 * n)


# Syntactically valid option byte strings: NOP, record route, router alert, an unknown option,
# optionally followed by EOL and junk after it (ignored, RFC 791 §3.1).
option_items = st.sampled_from(
    [b"\x01", _rr(1), _rr(2), _rr(4), b"\x94\x04\x00\x00", b"\x88\x04\x12\x34", b"\x44\x02"]
)
ipv4_options = st.builds(
    lambda items, eol: (b"".join(items) + (b"\x00" if eol else b""))[:40],
    st.lists(option_items, max_size=6),
    st.booleans(),
).filter(lambda o: _valid_options(o))


def _valid_options(o: bytes) -> bool:
    i = 0
    while i < len(o):
        if o[i] == 0:
            return True
        if o[i] == 1:
            i += 1
            continue
        if i + 1 >= len(o) or o[i + 1] < 2 or i + o[i + 1] > len(o):
            return False
        i += o[i + 1]
    return True


scapy_options = st.lists(
    st.sampled_from(
        [
            lambda: IPOption_NOP(),
            lambda: IPOption_RR(routers=["10.0.0.1", "10.0.0.2"]),
            lambda: IPOption_Router_Alert(),
            lambda: IPOption_LSRR(routers=["192.0.2.1"]),
            lambda: IPOption_EOL(),
        ]
    ),
    max_size=3,
).map(lambda makers: [m() for m in makers])


@PROPERTY
@given(
    ip4,
    ip4,
    u8,
    u8,
    u8,
    u16,
    st.booleans(),
    st.booleans(),
    st.integers(0, 0x1FFF),
    ipv4_options,
    payloads,
)
def test_ipv4_ours_to_scapy(
    src: bytes,
    dst: bytes,
    proto: int,
    ttl: int,
    tos: int,
    ident: int,
    df: bool,
    mf: bool,
    frag: int,
    options: bytes,
    payload: bytes,
) -> None:
    buf = bytearray(60 + len(payload))
    hl = pack_ipv4(
        buf,
        0,
        src=src,
        dst=dst,
        protocol=proto,
        payload_len=len(payload),
        ttl=ttl,
        tos=tos,
        ident=ident,
        df=df,
        mf=mf,
        frag_offset=frag * 8,
        options=options,
    )
    assert hl == IPV4_HLEN + ((len(options) + 3) & ~3)
    buf[hl : hl + len(payload)] = payload
    data = bytes(buf[: hl + len(payload)])
    pkt = IP(data)
    assert pkt.version == 4 and pkt.ihl * 4 == hl
    assert (pkt.tos, pkt.len, pkt.id, pkt.ttl, pkt.proto) == (tos, len(data), ident, ttl, proto)
    assert int(pkt.flags) == (2 if df else 0) | (1 if mf else 0)
    assert pkt.frag == frag
    assert (pkt.src, pkt.dst) == (a4(src), a4(dst))
    assert data[IPV4_HLEN:hl] == options + bytes(hl - IPV4_HLEN - len(options))
    ours = pkt.chksum
    # scapy recomputes the header checksum of the header alone
    again = IP(data[:hl])
    del again.chksum
    assert IP(bytes(again)).chksum == ours
    # and our parser accepts what we built
    hdr = parse_ipv4(memoryview(data))
    assert hdr.checksum == ours and bytes(hdr.payload) == payload
    assert bytes(hdr.options) == data[IPV4_HLEN:hl]


@PROPERTY
@given(
    ip4,
    ip4,
    u8,
    st.integers(1, 255),
    u8,
    u16,
    st.integers(0, 3),
    st.integers(0, 0x1FFF),
    scapy_options,
    payloads,
    st.binary(max_size=20),
)
def test_ipv4_scapy_to_ours(
    src: bytes,
    dst: bytes,
    proto: int,
    ttl: int,
    tos: int,
    ident: int,
    flags: int,
    frag: int,
    options: list[Packet],
    payload: bytes,
    padding: bytes,
) -> None:
    pkt = IP(
        src=a4(src),
        dst=a4(dst),
        proto=proto,
        ttl=ttl,
        tos=tos,
        id=ident,
        flags=flags,
        frag=frag,
        options=options,
    ) / Raw(payload)
    wire = bytes(pkt)
    data = wire + padding  # link-layer padding beyond total_length
    hdr = parse_ipv4(memoryview(data))
    parsed = IP(wire)
    assert hdr.header_len == parsed.ihl * 4
    assert hdr.total_length == len(wire)
    assert (hdr.tos, hdr.ident, hdr.ttl, hdr.protocol) == (tos, ident, ttl, proto)
    assert hdr.df == bool(flags & 2) and hdr.mf == bool(flags & 1)
    assert hdr.frag_offset == frag * 8
    assert (hdr.src, hdr.dst) == (src, dst)
    assert hdr.checksum == parsed.chksum
    assert bytes(hdr.options) == wire[IPV4_HLEN : hdr.header_len]
    assert bytes(hdr.payload) == payload
    assert isinstance(hdr.payload, memoryview)
    every_truncation_malformed(parse_ipv4, wire)


def _header(options: bytes = b"", payload: bytes = b"", **kw: int) -> bytearray:
    buf = bytearray(60 + len(payload))
    hl = pack_ipv4(
        buf,
        0,
        src=p4("192.0.2.1"),
        dst=p4("192.0.2.2"),
        protocol=17,
        payload_len=len(payload),
        options=options,
        **kw,  # type: ignore[arg-type]
    )
    buf[hl : hl + len(payload)] = payload
    return buf[: hl + len(payload)]


def _refill(buf: bytearray) -> bytes:
    hl = (buf[0] & 15) * 4
    buf[10:12] = b"\x00\x00"
    buf[10:12] = checksum(bytes(buf[:hl])).to_bytes(2, "big")
    return bytes(buf)


def test_ipv4_lying_lengths() -> None:
    good = _header(payload=b"abcdefgh")
    bad = bytearray(good)
    struct.pack_into("!H", bad, 2, len(good) + 1)  # claims more than we have
    expect_malformed(parse_ipv4, _refill(bad), "bad-length")
    struct.pack_into("!H", bad, 2, 19)  # shorter than the header
    expect_malformed(parse_ipv4, _refill(bad), "bad-length")
    bad = bytearray(good)
    bad[0] = 0x44  # IHL 4
    expect_malformed(parse_ipv4, bytes(bad), "bad-length")
    bad[0] = 0x4F  # IHL 15 = 60 bytes > 28 available
    expect_malformed(parse_ipv4, bytes(bad), "truncated")
    bad = bytearray(good)
    bad[0] = 0x65
    expect_malformed(parse_ipv4, bytes(bad), "bad-version")
    expect_malformed(parse_ipv4, bytes(bad[:3]), "bad-version")


def test_ipv4_total_length_trims_padding() -> None:
    good = bytes(_header(payload=b"xy")) + b"\x00" * 26
    hdr = parse_ipv4(memoryview(good))
    assert bytes(hdr.payload) == b"xy"


def test_ipv4_bad_checksum() -> None:
    good = _header(payload=b"data")
    for i in (1, 4, 8, 10, 11, 12, 19):
        bad = bytearray(good)
        bad[i] ^= 0x01
        expect_malformed(parse_ipv4, bytes(bad), "bad-checksum")
        parse_ipv4(memoryview(bytes(bad)), verify_checksum=False)
    # payload bytes are not covered by the header checksum
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    parse_ipv4(memoryview(bytes(bad)))


@pytest.mark.parametrize(
    "options",
    [
        b"\x07\x09\x04\x00\x00\x00\x00\x00",  # record route longer than the header
        b"\x07\x01\x00\x00",  # length 1
        b"\x07\x00\x00\x00",  # length 0
        b"\x01\x01\x01\x07",  # kind with no length byte
        b"\x94\x05\x00\x00",  # router alert overruns by one
        b"\x01" * 36 + b"\x83\x28\x04\x00",  # LSRR claiming 40 bytes at offset 36
    ],
)
def test_ipv4_bad_options(options: bytes) -> None:
    expect_malformed(parse_ipv4, bytes(_header(options=options)), "bad-option")
    assert IP(bytes(_header(options=options)))  # scapy still dissects it (leniently)


@pytest.mark.parametrize(
    "options",
    [
        b"\x00\xff\xff\xff",  # after EOL nothing is inspected
        b"\x01\x01\x01\x01",
        b"\x94\x04\x00\x00",
        _rr(9),  # 39-byte record route (fits exactly with one byte of padding)
        b"\x44\x02",  # unknown-ish: timestamp with bare length 2 is syntactically fine
    ],
)
def test_ipv4_good_options(options: bytes) -> None:
    hdr = parse_ipv4(memoryview(bytes(_header(options=options, payload=b"p"))))
    assert bytes(hdr.payload) == b"p"
    assert bytes(hdr.options[: len(options)]) == options


def test_pack_ipv4_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _header(options=b"\x01" * 41)
    with pytest.raises(ValueError):
        _header(frag_offset=4)
    with pytest.raises(ValueError):
        _header(payload=b"x" * 65516)


def test_pack_ipv4_at_offset() -> None:
    buf = bytearray(b"\xaa" * 100)
    n = pack_ipv4(buf, 14, src=b"\x01\x02\x03\x04", dst=b"\x05\x06\x07\x08", protocol=6,
                  payload_len=0, options=b"\x01")
    assert n == 24 and buf[:14] == b"\xaa" * 14 and buf[38:] == b"\xaa" * 62
    assert parse_ipv4(memoryview(buf)[14:38]).header_len == 24


def test_address_helpers() -> None:
    assert ipv4_is_multicast(p4("224.0.0.1")) and ipv4_is_multicast(p4("239.255.255.255"))
    assert not ipv4_is_multicast(p4("240.0.0.1")) and not ipv4_is_multicast(p4("223.0.0.1"))
    assert ipv4_is_broadcast_limited(p4("255.255.255.255"))
    assert not ipv4_is_broadcast_limited(p4("192.0.2.255"))
