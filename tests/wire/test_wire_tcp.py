"""TCP header and options (RFC 9293, 7323, 2018) against scapy, plus malformed options."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
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
    u8,
    u16,
    u32,
)

from aionetstack.wire.ipv4 import pack_ipv4
from aionetstack.wire.ipv6 import pack_ipv6
from aionetstack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_HLEN,
    URG,
    TcpOptions,
    fill_tcp_checksum,
    pack_tcp,
    pack_tcp_header,
    parse_tcp,
    tcp_checksum_ok,
)

addr_pairs = st.one_of(st.tuples(ip4, ip4), st.tuples(ip6, ip6))
sack_blocks = st.lists(st.tuples(u32, u32), max_size=4).map(tuple)


@st.composite
def tcp_options(draw: st.DrawFn) -> TcpOptions:
    opts = TcpOptions(
        mss=draw(st.one_of(st.none(), u16)),
        wscale=draw(st.one_of(st.none(), st.integers(0, 14), u8)),
        sack_permitted=draw(st.booleans()),
        sack_blocks=draw(sack_blocks),
        timestamp=draw(st.one_of(st.none(), st.tuples(u32, u32))),
    )
    try:
        opts.packed_len()
    except ValueError:
        assume(False)
    return opts


def ip_wrap(src: bytes, dst: bytes, seg: bytes) -> bytes:
    hl = 20 if len(src) == 4 else 40
    buf = bytearray(hl + len(seg))
    if hl == 20:
        pack_ipv4(buf, 0, src=src, dst=dst, protocol=6, payload_len=len(seg))
    else:
        pack_ipv6(buf, 0, src=src, dst=dst, next_header=6, payload_len=len(seg))
    buf[hl:] = seg
    return bytes(buf)


def scapy_options(opts: TcpOptions) -> dict[str, Any]:
    """Our options as the dict we expect to read back from scapy's option list."""
    out: dict[str, Any] = {}
    if opts.mss is not None:
        out["MSS"] = opts.mss
    if opts.wscale is not None:
        out["WScale"] = opts.wscale
    if opts.sack_permitted:
        out["SAckOK"] = b""
    if opts.timestamp is not None:
        out["Timestamp"] = opts.timestamp
    if opts.sack_blocks:
        out["SAck"] = tuple(edge for block in opts.sack_blocks for edge in block)
    return out


@PROPERTY
@given(addr_pairs, u16, u16, u32, u32, u8, u16, u16, tcp_options(), payloads)
def test_tcp_ours_to_scapy(
    addrs: tuple[bytes, bytes],
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    opts: TcpOptions,
    payload: bytes,
) -> None:
    src, dst = addrs
    buf = bytearray(2 + 60 + len(payload))
    n = pack_tcp(
        buf, 2, src=src, dst=dst, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
        window=window, urgent=urgent, options=opts, payload=payload,
    )
    hl = TCP_HLEN + opts.packed_len()
    assert hl % 4 == 0 and n == hl + len(payload)
    seg = bytes(buf[2 : 2 + n])
    pkt = IP(ip_wrap(src, dst, seg)) if len(src) == 4 else IPv6(ip_wrap(src, dst, seg))
    t = pkt[TCP]
    assert (t.sport, t.dport, t.seq, t.ack) == (sport, dport, seq, ack)
    assert (t.dataofs * 4, int(t.flags), t.window, t.urgptr) == (hl, flags, window, urgent)
    got = {name: value for name, value in t.options if name not in ("NOP", "EOL")}
    assert got == scapy_options(opts)
    assert t.load == payload if payload else not t.payload
    # scapy recomputes the same checksum (payload kept raw: no port-based dissection)
    ours = t.chksum
    t.remove_payload()
    if payload:
        t.add_payload(Raw(payload))
    del t.chksum
    again = pkt.__class__(bytes(pkt))
    assert again[TCP].chksum == ours
    assert tcp_checksum_ok(src, dst, memoryview(seg))
    parsed = parse_tcp(memoryview(seg))
    assert parsed.options == opts and parsed.flags == flags and parsed.checksum == ours


scapy_option_items = st.one_of(
    st.builds(lambda v: ("MSS", v), u16),
    st.builds(lambda v: ("WScale", v), u8),
    st.just(("SAckOK", b"")),
    st.builds(lambda a, b: ("Timestamp", (a, b)), u32, u32),
    st.lists(u32, min_size=2, max_size=8).filter(lambda e: len(e) % 2 == 0).map(
        lambda e: ("SAck", tuple(e))
    ),
    st.just(("NOP", None)),
    st.builds(lambda k, d: (k, d), st.sampled_from([6, 7, 14, 19, 28, 30, 34, 253, 254]),
              st.binary(max_size=6)),
)


