"""virtio_net_hdr encode/decode, partial checksums, software GSO and the USO split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetstack.errors import InvalidArgument
from aionetstack.link.vnet import (
    NO_OFFLOAD,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    VnetCodec,
    VnetHeader,
    complete_checksum,
    locate_l4,
    segment,
)
from aionetstack.wire.checksum import PROTO_ICMP, PROTO_TCP, PROTO_UDP, pseudo_header_sum
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ethernet import pack_ethernet
from aionetstack.wire.ipv4 import pack_ipv4, parse_ipv4
from aionetstack.wire.ipv6 import pack_ipv6
from aionetstack.wire.tcp import pack_tcp, tcp_checksum_ok
from aionetstack.wire.udp import pack_udp, udp_checksum_ok

S4, D4 = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
S6, D6 = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("fd00" + "00" * 13 + "01")
ACK, PSH, FIN, CWR = 0x10, 0x08, 0x01, 0x80


def tcp_packet(version: int, payload: bytes, *, flags: int = ACK | PSH, seq: int = 1000,
               l2: bool = False, checksum: bool = False, ident: int = 7) -> bytearray:
    l3 = 14 if l2 else 0
    iphl = 20 if version == 4 else 40
    buf = bytearray(l3 + iphl + 20 + len(payload))
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    n = pack_tcp(buf, l3 + iphl, src=src, dst=dst, sport=40000, dport=80, seq=seq, ack=5,
                 flags=flags, window=65535, payload=payload, checksum=checksum)
    if version == 4:
        pack_ipv4(buf, l3, src=src, dst=dst, protocol=PROTO_TCP, payload_len=n, ident=ident,
                  df=True)
    else:
        pack_ipv6(buf, l3, src=src, dst=dst, next_header=PROTO_TCP, payload_len=n)
    if l2:
        pack_ethernet(buf, 0, b"\x02" * 6, b"\x04" * 6, 0x0800 if version == 4 else 0x86DD)
    return buf


def udp_packet(version: int, payload: bytes, *, checksum: bool = False) -> bytearray:
    iphl = 20 if version == 4 else 40
    buf = bytearray(iphl + 8 + len(payload))
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    n = pack_udp(buf, iphl, src, dst, 5000, 6000, payload, checksum=checksum)
    if version == 4:
        pack_ipv4(buf, 0, src=src, dst=dst, protocol=PROTO_UDP, payload_len=n, ident=100)
    else:
        pack_ipv6(buf, 0, src=src, dst=dst, next_header=PROTO_UDP, payload_len=n)
    return buf


def codec(*, l2: bool = False, tso: bool = True, uso: bool = True,
          complete_rx: bool = False) -> VnetCodec:
    return VnetCodec(l2=l2, csum=True, tso=tso, uso=uso, complete_rx=complete_rx)


def test_header_roundtrip_and_layout() -> None:
    h = VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1440, 54, 16)
    raw = h.pack()
    assert len(raw) == VIRTIO_NET_HDR_LEN == 10
    assert raw[0] == 1 and raw[1] == 4
    assert int.from_bytes(raw[2:4], "little") == 74  # host order (little-endian hosts)
    assert VnetHeader.unpack(raw + b"frame") == h
    assert VnetHeader.unpack(NO_OFFLOAD) == VnetHeader()
    with pytest.raises(MalformedPacket):
        VnetHeader.unpack(raw[:9])


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("l2", [False, True])
def test_tx_partial_checksum_tcp(version: int, l2: bool) -> None:
    pkt = tcp_packet(version, b"hello world!", l2=l2)
    h = VnetHeader.unpack(codec(l2=l2).tx_header(pkt))
    l4 = (14 if l2 else 0) + (20 if version == 4 else 40)
    assert h == VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, l4, 16)
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    field = int.from_bytes(pkt[l4 + 16:l4 + 18], "big")
    assert field == pseudo_header_sum(src, dst, PROTO_TCP, 32) % 0xFFFF
    complete_checksum(pkt, h.csum_start, h.csum_offset)  # what the kernel does
    assert tcp_checksum_ok(src, dst, memoryview(pkt)[l4:])


@pytest.mark.parametrize("version", [4, 6])
def test_tx_partial_checksum_udp_overwrites_a_filled_checksum(version: int) -> None:
    pkt = udp_packet(version, b"x" * 33, checksum=True)
    h = VnetHeader.unpack(codec().tx_header(pkt))
    l4 = 20 if version == 4 else 40
    assert (h.flags, h.csum_start, h.csum_offset) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, l4, 6)
    complete_checksum(pkt, h.csum_start, h.csum_offset)
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    assert udp_checksum_ok(src, dst, memoryview(pkt)[l4:])


def test_tx_no_offload_for_other_packets() -> None:
    icmp = bytearray(28)
    pack_ipv4(icmp, 0, src=S4, dst=D4, protocol=PROTO_ICMP, payload_len=8)
    assert codec().tx_header(icmp) == NO_OFFLOAD
    frag = udp_packet(4, b"y" * 100)
    frag[6] |= 0x20  # MF: a first fragment has no complete datagram to checksum
    assert codec().tx_header(frag) == NO_OFFLOAD
    arp = bytearray(42)
    arp[12:14] = b"\x08\x06"
    assert codec(l2=True).tx_header(arp) == NO_OFFLOAD
    no_csum = VnetCodec(l2=False, csum=False, tso=False, uso=False, complete_rx=False)
    assert no_csum.tx_header(tcp_packet(4, b"z")) == NO_OFFLOAD


@pytest.mark.parametrize(("version", "gso_type"), [(4, VIRTIO_NET_HDR_GSO_TCPV4),
                                                    (6, VIRTIO_NET_HDR_GSO_TCPV6)])
def test_tx_gso_header_tcp(version: int, gso_type: int) -> None:
    c = codec()
    pkt = tcp_packet(version, bytes(20000))
    assert c.can_gso(pkt) is True
    h = VnetHeader.unpack(c.tx_header(pkt, 1400))
    l4 = 20 if version == 4 else 40
    assert h == VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + 20, 1400, l4, 16)
    cwr = tcp_packet(version, bytes(3000), flags=ACK | CWR)
    assert VnetHeader.unpack(c.tx_header(cwr, 1400)).gso_type == gso_type | (
        VIRTIO_NET_HDR_GSO_ECN)
    small = tcp_packet(version, bytes(1400))  # fits in one segment: no GSO
    assert VnetHeader.unpack(c.tx_header(small, 1400)).gso_type == VIRTIO_NET_HDR_GSO_NONE
    assert c.stats["tx_gso"] == 2


def test_tx_tso_from_mtu_and_udp_l4() -> None:
    c = codec()
    h = VnetHeader.unpack(c.tx_header(tcp_packet(4, bytes(5000)), 0, 1500))
    assert (h.gso_type, h.gso_size) == (VIRTIO_NET_HDR_GSO_TCPV4, 1460)
    h = VnetHeader.unpack(c.tx_header(tcp_packet(4, bytes(1460)), 0, 1500))
    assert h.gso_type == VIRTIO_NET_HDR_GSO_NONE
    h = VnetHeader.unpack(c.tx_header(udp_packet(6, bytes(5000)), 1000))
    assert (h.gso_type, h.gso_size, h.hdr_len) == (VIRTIO_NET_HDR_GSO_UDP_L4, 1000, 48)
    assert codec(tso=False).can_gso(tcp_packet(4, b"a")) is False
    assert codec(uso=False).can_gso(udp_packet(4, b"a")) is False
    assert codec().can_gso(bytearray(b"\x45" + bytes(40))) is None


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("l2", [False, True])
def test_segment_tcp(version: int, l2: bool) -> None:
    data = bytes(i % 251 for i in range(20000))
    pkt = tcp_packet(version, data, flags=ACK | PSH | FIN | CWR, seq=0xFFFFF000, l2=l2,
                     ident=0xFFFE)
    pieces = segment(pkt, 14 if l2 else 0, 1400)
    assert len(pieces) == 15
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    l3 = 14 if l2 else 0
    l4 = l3 + (20 if version == 4 else 40)
    got = b""
    for k, p in enumerate(pieces):
        assert p[:l3] == pkt[:l3]
        info = locate_l4(p, l3)
        assert info is not None and info.end == len(p)
        if version == 4:
            ip = parse_ipv4(memoryview(p)[l3:])  # header checksum verified
            assert ip.ident == (0xFFFE + k) & 0xFFFF
        assert tcp_checksum_ok(src, dst, memoryview(p)[l4:])
        assert int.from_bytes(p[l4 + 4:l4 + 8], "big") == (0xFFFFF000 + k * 1400) & 0xFFFFFFFF
        flags = p[l4 + 13]
        assert bool(flags & FIN) == bool(flags & PSH) == (k == 14)
        assert bool(flags & CWR) == (k == 0)
        assert flags & ACK
        got += bytes(p[l4 + 20:])
    assert got == data
    assert len(pieces[-1]) - (l4 + 20) == 20000 - 14 * 1400


@pytest.mark.parametrize("version", [4, 6])
def test_segment_udp_is_the_uso_split(version: int) -> None:
    data = b"".join(bytes([k]) * 1000 for k in range(9)) + b"tail"
    pieces = segment(udp_packet(version, data), 0, 1000)
    assert len(pieces) == 10
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    l4 = 20 if version == 4 else 40
    for k, p in enumerate(pieces):
        body = bytes([k]) * 1000 if k < 9 else b"tail"
        assert p[l4 + 8:] == body
        assert int.from_bytes(p[l4 + 4:l4 + 6], "big") == 8 + len(body)
        assert udp_checksum_ok(src, dst, memoryview(p)[l4:])
        if version == 4:
            assert parse_ipv4(memoryview(p)).total_length == len(p)
        else:
            assert int.from_bytes(p[4:6], "big") == 8 + len(body)


def test_segment_rejects_what_it_cannot_cut() -> None:
    icmp = bytearray(28)
    pack_ipv4(icmp, 0, src=S4, dst=D4, protocol=PROTO_ICMP, payload_len=8)
    with pytest.raises(InvalidArgument):
        segment(icmp, 0, 100)
    with pytest.raises(InvalidArgument):
        segment(tcp_packet(4, b"x"), 0, 0)


def _partial(pkt: bytearray, version: int, proto: int) -> bytes:
    """Turn a packet into what the kernel hands us with NEEDS_CSUM: pseudo sum in the field."""
    l4 = 20 if version == 4 else 40
    coff = 16 if proto == PROTO_TCP else 6
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    pkt[l4 + coff:l4 + coff + 2] = (pseudo_header_sum(src, dst, proto, len(pkt) - l4)
                                    ).to_bytes(2, "big")
    return bytes(pkt)


def test_rx_strip_and_complete() -> None:
    pkt = _partial(tcp_packet(4, b"abc" * 100), 4, PROTO_TCP)
    hdr = VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16).pack()
    trusted = codec()
    [frame] = trusted.rx(hdr + pkt)
    assert bytes(frame) == pkt  # trusted link: delivered as is
    assert trusted.stats["rx_partial_csum"] == 1
    [frame] = codec(complete_rx=True).rx(hdr + pkt)
    assert tcp_checksum_ok(S4, D4, frame[20:])
    valid = VnetHeader(VIRTIO_NET_HDR_F_DATA_VALID).pack()
    plain = tcp_packet(6, b"q", checksum=True)
    assert [bytes(f) for f in codec(complete_rx=True).rx(valid + plain)] == [plain]
    with pytest.raises(MalformedPacket):
        codec().rx(b"\x01\x00\x00")


def test_rx_tcp_super_segment_delivered_whole() -> None:
    big = tcp_packet(6, bytes(30000), checksum=True)
    hdr = VnetHeader(0, VIRTIO_NET_HDR_GSO_TCPV6, 60, 1440, 40, 16).pack()
    c = codec()
    [frame] = c.rx(hdr + bytes(big))
    assert len(frame) == len(big)
    assert c.stats["rx_gso"] == 1


@pytest.mark.parametrize("version", [4, 6])
def test_rx_uso_super_datagram_is_split(version: int) -> None:
    l4 = 20 if version == 4 else 40
    pkt = _partial(udp_packet(version, bytes(range(200)) * 25), version, PROTO_UDP)
    hdr = VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, l4 + 8, 1200,
                     l4, 6).pack()
    c = codec()
    frames = c.rx(hdr + pkt)
    assert [len(f) - l4 - 8 for f in frames] == [1200, 1200, 1200, 1200, 200]
    src, dst = (S4, D4) if version == 4 else (S6, D6)
    assert all(udp_checksum_ok(src, dst, f[l4:]) for f in frames)
    assert b"".join(bytes(f[l4 + 8:]) for f in frames) == bytes(range(200)) * 25
    assert c.stats["rx_uso_split"] == 1


def test_segment_tcp_agrees_with_scapy_on_random_packets() -> None:
    """Software GSO's incremental checksums against scapy's own, over random sizes, MSSes,
    flags, options, odd lengths, IPv4/IPv6 and L2/L3 framing."""
    import random

    scapy = pytest.importorskip("scapy.all")
    rng = random.Random(1)
    for _ in range(60):
        v6 = rng.random() < 0.5
        n = rng.randint(1, 5000)
        mss = rng.randint(1, 1500)
        flags = rng.choice(["A", "PA", "FA", "FPA", "CA", "CPA"])
        opts = rng.choice([[], [("Timestamp", (rng.getrandbits(32), rng.getrandbits(32)))],
                           [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]])
        ip = (scapy.IPv6(src="fd00::1", dst="fd00::2") if v6 else
              scapy.IP(src="198.18.0.1", dst="198.18.0.2", id=rng.getrandbits(16), flags="DF"))
        seq = rng.getrandbits(32)
        pkt = ip / scapy.TCP(sport=rng.getrandbits(16), dport=80, seq=seq,
                             ack=rng.getrandbits(32), flags=flags, window=rng.getrandbits(16),
                             options=opts) / rng.randbytes(n)
        raw = bytes(pkt)
        l2 = rng.random() < 0.3
        frame = (bytes(12) + (b"\x86\xdd" if v6 else b"\x08\x00") + raw) if l2 else raw
        cls = scapy.IPv6 if v6 else scapy.IP
        data = b""
        for k, piece in enumerate(segment(bytearray(frame), 14 if l2 else 0, mss)):
            got = cls(bytes(piece[14:] if l2 else piece))
            fresh = got.copy()
            fresh[scapy.TCP].chksum = None
            if not v6:
                fresh.chksum = None
            fresh = cls(bytes(fresh))  # scapy fills in its own checksums
            assert got[scapy.TCP].chksum == fresh[scapy.TCP].chksum
            if not v6:
                assert got.chksum == fresh.chksum
            assert got[scapy.TCP].seq == (seq + k * mss) & 0xFFFFFFFF
            data += bytes(got[scapy.TCP].payload)
        assert data == raw[-n:]


@given(st.integers(0, 9000), st.sampled_from([0, 536, 1400, 1448]),
       st.sampled_from([0, 576, 1500, 9000]), st.sampled_from([ACK, ACK | PSH, ACK | CWR, FIN]),
       st.booleans(), st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(8)]))
def test_tx_header_fast_path_matches_the_general_one(size: int, gso: int, mtu: int, flags: int,
                                                     tso: bool, opts: bytes) -> None:
    """The IPv4/TCP shortcut writes the same header and the same pseudo-header sum as the
    path every other packet takes."""
    pkt = tcp_packet(4, bytes(size), flags=flags)
    if opts:  # a header with options (data offset 8): the TCP header grows by 12 bytes
        pkt[20 + 12] = 8 << 4
        pkt[40:40] = opts
        pkt[2:4] = len(pkt).to_bytes(2, "big")
    a, b = codec(tso=tso), codec(tso=tso)
    fa, fb = bytearray(pkt), bytearray(pkt)
    if gso and not tso:
        gso = 0
    assert a.tx_header(fa, gso, mtu) == b._tx_header(fb, gso, mtu)
    assert fa == fb and a.stats == b.stats
    assert a.can_gso(pkt) is tso
