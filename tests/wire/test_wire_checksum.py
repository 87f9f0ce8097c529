"""Internet checksum and 32-bit sequence arithmetic, checked against scapy and by definition."""

from __future__ import annotations

import sys

from hypothesis import assume, given
from hypothesis import strategies as st
from scapy.layers.inet import IP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum
from wire_helpers import PROPERTY, a4, a6, ip4, ip6

from aionetstack.wire.checksum import (
    checksum,
    finish,
    ones_sum,
    piece_sums,
    pseudo_header_sum,
    transport_checksum,
    transport_verify,
    verify,
)
from aionetstack.wire.seqnum import (
    MASK,
    seq_add,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
    seq_sub,
)

data_blobs = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 64).map(lambda n: b"\x00" * n),
    st.integers(0, 64).map(lambda n: b"\xff" * n),
    st.lists(st.sampled_from([b"\x00", b"\xff", b"\x01", b"\xfe"]), max_size=40).map(b"".join),
)


def rfc1071(data: bytes) -> int:
    """Word-by-word reference implementation (RFC 1071 §4.1)."""
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@PROPERTY
@given(data_blobs)
def test_checksum_matches_scapy_and_reference(data: bytes) -> None:
    ours = checksum(data)
    assert ours == scapy_checksum(data)
    assert ours == rfc1071(data)
    assert checksum(memoryview(data)) == ours
    assert checksum(bytearray(data)) == ours


@PROPERTY
@given(data_blobs)
def test_verify_accepts_own_checksum(data: bytes) -> None:
    if len(data) % 2:
        data += b"\x00"
    packet = data + checksum(data).to_bytes(2, "big")
    assert verify(packet)
    # A single-bit flip changes the sum by ±2**k, never 0 mod 0xffff: always detected.
    for bit in (0, 7, 8 * len(packet) - 1):
        corrupt = bytearray(packet)
        corrupt[bit // 8] ^= 0x80 >> (bit % 8)
        assert not verify(bytes(corrupt))


@PROPERTY
@given(st.binary(max_size=100), st.binary(max_size=100))
def test_partial_sums_add(a: bytes, b: bytes) -> None:
    assume(len(a) % 2 == 0)
    assert finish(ones_sum(a) + ones_sum(b), bool(any(a) or any(b))) == checksum(a + b)


def test_checksum_edge_values() -> None:
    assert checksum(b"") == 0xFFFF == scapy_checksum(b"")
    assert checksum(b"\x00" * 20) == 0xFFFF == scapy_checksum(b"\x00" * 20)
    assert checksum(b"\xff" * 20) == 0x0000 == scapy_checksum(b"\xff" * 20)
    assert checksum(b"\xff") == scapy_checksum(b"\xff")
    # RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF


@PROPERTY
@given(ip4, ip4, st.sampled_from([6, 17, 1]), st.binary(max_size=200))
def test_ipv4_pseudo_header_matches_scapy(src: bytes, dst: bytes, proto: int, seg: bytes) -> None:
    ours = transport_checksum(src, dst, proto, seg)
    assert ours == in4_chksum(proto, IP(src=a4(src), dst=a4(dst)), seg)
    assert ours == checksum(seg, pseudo_header_sum(src, dst, proto, len(seg)))


@PROPERTY
@given(ip6, ip6, st.sampled_from([6, 17, 58]), st.binary(max_size=200))
def test_ipv6_pseudo_header_matches_scapy(src: bytes, dst: bytes, nh: int, seg: bytes) -> None:
    pkt = IPv6(src=a6(src), dst=a6(dst)) / Raw(seg)
    assert transport_checksum(src, dst, nh, seg) == in6_chksum(nh, pkt[Raw], seg)


@PROPERTY
@given(ip6, ip6, st.binary(min_size=8, max_size=200).filter(lambda b: len(b) % 2 == 0))
def test_transport_verify_roundtrip(src: bytes, dst: bytes, seg: bytes) -> None:
    seg = seg[:2] + b"\x00\x00" + seg[4:]
    csum = transport_checksum(src, dst, 17, seg)
    full = seg[:2] + csum.to_bytes(2, "big") + seg[4:]
    assert transport_verify(src, dst, 17, full)


# ---- sequence numbers (RFC 9293 §3.4) ------------------------------------------------------

seqs = st.integers(0, MASK)
small = st.integers(1, 2**31 - 1)


@PROPERTY
@given(seqs, small)
def test_seq_order_across_wrap(a: int, d: int) -> None:
    b = seq_add(a, d)
    assert seq_lt(a, b) and seq_le(a, b) and seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_gt(a, b)
    assert seq_sub(b, a) == d and seq_sub(a, b) == -d
    assert seq_max(a, b) == b and seq_min(a, b) == a
    assert seq_le(a, a) and seq_ge(a, a) and not seq_lt(a, a) and not seq_gt(a, a)


@PROPERTY
@given(seqs, st.integers(0, 2**31), st.integers(-(2**20), 2**20))
def test_seq_in_window(start: int, size: int, delta: int) -> None:
    x = seq_add(start, delta)
    assert seq_in_window(x, start, size) == (0 <= delta < size)


def test_seq_wrap_examples() -> None:
    top = 0xFFFFFFFF
    assert seq_add(top, 1) == 0
    assert seq_add(top, 10) == 9
    assert seq_lt(top, 0) and seq_lt(top - 5, 5) and seq_gt(5, top - 5)
    assert seq_sub(5, top - 5) == 11
    assert seq_sub(top - 5, 5) == -11
    assert seq_in_window(2, top - 1, 10)
    assert not seq_in_window(top - 2, top - 1, 10)
    assert seq_max(top, 3) == 3 and seq_min(top, 3) == top
    assert seq_sub(2**31, 0) == -(2**31)  # the ambiguous half-way point is "negative"


@PROPERTY
@given(data=st.binary(max_size=9000), size=st.integers(min_value=1, max_value=3000),
       use_numpy=st.booleans())
def test_piece_sums_match_scapy_per_piece(data: bytes, size: int, use_numpy: bool) -> None:
    """Each piece's sum, finished, is the checksum scapy computes for that piece alone; with
    numpy (the vectorised path for whole even-sized pieces) and without it."""
    ck = sys.modules[piece_sums.__module__]  # the module (``wire.checksum`` is also a name)
    saved = ck.np
    try:
        if use_numpy:
            ck._numpy()
            assume(ck.np is not None)
        else:
            ck.np = None
        sums = piece_sums(data, size)
    finally:
        ck.np = saved
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    assert len(sums) == len(pieces)
    for piece, s in zip(pieces, sums, strict=True):
        assert finish(s, any(piece)) == scapy_checksum(piece)
