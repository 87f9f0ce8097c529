"""UDP (RFC 768) over IPv4 and IPv6 against scapy, checksum rules, malformed lengths."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw
from wire_helpers import (
    PROPERTY,
    a4,
    a6,
    every_truncation_malformed,
    expect_malformed,
    ip4,
    ip6,
    p4,
    payloads,
    u16,
)

from aionetstack.wire.checksum import PROTO_UDP, transport_checksum
from aionetstack.wire.ipv4 import pack_ipv4, parse_ipv4
from aionetstack.wire.ipv6 import NH_UDP, pack_ipv6, parse_ipv6
from aionetstack.wire.udp import (
    UDP_HLEN,
    fill_udp_checksum,
    pack_udp,
    pack_udp_header,
    parse_udp,
    udp_checksum_ok,
)

addr_pairs = st.one_of(st.tuples(ip4, ip4), st.tuples(ip6, ip6))


def ip_packet(src: bytes, dst: bytes, udp: bytes) -> bytes:
    hl = 20 if len(src) == 4 else 40
    buf = bytearray(hl + len(udp))
    if hl == 20:
        pack_ipv4(buf, 0, src=src, dst=dst, protocol=PROTO_UDP, payload_len=len(udp))
    else:
        pack_ipv6(buf, 0, src=src, dst=dst, next_header=NH_UDP, payload_len=len(udp))
    buf[hl:] = udp
    return bytes(buf)


def scapy_ip(data: bytes) -> Packet:
    pkt = IP(data) if data[0] >> 4 == 4 else IPv6(data)
    # Keep the payload raw so re-serialising does not depend on scapy's port-based dissectors.
    udp = pkt[UDP]
    raw = bytes(udp.payload)
    udp.remove_payload()
    return pkt / Raw(raw) if raw else pkt


@PROPERTY
@given(addr_pairs, u16, u16, payloads, st.booleans())
def test_udp_ours_to_scapy(
    addrs: tuple[bytes, bytes], sport: int, dport: int, payload: bytes, with_sum: bool
) -> None:
    src, dst = addrs
    buf = bytearray(3 + UDP_HLEN + len(payload))
    n = pack_udp(buf, 3, src, dst, sport, dport, payload, checksum=with_sum)
    assert n == UDP_HLEN + len(payload)
    udp = bytes(buf[3 : 3 + n])
    pkt = scapy_ip(ip_packet(src, dst, udp))
    layer = pkt[UDP]
    assert (layer.sport, layer.dport, layer.len) == (sport, dport, n)
    assert bytes(layer.payload) == payload
    ours = layer.chksum
    if not with_sum:
        assert ours == 0
        assert udp_checksum_ok(src, dst, memoryview(udp)) == (len(src) == 4)
        return
    assert ours != 0
    del layer.chksum
    again = IP(bytes(pkt)) if len(src) == 4 else IPv6(bytes(pkt))
    assert again[UDP].chksum == ours
    assert udp_checksum_ok(src, dst, memoryview(udp))


@PROPERTY
@given(addr_pairs, u16, u16, payloads, st.binary(max_size=8))
def test_udp_scapy_to_ours(
    addrs: tuple[bytes, bytes], sport: int, dport: int, payload: bytes, trailer: bytes
) -> None:
    src, dst = addrs
    if len(src) == 4:
        data = bytes(IP(src=a4(src), dst=a4(dst)) / UDP(sport=sport, dport=dport) / Raw(payload))
        ip_payload = parse_ipv4(memoryview(data)).payload
    else:
        data = bytes(IPv6(src=a6(src), dst=a6(dst)) / UDP(sport=sport, dport=dport) / Raw(payload))
        ip_payload = parse_ipv6(memoryview(data)).payload
    udp = bytes(ip_payload)
    hdr = parse_udp(memoryview(udp + trailer))  # bytes after the UDP length are ignored
    assert (hdr.sport, hdr.dport, hdr.length) == (sport, dport, UDP_HLEN + len(payload))
    assert hdr.checksum == int.from_bytes(udp[6:8], "big")
    assert bytes(hdr.payload) == payload
    assert udp_checksum_ok(src, dst, ip_payload)
    assert udp_checksum_ok(src, dst, memoryview(udp + trailer))
    every_truncation_malformed(parse_udp, udp, upto=UDP_HLEN)


def test_udp_lying_lengths() -> None:
    good = bytearray(8 + 4)
    pack_udp(good, 0, p4("10.0.0.1"), p4("10.0.0.2"), 1, 2, b"abcd")
    for length in (0, 7, 13, 0xFFFF):
        bad = bytearray(good)
        struct.pack_into("!H", bad, 4, length)
        expect_malformed(parse_udp, bytes(bad), "bad-length")
        assert not udp_checksum_ok(p4("10.0.0.1"), p4("10.0.0.2"), memoryview(bad))
    # Shorter length than the buffer: payload is cut to the length.
    struct.pack_into("!H", good, 4, 10)
    assert bytes(parse_udp(memoryview(good)).payload) == b"ab"
    for n in range(UDP_HLEN):
        expect_malformed(parse_udp, bytes(good[:n]), "truncated")
        assert not udp_checksum_ok(p4("10.0.0.1"), p4("10.0.0.2"), memoryview(good[:n]))


def test_udp_bad_checksum_and_zero_rules() -> None:
    v4 = (p4("10.0.0.1"), p4("10.0.0.2"))
    v6 = (bytes(15) + b"\x01", bytes(15) + b"\x02")
    for src, dst in (v4, v6):
        buf = bytearray(12)
        pack_udp(buf, 0, src, dst, 7, 9, b"wxyz")
        assert udp_checksum_ok(src, dst, memoryview(buf))
        buf[-1] ^= 1
        assert not udp_checksum_ok(src, dst, memoryview(buf))
        buf[6:8] = b"\x00\x00"  # "no checksum"
        assert udp_checksum_ok(src, dst, memoryview(buf)) == (len(src) == 4)  # RFC 8200 §8.1
    assert not udp_checksum_ok(v4[0], v4[1], memoryview(bytes(20)))


def test_udp_computed_zero_sent_as_ffff() -> None:
    src, dst = p4("10.0.0.1"), p4("10.0.0.2")
    # Choose the last payload word so that the one's complement sum is 0xffff.
    seed = bytearray(12)
    pack_udp_header(seed, 0, 1000, 2000, 12)
    word = transport_checksum(src, dst, PROTO_UDP, bytes(seed))
    payload = b"\x00\x00" + word.to_bytes(2, "big")
    buf = bytearray(12)
    pack_udp(buf, 0, src, dst, 1000, 2000, payload)
    assert buf[6:8] == b"\xff\xff"
    assert udp_checksum_ok(src, dst, memoryview(buf))
    scapy_sum = bytes(IP(src=a4(src), dst=a4(dst)) / UDP(sport=1000, dport=2000) / Raw(payload))
    assert scapy_sum[26:28] == b"\xff\xff"


@PROPERTY
@given(addr_pairs, u16, u16, payloads)
def test_header_then_fill_equals_pack(
    addrs: tuple[bytes, bytes], sport: int, dport: int, payload: bytes
) -> None:
    src, dst = addrs
    n = UDP_HLEN + len(payload)
    a = bytearray(n)
    pack_udp(a, 0, src, dst, sport, dport, payload)
    b = bytearray(n)
    assert pack_udp_header(b, 0, sport, dport, n) == UDP_HLEN
    b[UDP_HLEN:] = payload
    fill_udp_checksum(b, 0, n, src, dst)
    assert a == b
    fill_udp_checksum(b, 0, n, src, dst)  # idempotent even with the field already filled
    assert a == b
