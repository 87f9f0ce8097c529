"""Conformance, data transfer and windows: window scaling, receive window, Nagle, delayed
ACKs, MSS, sequence wrap-around and urgent data."""

from __future__ import annotations

import pytest
from conformance_helpers import ISS, MSS, PEER_ISS, S, establish, listener, only
from tcp_helpers import Wire

from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions

M = 0xFFFFFFFF

# -- window scaling (RFC 7323 §2) ----------------------------------------------------------------


def test_no_window_scaling_unless_both_syns_carry_it_passive(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN, window=5000, options=TcpOptions(mss=MSS))
    sa = only(wire.recv())
    assert sa.options.wscale is None and sa.window == 65535
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=5000)
    ep = lst.accept()
    assert ep.rcv.rcv_wscale == 0 and ep.snd.snd_wscale == 0
    assert ep.snd.snd_wnd == 5000  # the peer's window taken unscaled
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"x" * 100, window=5000)
    wire.advance(0.05)
    a = only(wire.recv())
    assert a.window == 65535 - 100  # capped at 64 KiB, never scaled; the edge stays put
    ep.nodelay = True
    ep.write(b"y" * 8000)
    # the unscaled 5000-byte peer window; the 620-byte rest waits (sender SWS avoidance)
    assert [len(s.payload) for s in wire.recv()] == [MSS] * 3


def test_wscale_in_a_synack_alone_does_not_enable_scaling(wire: Wire) -> None:
    """Our SYN had WS but only the peer's SYN-ACK matters together with ours; a peer that did
    not get WS from us cannot send it (RFC 7323 §2.2), so only check the active side agreeing."""
    from conformance_helpers import connect

    ep, syn = connect(wire)
    assert syn.options.wscale == 3
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK, window=100,
              options=TcpOptions(mss=MSS, wscale=7))
    a = only(wire.recv())
    assert ep.snd.snd_wscale == 7 and ep.rcv.rcv_wscale == 3
    assert ep.snd.snd_wnd == 100  # a SYN-ACK's own window is never scaled
    assert a.window == (ep.rcv.capacity >> 3)
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=100)
    assert ep.snd.snd_wnd == 100 << 7


def test_scaled_windows_used_by_the_sender(wire: Wire) -> None:
    _, ep = establish(wire, wscale=2, window=1000)  # SYN window 1000 unscaled, ACK's scaled
    assert ep.snd.snd_wnd == 4000
    ep.nodelay = True
    ep.write(b"w" * 10_000)
    assert [len(s.payload) for s in wire.recv()] == [MSS, MSS]  # 1080 more: SWS avoidance
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + 2 * MSS, flags=ACK, window=1000)
    assert [len(s.payload) for s in wire.recv()] == [MSS, MSS]  # 4000 = 1000 << 2 again


def test_wscale_above_14_is_clamped(wire: Wire) -> None:
    _, ep = establish(wire, wscale=20)
    assert ep.snd.snd_wscale == 14


def test_window_of_a_gigabyte_and_more(wire: Wire) -> None:
    _, ep = establish(wire, wscale=14, window=0xFFFF)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0xFFFF)
    assert ep.snd.snd_wnd == 0xFFFF << 14  # the largest window: just under 1 GiB
    ep.snd.cc.cwnd = 1 << 31
    ep.set_buffer_sizes(sndbuf=200 * MSS)
    ep.write(b"g" * 200 * MSS)
    segs = wire.recv()
    assert len(segs) == 200 and all(len(s.payload) == MSS for s in segs)


def test_our_large_receive_window_is_scaled(wire: Wire) -> None:
    wire.tcp.rcvbuf = 8 << 20  # 8 MiB: scale 8
    _, ep = establish(wire)
    assert ep.rcv.rcv_wscale == 8
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"q" * 10)
    wire.advance(0.05)
    a = only(wire.recv())
    assert a.window << 8 >= (8 << 20) - 10 and a.window == ((8 << 20) - 10 + 255) >> 8


# -- receive window (RFC 9293 §3.8.6.2.2) ---------------------------------------------------------


def _small(wire: Wire, rcvbuf: int = 4 * MSS) -> TcpEndpoint:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.set_buffer_sizes(rcvbuf=rcvbuf)
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS))
    assert only(wire.recv()).window == rcvbuf
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    return lst.accept()


