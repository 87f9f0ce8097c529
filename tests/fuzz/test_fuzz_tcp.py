"""Property tests over the TCP parser and TCP ingress.

* ``parse_tcp`` on arbitrary bytes returns a header or raises ``MalformedPacket`` -- nothing else;
  on a well-formed header with random option bytes the same holds, and a parsed header always
  describes a payload inside the buffer.
* Structured-but-wrong segments (random flags including SYN+FIN, SYN+RST and none; random
  options; random sequence and acknowledgment numbers) against a *live* connection never raise,
  are counted, keep the endpoint's state legal, and a segment outside the receive window never
  moves ``rcv_nxt`` or ``snd_una`` nor delivers data.
"""

from __future__ import annotations

import struct

import stackrig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.seqnum import MASK, seq_le, seq_sub
from aionetstack.wire.tcp import ACK, FIN, RST, SYN, parse_tcp

FUZZED = {"parser": 0, "ingress": 0}

option_bytes = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([
        b"\x00", b"\x01", b"\x02\x04\x05\xb4", b"\x03\x03\x07", b"\x04\x02",
        b"\x08\x0a" + bytes(8), b"\x05\x0a" + bytes(8), b"\x02\x00", b"\x02\x01", b"\x05\x03xyz",
        b"\xfe\x02", b"\xfe\x06abcd", b"\x08\x09" + bytes(7), b"\x03\x02", b"\x1e\xff",
    ]), max_size=10).map(b"".join),
)


@settings(max_examples=600, deadline=None)
@given(data=st.binary(max_size=120))
def test_parse_tcp_arbitrary_bytes(data: bytes) -> None:
    FUZZED["parser"] += 1
    try:
        h = parse_tcp(memoryview(data))
    except MalformedPacket as exc:
        assert exc.reason in ("truncated", "bad-length", "bad-option")
        return
    assert 20 <= h.header_len <= len(data)
    assert len(h.payload) == len(data) - h.header_len


@settings(max_examples=600, deadline=None)
@given(opts=option_bytes, flags=st.integers(0, 255), doff=st.one_of(st.none(), st.integers(0, 15)),
       payload=st.binary(max_size=16))
def test_parse_tcp_structured_header_with_random_options(opts: bytes, flags: int,
                                                         doff: int | None,
                                                         payload: bytes) -> None:
    FUZZED["parser"] += 1
    opts = opts[:40]
    opts += b"\x00" * (-len(opts) % 4)
    words = doff if doff is not None else 5 + len(opts) // 4
    hdr = struct.pack("!HHIIHHHH", 1, 2, 3, 4, (words << 12) | flags, 5, 0, 0)
    seg = hdr + opts + payload
    try:
        h = parse_tcp(memoryview(seg))
    except MalformedPacket as exc:
        assert exc.reason in ("bad-length", "bad-option")
        assert words < 5 or words * 4 > len(seg) or exc.reason == "bad-option"
        return
    assert h.header_len == words * 4 and h.flags == flags
    o = h.options
    assert o.mss is None or 0 <= o.mss <= 0xFFFF
    assert len(o.sack_blocks) <= 4


# -- ingress against a live connection ------------------------------------------------------------

LIVE: list[stackrig.Live] = []


def live() -> stackrig.Live:
    """One connection reused across examples while it survives (state accumulating is part of
    the test); a fresh one once a segment legitimately reset or closed it."""
    if not LIVE or LIVE[0].ep.state is not TcpState.ESTABLISHED:
        LIVE.clear()
        lv = stackrig.tcp_peer(seed=11, wscale=7)
        lv.ep.write(b"s" * 3000)  # data in flight so that ACK processing has work to do
        lv.net.settle()
        lv.peer.recv()
        LIVE.append(lv)
    return LIVE[0]


flags_st = st.one_of(st.integers(0, 255),
                     st.sampled_from([SYN | FIN, SYN | RST, 0, FIN, SYN | FIN | ACK,
                                      RST | ACK, SYN | ACK, ACK, FIN | ACK, RST]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=flags_st, opts=option_bytes,
       beyond=st.one_of(st.integers(0, 2**31 - 70000), st.integers(-2**31 + 1, -1)),
       ack_off=st.integers(-2**31 + 1, 2**31 - 1), payload=st.binary(max_size=40),
       window=st.integers(0, 0xFFFF))
def test_segment_outside_window_changes_nothing(flags: int, opts: bytes, beyond: int,
                                                ack_off: int, payload: bytes,
                                                window: int) -> None:
    lv = live()
    ep, rcv, snd = lv.ep, lv.ep.rcv, lv.ep.snd
    wnd = rcv.rcv_wnd
    seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    # a sequence number wholly outside [rcv_nxt, rcv_nxt + wnd), as is its last byte
    off = wnd + beyond if beyond >= 0 else beyond - seg_len - 1
    seq = (rcv.rcv_nxt + off) & MASK
    before = (rcv.rcv_nxt, snd.snd_una, snd.snd_nxt, snd.snd_max, ep.state, len(rcv.buffer),
              rcv.ooo_bytes, snd.snd_wnd)
    st_before = lv.s.stats()["tcp"]
    opts = opts[:40] + b"\x00" * (-len(opts[:40]) % 4)
    seg = lv.peer.segment(sport=lv.sport, seq=seq, ack=(snd.snd_una + ack_off) & MASK,
                          flags=flags, window=window, payload=payload)
    seg = _with_options(seg, opts)
    lv.peer.send_raw(seg)
    FUZZED["ingress"] += 1
    after = (rcv.rcv_nxt, snd.snd_una, snd.snd_nxt, snd.snd_max, ep.state, len(rcv.buffer),
             rcv.ooo_bytes, snd.snd_wnd)
    st_after = lv.s.stats()["tcp"]
    assert st_after["received"] == st_before.get("received", 0) + 1
    assert after == before, (flags, seq, before, after)
    replies = lv.peer.recv()
    for r in replies:  # at most an ACK (or a challenge ACK) -- never a RST or data
        assert r.flags == ACK and not r.payload
    assert len(replies) <= 1


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=flags_st, opts=option_bytes, seq_off=st.one_of(
    st.integers(-3000, 70000), st.integers(-2**31 + 1, 2**31 - 1)),
       ack_off=st.one_of(st.integers(-4000, 4000), st.integers(-2**31 + 1, 2**31 - 1)),
       payload=st.binary(max_size=600), window=st.integers(0, 0xFFFF),
       advance=st.sampled_from([0.0, 0.0, 0.0, 0.3, 5.0]))