@PROPERTY
@given(
    addr_pairs, u16, u16, u32, u32, st.integers(0, 0x1FF), u16, u16,
    st.lists(scapy_option_items, max_size=6), st.booleans(), payloads,
)
def test_tcp_scapy_to_ours(
    addrs: tuple[bytes, bytes],
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: list[tuple[Any, Any]],
    eol: bool,
    payload: bytes,
) -> None:
    src, dst = addrs
    tcp = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
              urgptr=urgent, options=options + ([("EOL", None)] if eol else []))
    opt_bytes = bytes(tcp)[TCP_HLEN:]
    assume(len(opt_bytes) <= 40)
    if len(src) == 4:
        data = bytes(IP(src=a4(src), dst=a4(dst)) / tcp / Raw(payload))
        seg = data[20:]
    else:
        data = bytes(IPv6(src=a6(src), dst=a6(dst)) / tcp / Raw(payload))
        seg = data[40:]
    hdr = parse_tcp(memoryview(seg))
    assert (hdr.sport, hdr.dport, hdr.seq, hdr.ack) == (sport, dport, seq, ack)
    assert (hdr.flags, hdr.window, hdr.urgent) == (flags & 0xFF, window, urgent)
    assert hdr.header_len == TCP_HLEN + len(opt_bytes)
    assert bytes(hdr.payload) == payload
    assert tcp_checksum_ok(src, dst, memoryview(seg))
    # Expected option values: the last occurrence of each kind wins.
    exp = TcpOptions()
    unknown = []
    for name, value in options:
        if name == "MSS":
            exp.mss = value
        elif name == "WScale":
            exp.wscale = value  # > 14 kept as-is (RFC 7323 §2.3: the engine clamps)
        elif name == "SAckOK":
            exp.sack_permitted = True
        elif name == "Timestamp":
            exp.timestamp = value
        elif name == "SAck":
            exp.sack_blocks = tuple(zip(value[0::2], value[1::2], strict=True))
        elif name != "NOP":
            unknown.append(name)
    exp.unknown = tuple(unknown)
    assert hdr.options == exp
    every_truncation_malformed(parse_tcp, seg, upto=hdr.header_len)


def test_flag_properties() -> None:
    seg = bytearray(20)
    pack_tcp_header(seg, 0, sport=1, dport=2, seq=3, ack=4, flags=SYN | ACK | FIN | PSH | URG,
                    window=5)
    h = parse_tcp(memoryview(seg))
    assert h.syn and h.ack_flag and h.fin and h.psh and h.urg and not h.rst
    assert not h.ece and not h.cwr
    assert h.seg_len == 2
    pack_tcp_header(seg, 0, sport=1, dport=2, seq=3, ack=4, flags=RST, window=5)
    assert parse_tcp(memoryview(seg)).rst


def test_linux_layouts() -> None:
    syn = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0))
    buf = bytearray(40)
    n = syn.pack_into(buf, 0)
    assert buf[:n] == bytes.fromhex("020405b4" "0402080a0000000100000000" "01030307")
    data = TcpOptions(timestamp=(5, 6), sack_blocks=((10, 20), (30, 40)))
    n = data.pack_into(buf, 0)
    assert buf[:n] == bytes.fromhex(
        "0101080a0000000500000006" "01010512" "0000000a00000014" "0000001e00000028"
    )
    n = TcpOptions(sack_permitted=True, wscale=2).pack_into(buf, 0)
    assert buf[:n] == bytes.fromhex("01030302" "01010402")
    assert TcpOptions().packed_len() == 0


def test_options_too_long() -> None:
    with pytest.raises(ValueError):
        TcpOptions(timestamp=(1, 2), sack_blocks=((1, 2),) * 4).packed_len()
    with pytest.raises(ValueError):
        TcpOptions(sack_blocks=((1, 2),) * 5).packed_len()
    assert TcpOptions(timestamp=(1, 2), sack_blocks=((1, 2),) * 3).packed_len() == 40
    assert TcpOptions(sack_blocks=((1, 2),) * 4).packed_len() == 36


