"""Ethernet II / 802.1Q framing and ARP, round-tripped against scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import in6_getnsmac
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from wire_helpers import (
    PROPERTY,
    a4,
    every_truncation_malformed,
    expect_malformed,
    ip4,
    ip6,
    mac_bytes,
    mac_str,
    macs,
    payloads,
    u16,
)

from aionetstack.wire.arp import ARP_LEN, ARP_REPLY, ARP_REQUEST, pack_arp, parse_arp
from aionetstack.wire.ethernet import (
    BROADCAST_MAC,
    ETH_HLEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_VLAN,
    ipv4_multicast_mac,
    ipv6_multicast_mac,
    mac_aton,
    mac_ntoa,
    pack_ethernet,
    parse_ethernet,
)

# Types scapy would dissect as tags or 802.3 lengths are excluded from the plain round trip.
ethertypes = st.integers(0x0600, 0xFFFF).filter(lambda t: t not in (0x8100, 0x88A8, 0x9100))


@PROPERTY
@given(macs, macs, ethertypes, payloads)
def test_ethernet_ours_to_scapy(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> None:
    buf = bytearray(ETH_HLEN + len(payload))
    assert pack_ethernet(buf, 0, dst, src, ethertype) == ETH_HLEN
    buf[ETH_HLEN:] = payload
    pkt = Ether(bytes(buf))
    assert mac_bytes(pkt.dst) == dst
    assert mac_bytes(pkt.src) == src
    assert pkt.type == ethertype


@PROPERTY
@given(macs, macs, ethertypes, payloads, st.booleans(), st.integers(0, 4095), st.integers(0, 7))
def test_ethernet_scapy_to_ours(
    dst: bytes, src: bytes, ethertype: int, payload: bytes, tagged: bool, vlan: int, prio: int
) -> None:
    if tagged:
        pkt = Ether(dst=mac_str(dst), src=mac_str(src)) / Dot1Q(
            vlan=vlan, prio=prio, type=ethertype
        ) / Raw(payload)
    else:
        pkt = Ether(dst=mac_str(dst), src=mac_str(src), type=ethertype) / Raw(payload)
    data = bytes(pkt)
    eth = parse_ethernet(memoryview(data))
    assert eth.dst == dst and eth.src == src
    assert eth.ethertype == ethertype
    assert bytes(eth.payload) == payload
    assert eth.header_len == (18 if tagged else 14)
    assert eth.vlan == (vlan if tagged else None)
    every_truncation_malformed(parse_ethernet, data, upto=eth.header_len)


def test_ethernet_payload_is_a_view() -> None:
    frame = bytearray(BROADCAST_MAC + b"\x02" * 6 + b"\x08\x00" + b"hello")
    eth = parse_ethernet(memoryview(frame))
    frame[-1] = ord("!")
    assert bytes(eth.payload) == b"hell!"
    assert isinstance(eth.payload, memoryview)


def test_ethernet_truncated() -> None:
    for n in range(ETH_HLEN):
        expect_malformed(parse_ethernet, b"\x00" * n, "truncated")
    tagged = b"\xff" * 12 + ETHERTYPE_VLAN.to_bytes(2, "big") + b"\x00\x05\x08\x00"
    for n in range(ETH_HLEN, 18):
        expect_malformed(parse_ethernet, tagged[:n], "truncated")
    assert parse_ethernet(memoryview(tagged)).ethertype == ETHERTYPE_IPV4


def test_mac_text() -> None:
    assert mac_ntoa(b"\x02\x00\x00\x00\x00\x01") == "02:00:00:00:00:01"
    assert mac_aton("02:00:00:00:00:01") == b"\x02\x00\x00\x00\x00\x01"
    assert mac_aton("AA-bb-0c-d-00-FF") == b"\xaa\xbb\x0c\x0d\x00\xff"
    for bad in ("", "02:00:00:00:00", "02:00:00:00:00:01:02", "0x2:00:00:00:00:01",
                "002:00:00:00:00:01", "g2:00:00:00:00:01", "02::00:00:00:01", " 2:00:00:00:00:01",
                "+2:00:00:00:00:01", "_2:00:00:00:00:01"):
        with pytest.raises(ValueError):
            mac_aton(bad)


@PROPERTY
@given(macs)
def test_mac_text_roundtrip(mac: bytes) -> None:
    assert mac_aton(mac_ntoa(mac)) == mac
    assert mac_ntoa(mac) == mac_str(mac)


def test_ipv4_multicast_mac() -> None:
    assert ipv4_multicast_mac(bytes([224, 0, 0, 251])) == bytes.fromhex("01005e0000fb")
    assert ipv4_multicast_mac(bytes([239, 255, 255, 250])) == bytes.fromhex("01005e7ffffa")
    assert ipv4_multicast_mac(bytes([224, 128, 1, 2])) == bytes.fromhex("01005e000102")


@PROPERTY
@given(ip6)
def test_ipv6_multicast_mac_matches_scapy(addr: bytes) -> None:
    addr = b"\xff" + addr[1:]
    assert mac_ntoa(ipv6_multicast_mac(addr)) == in6_getnsmac(addr)


# ---- ARP (RFC 826) --------------------------------------------------------------------------

ops = st.sampled_from([ARP_REQUEST, ARP_REPLY])


@PROPERTY
@given(ops, macs, ip4, macs, ip4)
def test_arp_ours_to_scapy(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> None:
    buf = bytearray(ARP_LEN)
    assert pack_arp(buf, 0, op, sha, spa, tha, tpa) == ARP_LEN
    pkt = ARP(bytes(buf))
    assert (pkt.hwtype, pkt.ptype, pkt.hwlen, pkt.plen) == (1, ETHERTYPE_IPV4, 6, 4)
    assert pkt.op == op
    assert mac_bytes(pkt.hwsrc) == sha and pkt.psrc == a4(spa)
    assert mac_bytes(pkt.hwdst) == tha and pkt.pdst == a4(tpa)


@PROPERTY
@given(ops, macs, ip4, macs, ip4, st.binary(max_size=18))
def test_arp_scapy_to_ours(
    op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, padding: bytes
) -> None:
    pkt = ARP(op=op, hwsrc=mac_str(sha), psrc=a4(spa), hwdst=mac_str(tha), pdst=a4(tpa))
    data = bytes(pkt) + padding  # Ethernet minimum-size padding is ignored
    arp = parse_arp(memoryview(data))
    assert (arp.op, arp.sha, arp.spa, arp.tha, arp.tpa) == (op, sha, spa, tha, tpa)
    every_truncation_malformed(parse_arp, bytes(pkt))


def test_arp_in_frame() -> None:
    frame = bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")
        / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", pdst="10.0.0.2")
    )
    eth = parse_ethernet(memoryview(frame))
    assert eth.ethertype == ETHERTYPE_ARP and eth.dst == BROADCAST_MAC
    arp = parse_arp(eth.payload)
    assert arp.op == ARP_REQUEST and arp.tpa == bytes([10, 0, 0, 2])


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (0, b"\x00\x06"),  # hardware type IEEE 802
        (2, b"\x86\xdd"),  # protocol type IPv6
        (4, b"\x08"),  # hardware address length
        (5, b"\x10"),  # protocol address length
    ],
)
def test_arp_unsupported(offset: int, value: bytes) -> None:
    data = bytearray(bytes(ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", pdst="10.0.0.2")))
    data[offset : offset + len(value)] = value
    data += bytes(24)
    expect_malformed(parse_arp, bytes(data), "unsupported")
    expect_malformed(parse_arp, bytes(data[:8]), "unsupported")


@PROPERTY
@given(u16)
def test_arp_op_passed_through(op: int) -> None:
    buf = bytearray(ARP_LEN)
    pack_arp(buf, 0, op, b"\x02" * 6, b"\x0a" * 4, b"\x00" * 6, b"\x0b" * 4)
    assert parse_arp(memoryview(buf)).op == op