def test_zero_window_when_the_app_stops_reading_and_update_on_reopen(wire: Wire) -> None:
    ep = _small(wire)
    seq = PEER_ISS + 1
    for _ in range(4):
        wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"z" * MSS)
        seq += MSS
    assert [a.window for a in wire.recv()][-1] == 0
    # a zero-window probe (one byte beyond the window) is answered with the zero window
    wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"P")
    a = only(wire.recv())
    assert a.flags == ACK and a.ack == seq and a.window == 0
    wire.send(seq=seq - 1, ack=ISS + 1, flags=ACK)  # Linux-style probe: an old ACK
    a = only(wire.recv())
    assert a.ack == seq and a.window == 0
    assert ep.read() == b"z" * 4 * MSS
    u = only(wire.recv())  # the window update, sent unprompted
    assert u.flags == ACK and u.ack == seq and u.window == 4 * MSS
    wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"P")
    wire.advance(0.05)
    assert only(wire.recv()).ack == seq + 1


def test_no_window_update_for_a_read_that_cannot_move_the_edge(wire: Wire) -> None:
    """Regression: with an unscaled 64 KiB window over a larger buffer every read sent an ACK,
    because the edge was computed from the buffer, not from what the field can carry."""
    _, ep = establish(wire, wscale=None)
    assert ep.rcv.capacity > 0xFFFF
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"r" * 200)
    wire.advance(0.05)
    assert only(wire.recv()).window == 0xFFFF - 200
    assert ep.read() == b"r" * 200
    assert wire.recv() == []  # the edge would move by 200 bytes only: no update (SWS)
    wire.send(seq=PEER_ISS + 201, ack=ISS + 1, flags=ACK, payload=b"s" * 1000)
    wire.send(seq=PEER_ISS + 1201, ack=ISS + 1, flags=ACK | PSH, payload=b"s" * 1000)
    wire.advance(0.05)
    a = only(wire.recv())  # the edge moves once it can move by an MSS (receiver SWS)
    assert a.ack == PEER_ISS + 2201 and a.window == 0xFFFF  # the buffer is far from full


def test_window_never_shrinks_on_our_side(wire: Wire) -> None:
    ep = _small(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, payload=b"a" * MSS)
    wire.advance(0.05)
    a = only(wire.recv())
    right = a.ack + a.window
    assert right == PEER_ISS + 1 + 4 * MSS
    ep.set_buffer_sizes(sndbuf=10)  # unrelated: the receive edge stays put
    wire.send(seq=PEER_ISS + 1 + MSS, ack=ISS + 1, flags=ACK, payload=b"b" * 100)
    wire.advance(0.05)
    a = only(wire.recv())
    assert a.ack + a.window == right


# -- ACK generation (RFC 9293 §3.8.6.3, RFC 5681 §4.2) -------------------------------------------


def test_delayed_ack_well_under_500ms_and_cancelled_by_data(wire: Wire) -> None:
    _, ep = establish(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"req")
    assert wire.recv() == []
    ep.write(b"resp")  # the reply carries the ACK: no separate pure ACK later
    s = only(wire.recv())
    assert s.ack == PEER_ISS + 4 and bytes(s.payload) == b"resp"
    wire.send(seq=PEER_ISS + 4, ack=ISS + 5, flags=ACK)
    wire.advance(0.5)
    assert wire.recv() == []
    wire.send(seq=PEER_ISS + 4, ack=ISS + 5, flags=ACK | PSH, payload=b"req2")
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=1)
    assert 0 < wire.tcp.delack <= 0.5
    assert only(wire.recv()).ack == PEER_ISS + 8


def test_ack_every_second_full_segment(wire: Wire) -> None:
    establish(wire)
    seq = PEER_ISS + 1
    acks = []
    for _ in range(6):
        wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"f" * MSS)
        seq += MSS
        acks += [a.ack for a in wire.recv()]
    assert acks == [PEER_ISS + 1 + 2 * MSS, PEER_ISS + 1 + 4 * MSS, PEER_ISS + 1 + 6 * MSS]