def test_random_segments_never_raise_and_keep_invariants(flags: int, opts: bytes, seq_off: int,
                                                        ack_off: int, payload: bytes,
                                                        window: int, advance: float) -> None:
    lv = live()
    ep, rcv, snd = lv.ep, lv.ep.rcv, lv.ep.snd
    opts = opts[:40] + b"\x00" * (-len(opts[:40]) % 4)
    seg = lv.peer.segment(sport=lv.sport, seq=(rcv.rcv_nxt + seq_off) & MASK,
                          ack=(snd.snd_una + ack_off) & MASK, flags=flags, window=window,
                          payload=payload)
    received = lv.s.stats()["tcp"].get("received", 0)
    una, nxt = snd.snd_una, rcv.rcv_nxt
    lv.peer.send_raw(_with_options(seg, opts))
    FUZZED["ingress"] += 1
    assert lv.s.stats()["tcp"]["received"] == received + 1
    if advance:
        lv.net.run(duration=advance)
    if ep.state is TcpState.ESTABLISHED or ep.state is TcpState.CLOSE_WAIT:
        assert seq_le(una, snd.snd_una) and seq_le(snd.snd_una, snd.snd_nxt)
        assert seq_le(snd.snd_nxt, snd.snd_max)
        assert seq_le(nxt, rcv.rcv_nxt)
        assert seq_sub(rcv.rcv_nxt, nxt) <= len(payload) + 1
        assert len(snd.buffer) <= snd.capacity
        assert len(rcv.buffer) <= rcv.capacity + (1 << rcv.rcv_wscale)
    if rcv.buffer:
        ep.read()  # keep the window open so that later examples exercise acceptance
    lv.peer.recv()


def _with_options(packet: bytearray, opts: bytes) -> bytes:
    """Insert ``opts`` into the TCP header of an IPv4 packet built by ``RawPeer.segment`` and
    fix the lengths and checksums."""
    from aionetstack.wire.checksum import PROTO_TCP, transport_checksum
    from aionetstack.wire.ipv4 import pack_ipv4

    if not opts:
        return bytes(packet)
    tcp = bytearray(packet[20:40]) + opts + packet[40:]
    tcp[12] = ((20 + len(opts)) // 4) << 4 | (tcp[12] & 0x0F)
    tcp[16:18] = b"\0\0"
    src, dst = bytes(packet[12:16]), bytes(packet[16:20])
    tcp[16:18] = struct.pack("!H", transport_checksum(src, dst, PROTO_TCP, memoryview(tcp)))
    out = bytearray(20 + len(tcp))
    pack_ipv4(out, 0, src=src, dst=dst, protocol=6, payload_len=len(tcp))
    out[20:] = tcp
    return bytes(out)


# -- ingress to a listener ------------------------------------------------------------------------

LISTEN: list[stackrig.Live] = []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=flags_st, opts=option_bytes, seq=st.integers(0, MASK), ack=st.integers(0, MASK),
       payload=st.binary(max_size=64), sport=st.integers(1, 0xFFFF))
def test_random_segments_to_a_listener_create_state_only_for_a_syn(
        flags: int, opts: bytes, seq: int, ack: int, payload: bytes, sport: int) -> None:
    """A listener creates a child for a SYN and nothing else: SYN+FIN, SYN+RST, SYN+ACK, bare
    ACKs (no SYN cookie is outstanding), RSTs and flagless segments leave no state behind."""
    if not LISTEN:
        LISTEN.append(stackrig.tcp_peer(seed=12))
    lv = LISTEN[0]
    conns = lv.s.tcp.connections
    for key in [k for k, ep in conns.items() if ep is not lv.ep]:
        conns[key].abort()  # children from earlier examples
    lv.peer.recv()
    before = len(conns)
    received = lv.s.stats()["tcp"].get("received", 0)
    opts = opts[:40] + b"\x00" * (-len(opts[:40]) % 4)
    seg = lv.peer.segment(sport=sport if sport != lv.sport else sport ^ 1, src=b"\xc6\x12\x00\x07",
                          seq=seq, ack=ack, flags=flags, payload=payload)
    lv.peer.send_raw(_with_options(seg, opts))
    FUZZED["ingress"] += 1
    st_ = lv.s.stats()["tcp"]
    assert st_["received"] == received + 1
    created = len(conns) - before
    control = flags & (SYN | ACK | RST | FIN)
    if control != SYN:
        assert created == 0, (flags, created)
    else:
        assert created <= 1
    replies = lv.peer.recv()
    assert len(replies) <= 1
    for r in replies:
        assert r.flags in (SYN | ACK, RST, RST | ACK)


def test_fuzz_figures() -> None:
    """Not a property: prints how many segments the properties above fed (``-s`` shows it)."""
    print(f"\nfuzzed: {FUZZED['parser']} parser inputs, {FUZZED['ingress']} ingress segments")
