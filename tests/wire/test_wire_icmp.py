"""ICMPv4 (RFC 792/1191) and ICMPv6 (RFC 4443) against scapy, plus malformed input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
)
from scapy.packet import Packet, Raw
from wire_helpers import PROPERTY, a6, expect_malformed, ip6, p6, payloads, u8, u16, u32

from aionetstack.wire import icmpv4, icmpv6
from aionetstack.wire.icmpv4 import pack_icmpv4, parse_icmpv4
from aionetstack.wire.icmpv6 import pack_icmpv6, parse_icmpv6
from aionetstack.wire.ipv6 import IPV6_HLEN, NH_ICMPV6, pack_ipv6, parse_ipv6

# A realistic quoted datagram for error messages (scapy re-dissects it as IPerror/UDPerror).
QUOTE4 = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1234, dport=53) / Raw(b"q" * 8))
QUOTE6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2) / Raw(b"q"))

# ---- ICMPv4 -------------------------------------------------------------------------------

icmpv4_cases = st.one_of(
    st.tuples(st.sampled_from([icmpv4.ECHO_REQUEST, icmpv4.ECHO_REPLY]), st.just(0), u32,
              payloads),
    st.tuples(st.just(icmpv4.DEST_UNREACH), st.integers(0, 15), u16, st.just(QUOTE4)),
    st.tuples(st.just(icmpv4.TIME_EXCEEDED), st.integers(0, 1), st.just(0), st.just(QUOTE4)),
    st.tuples(st.just(icmpv4.PARAM_PROBLEM), st.just(0), u8.map(lambda p: p << 24),
              st.just(QUOTE4)),
)


@PROPERTY
@given(icmpv4_cases)
def test_icmpv4_ours_to_scapy(case: tuple[int, int, int, bytes]) -> None:
    mtype, code, rest, payload = case
    buf = bytearray(8 + len(payload))
    n = pack_icmpv4(buf, 0, mtype, code, rest, payload)
    assert n == len(buf)
    pkt = ICMP(bytes(buf))
    assert (pkt.type, pkt.code) == (mtype, code)
    if mtype in (icmpv4.ECHO_REQUEST, icmpv4.ECHO_REPLY):
        assert (pkt.id, pkt.seq) == (rest >> 16, rest & 0xFFFF)
        assert bytes(pkt.payload) == payload
    elif mtype == icmpv4.DEST_UNREACH and code == icmpv4.FRAG_NEEDED:
        assert pkt.nexthopmtu == rest
    elif mtype == icmpv4.PARAM_PROBLEM:
        assert pkt.ptr == rest >> 24
    ours = pkt.chksum
    del pkt.chksum
    assert ICMP(bytes(pkt)).chksum == ours
    msg = parse_icmpv4(memoryview(bytes(buf)))
    assert (msg.type, msg.code, msg.rest, msg.checksum) == (mtype, code, rest, ours)
    assert bytes(msg.payload) == payload


@PROPERTY
@given(
    st.one_of(
        st.builds(lambda i, s, d: ICMP(type=8, id=i, seq=s) / Raw(d), u16, u16, payloads),
        st.builds(lambda i, s, d: ICMP(type=0, id=i, seq=s) / Raw(d), u16, u16, payloads),
        st.builds(lambda m: ICMP(type=3, code=4, nexthopmtu=m) / Raw(QUOTE4), u16),
        st.builds(lambda c: ICMP(type=3, code=c) / Raw(QUOTE4), st.integers(0, 15)),
        st.builds(lambda c: ICMP(type=11, code=c) / Raw(QUOTE4), st.integers(0, 1)),
        st.builds(lambda p: ICMP(type=12, ptr=p) / Raw(QUOTE4), u8),
    )
)
def test_icmpv4_scapy_to_ours(pkt: Packet) -> None:
    data = bytes(pkt)
    ref = ICMP(data)
    msg = parse_icmpv4(memoryview(data))
    assert (msg.type, msg.code, msg.checksum) == (ref.type, ref.code, ref.chksum)
    assert msg.rest == int.from_bytes(data[4:8], "big")
    if msg.type in (0, 8):
        assert (msg.ident, msg.sequence) == (ref.id, ref.seq)
    if msg.type == 3 and msg.code == 4:
        assert msg.next_hop_mtu == ref.nexthopmtu
    if msg.type == 12:
        assert msg.pointer == ref.ptr
    assert msg.is_error == (msg.type not in (0, 8))
    assert bytes(msg.payload) == data[8:]
    for n in range(8):
        expect_malformed(parse_icmpv4, data[:n], "truncated")


def test_icmpv4_bad_checksum() -> None:
    data = bytearray(bytes(ICMP(type=8, id=1, seq=2) / Raw(b"ping")))
    data[-1] ^= 0x10
    expect_malformed(parse_icmpv4, bytes(data), "bad-checksum")
    assert parse_icmpv4(memoryview(bytes(data)), verify_checksum=False).sequence == 2
    expect_malformed(parse_icmpv4, bytes(8), "bad-checksum")  # all-zero checksum field


def test_icmpv4_zero_message_checksum_is_ffff() -> None:
    buf = bytearray(8)
    pack_icmpv4(buf, 0, icmpv4.ECHO_REPLY, 0, 0, b"")
    assert buf[2:4] == b"\xff\xff" and bytes(ICMP(type=0, id=0, seq=0))[2:4] == b"\xff\xff"
    assert parse_icmpv4(memoryview(buf)).type == 0


# ---- ICMPv6 -------------------------------------------------------------------------------

icmpv6_cases = st.one_of(
    st.tuples(st.sampled_from([icmpv6.ECHO_REQUEST, icmpv6.ECHO_REPLY]), st.just(0), u32,
              payloads),
    st.tuples(st.just(icmpv6.DEST_UNREACH), st.integers(0, 6), st.just(0), st.just(QUOTE6)),
    st.tuples(st.just(icmpv6.PACKET_TOO_BIG), st.just(0), u32, st.just(QUOTE6)),
    st.tuples(st.just(icmpv6.TIME_EXCEEDED), st.integers(0, 1), st.just(0), st.just(QUOTE6)),
    st.tuples(st.just(icmpv6.PARAM_PROBLEM), st.integers(0, 2), u32, st.just(QUOTE6)),
)

_V6_CLASSES = {
    icmpv6.ECHO_REQUEST: ICMPv6EchoRequest,
    icmpv6.ECHO_REPLY: ICMPv6EchoReply,
    icmpv6.DEST_UNREACH: ICMPv6DestUnreach,
    icmpv6.PACKET_TOO_BIG: ICMPv6PacketTooBig,
    icmpv6.TIME_EXCEEDED: ICMPv6TimeExceeded,
    icmpv6.PARAM_PROBLEM: ICMPv6ParamProblem,
}


@PROPERTY
@given(ip6, ip6, icmpv6_cases)
def test_icmpv6_ours_to_scapy(src: bytes, dst: bytes, case: tuple[int, int, int, bytes]) -> None:
    mtype, code, rest, payload = case
    buf = bytearray(IPV6_HLEN + 8 + len(payload))
    pack_ipv6(buf, 0, src=src, dst=dst, next_header=NH_ICMPV6, payload_len=8 + len(payload))
    assert pack_icmpv6(buf, IPV6_HLEN, src, dst, mtype, code, rest, payload) == 8 + len(payload)
    pkt = IPv6(bytes(buf))
    layer = pkt[_V6_CLASSES[mtype]]
    assert (layer.type, layer.code) == (mtype, code)
    if mtype in (icmpv6.ECHO_REQUEST, icmpv6.ECHO_REPLY):
        assert (layer.id, layer.seq, layer.data) == (rest >> 16, rest & 0xFFFF, payload)
    elif mtype == icmpv6.PACKET_TOO_BIG:
        assert layer.mtu == rest
    elif mtype == icmpv6.PARAM_PROBLEM:
        assert layer.ptr == rest
    ours = layer.cksum
    del layer.cksum
    assert IPv6(bytes(pkt))[_V6_CLASSES[mtype]].cksum == ours
    msg = parse_icmpv6(memoryview(buf)[IPV6_HLEN:], src, dst)
    assert (msg.type, msg.code, msg.rest, msg.checksum) == (mtype, code, rest, ours)


@PROPERTY
@given(
    ip6,
    ip6,
    st.one_of(
        st.builds(lambda i, s, d: ICMPv6EchoRequest(id=i, seq=s, data=d), u16, u16, payloads),
        st.builds(lambda i, s, d: ICMPv6EchoReply(id=i, seq=s, data=d), u16, u16, payloads),
        st.builds(lambda c: ICMPv6DestUnreach(code=c) / Raw(QUOTE6), st.integers(0, 6)),
        st.builds(lambda m: ICMPv6PacketTooBig(mtu=m) / Raw(QUOTE6), u32),
        st.builds(lambda c: ICMPv6TimeExceeded(code=c) / Raw(QUOTE6), st.integers(0, 1)),
        st.builds(lambda c, p: ICMPv6ParamProblem(code=c, ptr=p) / IPerror6(), st.integers(0, 2),
                  u32),
    ),
)
def test_icmpv6_scapy_to_ours(src: bytes, dst: bytes, icmp: Packet) -> None:
    data = bytes(IPv6(src=a6(src), dst=a6(dst)) / icmp)
    ip = parse_ipv6(memoryview(data))
    assert ip.next_header == NH_ICMPV6
    msg = parse_icmpv6(ip.payload, ip.src, ip.dst)
    ref = IPv6(data)[_V6_CLASSES[icmp.type]]
    assert (msg.type, msg.code, msg.checksum) == (ref.type, ref.code, ref.cksum)
    assert msg.rest == int.from_bytes(data[44:48], "big")
    assert bytes(msg.body) == data[44:] and bytes(msg.payload) == data[48:]
    if msg.type in (icmpv6.ECHO_REQUEST, icmpv6.ECHO_REPLY):
        assert (msg.ident, msg.sequence) == (ref.id, ref.seq)
        assert not msg.is_error
    else:
        assert msg.is_error
    if msg.type == icmpv6.PACKET_TOO_BIG:
        assert msg.mtu == ref.mtu
    if msg.type == icmpv6.PARAM_PROBLEM:
        assert msg.pointer == ref.ptr
    for n in range(8):
        expect_malformed(lambda v: parse_icmpv6(v, ip.src, ip.dst), bytes(ip.payload)[:n],
                         "truncated")


def test_icmpv6_checksum_is_mandatory_and_covers_pseudo_header() -> None:
    src, dst = p6("2001:db8::1"), p6("2001:db8::2")
    data = bytes(IPv6(src=a6(src), dst=a6(dst)) / ICMPv6EchoRequest(id=7, seq=9, data=b"abc"))
    body = data[IPV6_HLEN:]
    assert parse_icmpv6(memoryview(body), src, dst).ident == 7
    expect_malformed(lambda v: parse_icmpv6(v, src, p6("2001:db8::3")), body, "bad-checksum")
    corrupt = bytearray(body)
    corrupt[-1] ^= 1
    expect_malformed(lambda v: parse_icmpv6(v, src, dst), bytes(corrupt), "bad-checksum")
    zero = bytearray(body)
    zero[2:4] = b"\x00\x00"
    expect_malformed(lambda v: parse_icmpv6(v, src, dst), bytes(zero), "bad-checksum")
    assert parse_icmpv6(memoryview(bytes(zero)), src, dst, verify_checksum=False).sequence == 9
    # A shortened message fails the checksum: the pseudo-header length changes.
    for n in range(8, len(body)):
        expect_malformed(lambda v: parse_icmpv6(v, src, dst), body[:n], "bad-checksum")