def test_one_ack_for_a_batch_of_segments(wire: Wire) -> None:
    """Segments read from the link in one batch share one ACK, sent at the end of the batch
    (as Linux sends one for a GRO super-segment); PSH keeps GRO from merging them, so the
    stack processes four segments and would otherwise ACK after the second and the fourth."""
    establish(wire)
    seq = PEER_ISS + 1
    for _ in range(4):
        wire.send(seq=seq, ack=ISS + 1, flags=ACK | PSH, payload=b"f" * MSS, settle=False)
        seq += MSS
    acks = wire.recv()
    assert [a.ack for a in acks] == [PEER_ISS + 1 + 4 * MSS]
    gro = [n.gro.stats for n in wire.s.nics.values() if not n.loopback]
    assert gro[0]["gro_merged"] == 0  # four segments, not one merged


def test_quick_ack_for_hole_and_for_duplicate_data(wire: Wire) -> None:
    _, ep = establish(wire)
    base = PEER_ISS + 1
    wire.send(seq=base + 10, ack=ISS + 1, flags=ACK, payload=b"later")
    assert only(wire.recv()).ack == base  # out of order: at once
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"0123456789")
    assert only(wire.recv()).ack == base + 15  # fills the hole: at once
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"0123456789")
    assert only(wire.recv()).ack == base + 15  # duplicate: at once (RFC 5681 §4.2)
    assert ep.read() == b"0123456789later"


def test_bounded_out_of_order_memory(wire: Wire) -> None:
    ep = _small(wire)
    base = PEER_ISS + 1
    for i in range(5):  # the last one lies past the window's right edge
        wire.send(seq=base + 1 + i * MSS, ack=ISS + 1, flags=ACK, payload=b"o" * MSS)
        assert only(wire.recv()).ack == base
    assert ep.rcv.ooo_bytes == 4 * MSS - 1  # trimmed to the window
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"o")
    assert only(wire.recv()).ack == base + 4 * MSS
    assert ep.read() == b"o" * 4 * MSS
    assert ep.rcv.ooo_bytes == 0 and not ep.rcv.ooo


# -- sending (Nagle, MSS) --------------------------------------------------------------------------


def test_nagle_coalesces_small_writes_and_nodelay_does_not(wire: Wire) -> None:
    _, ep = establish(wire)
    assert not ep.nodelay
    ep.write(b"a")
    assert [bytes(s.payload) for s in wire.recv()] == [b"a"]
    for c in b"bcdef":
        ep.write(bytes([c]))
    assert wire.recv() == []
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    s = only(wire.recv())
    assert bytes(s.payload) == b"bcdef" and s.seq == ISS + 2 and s.flags == ACK | PSH
    ep.write(b"x" * (MSS + 10))  # a full segment goes at once even with data in flight
    assert [len(s.payload) for s in wire.recv()] == [MSS]
    ep.nodelay = True  # turning NODELAY on flushes what Nagle held
    assert [len(s.payload) for s in wire.recv()] == [10]


def test_mss_is_the_smaller_of_ours_and_the_peers_and_defaults_to_536(wire: Wire) -> None:
    _, ep = establish(wire, mss=9000)
    assert ep.snd.mss == MSS  # our route MTU 1500 limits it
    ep.nodelay = True
    ep.write(b"m" * 3000)
    assert [len(s.payload) for s in wire.recv()] == [MSS, MSS, 80]


def test_default_mss_536_without_the_option_also_on_active_open(wire: Wire) -> None:
    from conformance_helpers import connect

    ep, syn = connect(wire)
    assert syn.options.mss == MSS  # from the route MTU 1500
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK)
    only(wire.recv())
    assert ep.snd.mss == 536
    ep.nodelay = True
    ep.write(b"d" * 1000)
    assert [len(s.payload) for s in wire.recv()] == [536, 464]


# -- sequence numbers wrapping at 2**32 ------------------------------------------------------------