def _segment(options: bytes) -> bytes:
    assert len(options) % 4 == 0
    buf = bytearray(TCP_HLEN + len(options))
    pack_tcp_header(buf, 0, sport=1, dport=2, seq=0, ack=0, flags=ACK, window=100)
    buf[12] = ((TCP_HLEN + len(options)) // 4) << 4
    buf[TCP_HLEN:] = options
    return bytes(buf)


@pytest.mark.parametrize(
    "options",
    [
        b"\x1e\x00\x00\x00",  # unknown kind, length 0
        b"\x1e\x01\x00\x00",  # unknown kind, length 1
        b"\x02\x00\x00\x00",  # MSS, length 0
        b"\x01\x01\x01\x1e",  # kind with no length byte
        b"\x1e\x05\x00\x00",  # runs past the header
        b"\x02\x03\x05\x00",  # MSS length 3
        b"\x02\x05\x05\xb4\x00\x00\x00\x00",  # MSS length 5
        b"\x03\x04\x07\x00",  # window scale length 4
        b"\x04\x03\x00\x00",  # SACK-permitted length 3
        b"\x08\x08" + bytes(6),  # timestamps length 8
        b"\x01\x01\x08\x0b" + bytes(8) + b"\x00\x00\x00\x00",  # timestamps length 11
        b"\x01\x01\x05\x02",  # SACK with no blocks
        b"\x01\x01\x05\x0b" + bytes(12),  # SACK length not 2 + 8n
        b"\x05\x2a" + bytes(38),  # SACK with 5 blocks
    ],
)
def test_bad_tcp_options(options: bytes) -> None:
    expect_malformed(parse_tcp, _segment(options), "bad-option")


def test_options_after_eol_ignored_and_unknown_recorded() -> None:
    h = parse_tcp(memoryview(_segment(b"\x1e\x04\xaa\xbb\x00\xff\xff\xff")))
    assert h.options.unknown == (30,)
    h = parse_tcp(memoryview(_segment(b"\x01\x01\x08\x0a" + bytes(8))))  # fast path
    assert h.options == TcpOptions(timestamp=(0, 0))
    ts_then_nops = b"\x08\x0a" + (7).to_bytes(4, "big") + bytes(4) + b"\x01\x01"
    h = parse_tcp(memoryview(_segment(ts_then_nops)))
    assert h.options == TcpOptions(timestamp=(7, 0))


def test_bad_data_offset() -> None:
    seg = bytearray(_segment(b"") + b"data")
    for off in range(5):
        seg[12] = off << 4
        expect_malformed(parse_tcp, bytes(seg), "bad-length")
    seg[12] = 7 << 4  # 28 bytes > 24 available
    expect_malformed(parse_tcp, bytes(seg), "bad-length")
    every_truncation_malformed(parse_tcp, _segment(b""))


def test_checksum_helpers() -> None:
    src, dst = p4("10.1.1.1"), p4("10.1.1.2")
    opts = TcpOptions(timestamp=(1, 2))
    a = bytearray(64)
    n = pack_tcp(a, 0, src=src, dst=dst, sport=5, dport=6, seq=7, ack=8, flags=ACK | PSH,
                 window=9, options=opts, payload=b"hello")
    b = bytearray(64)
    hl = pack_tcp_header(b, 0, sport=5, dport=6, seq=7, ack=8, flags=ACK | PSH, window=9,
                         options=opts)
    b[hl : hl + 5] = b"hello"
    fill_tcp_checksum(b, 0, hl + 5, src, dst)
    assert a[:n] == b[:n]
    assert tcp_checksum_ok(src, dst, memoryview(a)[:n])
    a[n - 1] ^= 1
    assert not tcp_checksum_ok(src, dst, memoryview(a)[:n])
    c = bytearray(64)
    m = pack_tcp(c, 0, src=src, dst=dst, sport=5, dport=6, seq=7, ack=8, flags=ACK, window=9,
                 payload=b"x", checksum=False)
    assert c[16:18] == b"\x00\x00" and m == 21


def test_pack_tcp_ts_matches_pack_tcp_with_a_timestamp_option() -> None:
    import random

    from aionetstack.wire.tcp import pack_tcp_ts

    rng = random.Random(7)
    for _ in range(200):
        kw = {"sport": rng.randrange(65536), "dport": rng.randrange(65536),
              "seq": rng.getrandbits(32), "ack": rng.getrandbits(32),
              "flags": rng.randrange(256), "window": rng.randrange(65536)}
        ts = (rng.getrandbits(32), rng.getrandbits(32))
        payload = rng.randbytes(rng.choice((0, 1, 100, 1448)))
        a = bytearray(8 + 32 + len(payload))
        b = bytearray(len(a))
        na = pack_tcp(a, 8, src=b"\x01\x02\x03\x04", dst=b"\x05\x06\x07\x08",
                      options=TcpOptions(timestamp=ts), payload=payload, checksum=False, **kw)
        nb = pack_tcp_ts(b, 8, kw["sport"], kw["dport"], kw["seq"], kw["ack"], kw["flags"],
                         kw["window"], ts[0], ts[1], payload)
        assert na == nb == 32 + len(payload)
        assert a == b
        h = parse_tcp(memoryview(b)[8:])
        assert h.options.timestamp == ts and bytes(h.payload) == payload