def test_sequence_wrap_around_in_every_comparison(wire: Wire) -> None:
    iss, peer = M - 100, M - 50  # both directions wrap inside the first few segments
    s0, r0 = M - 99, M - 49
    _, ep = establish(wire, iss=iss, peer_iss=peer, wscale=None)
    assert ep.snd.snd_una == s0 and ep.rcv.rcv_nxt == r0
    # receive across the wrap, out of order first (a SACK block beyond the wrap)
    wire.send(seq=(r0 + 100) & M, ack=s0, flags=ACK, payload=b"B" * 100)
    a = only(wire.recv())
    assert a.ack == r0 and a.options.sack_blocks == ((50, 150),)
    wire.send(seq=r0, ack=s0, flags=ACK, payload=b"A" * 100)
    a = only(wire.recv())
    assert a.ack == 150 and a.options.sack_blocks == ()
    assert ep.read() == b"A" * 100 + b"B" * 100
    wire.send(seq=r0 + 10, ack=s0, flags=ACK, payload=b"AA")  # an old duplicate
    assert only(wire.recv()).ack == 150
    # send across the wrap
    ep.nodelay = True
    ep.write(b"s" * 3000)
    segs = wire.recv()
    assert [s.seq for s in segs] == [s0, (s0 + MSS) & M, (s0 + 2 * MSS) & M]
    assert [len(s.payload) for s in segs] == [MSS, MSS, 80]
    wire.send(seq=150, ack=(s0 + MSS) & M, flags=ACK)
    assert ep.snd.snd_una == (s0 + MSS) & M and ep.send_buffered() == 3000 - MSS
    wire.send(seq=150, ack=(iss - 5) & M, flags=ACK)  # an old ACK from before the wrap
    assert wire.recv() == [] and ep.snd.snd_una == (s0 + MSS) & M
    wire.send(seq=150, ack=(s0 + 5000) & M, flags=ACK)  # acks unsent data: ACK and drop
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == (s0 + 3000) & M and a.ack == 150
    wire.send(seq=150, ack=(s0 + 3000) & M, flags=ACK | FIN)
    assert only(wire.recv()).ack == 151 and ep.state is S.CLOSE_WAIT
    assert ep.send_buffered() == 0


def test_rst_and_challenge_ack_across_the_wrap(wire: Wire) -> None:
    _, ep = establish(wire, iss=M, peer_iss=M - 1, wscale=None)  # RCV.NXT = 2**32 - 1
    wire.send(seq=50, flags=RST)  # in window, beyond the wrap: challenge
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == 0 and a.ack == M
    wire.send(seq=M - 70_000, flags=RST)  # behind the window: dropped
    assert wire.recv() == []
    wire.send(seq=M, flags=RST)  # exact
    assert ep.state is S.CLOSED


# -- urgent data (RFC 9293 §3.8.5: may be unsupported, must not break the stream) ----------------


def test_urgent_pointer_does_not_break_the_stream(wire: Wire) -> None:
    from aionetstack.wire.ipv4 import pack_ipv4
    from aionetstack.wire.tcp import pack_tcp

    _, ep = establish(wire)
    payload = b"before!after"
    seg = bytearray(20 + len(payload))
    pack_tcp(seg, 0, src=wire.peer, dst=wire.local, sport=4000, dport=80, seq=PEER_ISS + 1,
             ack=ISS + 1, flags=ACK | PSH | URG, window=1000, payload=payload, checksum=False)
    seg[18:20] = (7).to_bytes(2, "big")  # urgent pointer -> the "!"
    buf = bytearray(20) + seg
    pack_ipv4(buf, 0, src=wire.peer, dst=wire.local, protocol=6, payload_len=len(seg))
    _fix_checksum(wire, buf)
    wire.end.send(buf)
    wire.net.settle()
    wire.send(seq=PEER_ISS + 1 + len(payload), ack=ISS + 1, flags=ACK | URG | FIN,
              payload=b"!")
    assert ep.read() == payload + b"!" and ep.read() == b""


def _fix_checksum(wire: Wire, buf: bytearray) -> None:
    from aionetstack.wire.tcp import tcp_checksum_ok

    seg = memoryview(buf)[20:]
    seg[16:18] = b"\0\0"
    from aionetstack.wire.checksum import checksum

    pseudo = wire.peer + wire.local + bytes([0, 6]) + len(seg).to_bytes(2, "big")
    c = checksum(pseudo + bytes(seg))
    seg[16:18] = c.to_bytes(2, "big")
    assert tcp_checksum_ok(wire.peer, wire.local, seg)


@pytest.mark.parametrize("push", [True, False])
def test_push_flag_is_not_needed_for_delivery(wire: Wire, push: bool) -> None:
    _, ep = establish(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | (PSH if push else 0), payload=b"data")
    assert ep.read() == b"data"


def test_window_shrunk_to_zero_with_data_in_flight_is_survived(wire: Wire) -> None:
    _, ep = establish(wire, wscale=None, window=10 * MSS)
    ep.nodelay = True
    ep.write(b"k" * (4 * MSS))
    assert len(wire.recv()) == 4
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK, window=0)  # edge moves left
    ep.write(b"more")
    assert wire.recv() == []  # nothing beyond the peer's window
    for _ in range(4):  # timeouts probe the window; the peer answers, still zero
        wire.net.run(until=lambda: bool(wire.end.pending), timeout=100)
        assert all(not s.payload or s.seq == ISS + 1 + MSS for s in wire.recv())
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK, window=0)
    assert ep.state is S.ESTABLISHED
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK, window=10 * MSS)
    wire.net.run(until=lambda: ep.send_buffered() == 0, timeout=0)
    segs = wire.recv()
    assert segs and segs[0].seq == ISS + 1 + MSS  # resent from SND.UNA once it reopens
    data = b"".join(bytes(s.payload) for s in segs)
    assert data == b"k" * (3 * MSS) + b"more"


# -- endpoint API: max_segment (TCP_MAXSEG), peek, info ------------------------------------------
def test_max_segment_caps_the_offered_and_used_mss(wire: Wire) -> None:
    from aionetstack.errors import InvalidArgument, InvalidEndpointState

    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    with pytest.raises(InvalidArgument):
        lst.max_segment = 20
    lst.max_segment = 600
    lst.bind(None, 80)
    lst.listen(4)
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS, wscale=7, sack_permitted=True))
    sa = only(wire.recv())
    assert sa.options.mss == 600  # offered on the SYN-ACK
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    child = lst.accept()
    assert child.max_segment == 600 and child.snd.mss == 600  # inherited and used
    with pytest.raises(InvalidEndpointState):
        child.max_segment = 700
    child.nodelay = True
    child.write(b"q" * 1500)
    assert [len(s.payload) for s in wire.recv()] == [600, 600, 300]


def test_max_segment_on_connect_and_with_syn_cookies(wire: Wire) -> None:
    from aionetstack.errors import ConnectStarted

    wire.tcp.isn_override = ISS
    ep = wire.tcp.new_endpoint()
    ep.max_segment = 1000
    with pytest.raises(ConnectStarted):
        ep.connect("198.18.0.2", 80)
    syn = only(wire.recv())
    assert syn.options.mss == 1000
    # cookies: a listener with a full SYN queue answers statelessly with its capped MSS
    lst = wire.tcp.new_endpoint()
    lst.max_segment = 700
    lst.bind(None, 81)
    lst.listen(1)
    for i in range(4):
        wire.send(sport=5000 + i, dport=81, seq=PEER_ISS, flags=SYN,
                  options=TcpOptions(mss=MSS))
    mss_seen = [s.options.mss for s in wire.recv() if s.flags == SYN | ACK]
    assert mss_seen and set(mss_seen) == {700}


def test_peek_leaves_the_bytes_for_read(wire: Wire) -> None:
    from aionetstack.errors import WouldBlock

    _, ep = establish(wire)
    with pytest.raises(WouldBlock):
        ep.peek()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"hello world")
    assert ep.peek(5) == b"hello"
    assert ep.peek() == b"hello world"
    assert ep.peek(0) == b""
    assert ep.unread() == 11
    assert ep.read() == b"hello world"
    wire.send(seq=PEER_ISS + 12, ack=ISS + 1, flags=ACK | FIN)
    assert ep.peek() == b""  # EOF


def test_info_reports_sack_holes_and_recovery(wire: Wire) -> None:
    _, ep = establish(wire)
    ep.nodelay = True
    ep.write(b"d" * (4 * MSS))
    assert len(wire.recv()) == 4
    info = ep.info()
    assert info["unacked"] == 4 * MSS and info["sack_holes"] == 0
    assert info["congestion_control"] == wire.tcp.congestion_control
    # the peer lost the first segment and SACKs the other three
    for k in range(1, 4):
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK,
                  options=TcpOptions(sack_blocks=((ISS + 1 + MSS, ISS + 1 + (k + 1) * MSS),)))
    info = ep.info()
    assert info["sack_holes"] == 1 and info["sacked_bytes"] == 3 * MSS
    assert info["in_recovery"] and info["retransmits"] >= 1


# -- loss recovery details ---------------------------------------------------------------------
def test_timeout_resend_skips_sacked_data(wire: Wire) -> None:
    """After a retransmission timeout the resend skips what the receiver SACKed (the scoreboard
    survives a first timeout, RFC 6675 §5.1, RFC 8985 §6.3): holes 1, 2 and 4 are resent, 3 is
    not."""
    _, ep = establish(wire)
    ep.nodelay = True
    ep.write(b"s" * (4 * MSS))
    assert len(wire.recv()) == 4
    seg = [(ISS + 1 + k * MSS) & 0xFFFFFFFF for k in range(5)]
    wire.send(seq=PEER_ISS + 1, ack=seg[0], flags=ACK,
              options=TcpOptions(sack_blocks=((seg[2], seg[3]),)))  # holds segment 3 only
    assert wire.recv() == []  # RACK waits a reordering window (RFC 8985 §6.2)
    wire.advance(0.01)
    assert [s.seq for s in wire.recv()] == [seg[0]]  # then the fast retransmission
    wire.advance(ep.info()["rto"])
    assert [s.seq for s in wire.recv()] == [seg[0]]  # cwnd is one segment after the timeout
    # (this ACK repeats no SACK block: what the sender skips comes from the kept scoreboard)
    wire.send(seq=PEER_ISS + 1, ack=seg[1], flags=ACK)
    resent = [s.seq for s in wire.recv()]
    assert resent == [seg[1], seg[3]]  # segment 3 (SACKed) is skipped
    wire.send(seq=PEER_ISS + 1, ack=seg[4], flags=ACK)
    assert ep.info()["unacked"] == 0


def test_second_timeout_forgets_the_scoreboard(wire: Wire) -> None:
    """A receiver may renege (RFC 2018 §8): after a second timeout in a row the SACKed data is
    resent too."""
    _, ep = establish(wire)
    ep.nodelay = True
    ep.write(b"r" * (3 * MSS))
    assert len(wire.recv()) == 3
    seg = [(ISS + 1 + k * MSS) & 0xFFFFFFFF for k in range(4)]
    wire.send(seq=PEER_ISS + 1, ack=seg[0], flags=ACK,
              options=TcpOptions(sack_blocks=((seg[1], seg[2]),)))
    wire.advance(0.01)
    assert [s.seq for s in wire.recv()] == [seg[0]]  # RACK's fast retransmission
    wire.advance(ep.info()["rto"])
    assert [s.seq for s in wire.recv()] == [seg[0]]
    wire.advance(ep.info()["rto"] + 0.01)  # lost again: the scoreboard goes
    assert [s.seq for s in wire.recv()] == [seg[0]]
    wire.send(seq=PEER_ISS + 1, ack=seg[1], flags=ACK)  # no SACK any more: reneged
    assert [s.seq for s in wire.recv()] == [seg[1], seg[2]]


def test_a_lost_retransmission_is_resent_without_waiting_for_the_timeout(wire: Wire) -> None:
    """Segment 0 is lost, and so is its fast retransmission: once data first sent after that
    retransmission is SACKed while segment 0 is still missing, segment 0 goes again at once."""
    _, ep = establish(wire)
    ep.nodelay = True
    ep.write(b"l" * (10 * MSS))
    assert len(wire.recv()) == 10
    seg = [(ISS + 1 + k * MSS) & 0xFFFFFFFF for k in range(13)]

    def dupack(upto: int) -> list[int]:
        wire.send(seq=PEER_ISS + 1, ack=seg[0], flags=ACK,
                  options=TcpOptions(sack_blocks=((seg[1], seg[upto]),)))
        return [s.seq for s in wire.recv()]

    sent = dupack(2) + dupack(3) + dupack(4)
    assert sent.count(seg[0]) == 1  # fast retransmit (RFC 6675 recovery)
    ep.write(b"n" * (2 * MSS))  # new data, sent as the recovery's pipe allows
    for upto in range(5, 11):
        sent += dupack(upto)
    assert seg[10] in sent  # new data went out after the retransmission
    before = ep.info()["retransmits"]
    again = dupack(11)  # the peer holds segment 10 (sent after the retransmission), not 0
    assert seg[0] in again and ep.info()["retransmits"] == before + 1
