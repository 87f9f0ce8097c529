"""Packet-level tests: inject a crafted segment on a manual clock, assert the exact reply."""

from __future__ import annotations

import pytest
from tcp_helpers import Wire

from aionetstack.errors import (
    ConnectionRefused,
    ConnectionReset,
    ConnectStarted,
    TimedOut,
    WouldBlock,
)
from aionetstack.stack.waiter import EVENT_OUT
from aionetstack.transport.tcp import TcpEndpoint, TcpState
from aionetstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions

ISS = 1000  # the stack's ISN (isn_override)
PEER_ISS = 5000
MSS = 1460


def only(segs: list[TcpHeader]) -> TcpHeader:
    assert len(segs) == 1, segs
    return segs[0]


def passive(wire: Wire, *, ts: bool = False, wscale: int | None = 7, window: int = 65535,
            sack: bool = True) -> tuple[TcpEndpoint, TcpEndpoint]:
    """Listener on :80; the peer (port 4000) completes a handshake; returns (listener, child)."""
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen(4)
    opts = TcpOptions(mss=MSS, wscale=wscale, sack_permitted=sack,
                      timestamp=(777, 0) if ts else None)
    wire.send(seq=PEER_ISS, flags=SYN, options=opts, window=window)
    synack = only(wire.recv())
    assert synack.flags == SYN | ACK
    assert synack.seq == ISS and synack.ack == PEER_ISS + 1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=window,
              options=TcpOptions(timestamp=(778, synack.options.timestamp[1])) if ts else None)
    assert wire.recv() == []
    child = lst.accept()
    assert child.state is TcpState.ESTABLISHED
    return lst, child


# -- resets for segments that belong to nobody (RFC 9293 §3.10.7.1) -----------------------------


def test_syn_to_closed_port_gets_rst_ack(wire: Wire) -> None:
    wire.send(seq=12345, flags=SYN, payload=b"")
    r = only(wire.recv())
    assert r.flags == RST | ACK and r.seq == 0 and r.ack == 12346 and r.window == 0
    assert (r.sport, r.dport) == (80, 4000)


def test_ack_to_closed_port_gets_rst_with_seq_of_ack(wire: Wire) -> None:
    wire.send(seq=1, ack=99999, flags=ACK, payload=b"xyz")
    r = only(wire.recv())
    assert r.flags == RST and r.seq == 99999


def test_data_without_ack_to_closed_port(wire: Wire) -> None:
    wire.send(seq=10, flags=PSH | FIN, payload=b"abcd")
    r = only(wire.recv())
    assert r.flags == RST | ACK and r.seq == 0 and r.ack == 10 + 4 + 1


def test_never_rst_a_rst(wire: Wire) -> None:
    wire.send(seq=1, ack=2, flags=RST | ACK)
    wire.send(seq=1, flags=RST)
    assert wire.recv() == []


# -- passive open ---------------------------------------------------------------------------------


def test_passive_open_synack_options(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    with pytest.raises(WouldBlock):
        lst.accept()
    wire.send(seq=PEER_ISS, flags=SYN, window=29200,
              options=TcpOptions(mss=1400, wscale=7, sack_permitted=True, timestamp=(42, 0)))
    s = only(wire.recv())
    assert s.flags == SYN | ACK and s.seq == ISS and s.ack == PEER_ISS + 1
    o = s.options
    assert o.mss == 1460 and o.wscale == 3 and o.sack_permitted
    assert o.timestamp is not None and o.timestamp[1] == 42
    assert s.window == 65535  # unscaled in a SYN
    # a retransmitted SYN repeats the SYN-ACK
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=1400, wscale=7, timestamp=(43, 0)))
    assert only(wire.recv()).flags == SYN | ACK
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, options=TcpOptions(
        timestamp=(44, o.timestamp[0])))
    child = lst.accept()
    assert child.state is TcpState.ESTABLISHED
    assert child.snd.mss == 1400 - 12  # the peer's MSS less the timestamp option
    assert child.snd.snd_wscale == 7 and child.ts_enabled


def test_synack_omits_options_the_peer_did_not_offer(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=1000))
    s = only(wire.recv())
    assert s.options.mss == 1460
    assert s.options.wscale is None and s.options.timestamp is None
    assert not s.options.sack_permitted


def test_bad_ack_in_syn_received_gets_rst(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN)
    wire.recv()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 77, flags=ACK)
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 77


def test_listener_backlog_drops_excess_syns(wire: Wire) -> None:
    wire.tcp.syncookies = False
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen(2)
    for port in (4000, 4001, 4002):
        wire.send(sport=port, seq=PEER_ISS, flags=SYN)
    assert len(wire.recv()) == 2
    lst.close()
    rsts = wire.recv()
    assert [r.flags for r in rsts] == [RST, RST]
    assert wire.tcp.connections == {} and len(wire.s.ports) == 0


# -- active open ----------------------------------------------------------------------------------


def _connect(wire: Wire) -> TcpEndpoint:
    wire.tcp.isn_override = ISS
    ep = wire.tcp.new_endpoint()
    with pytest.raises(ConnectStarted):
        ep.connect("198.18.0.2", 80)
    return ep


def test_active_open_syn_options_and_ack(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    assert syn.flags == SYN and syn.seq == ISS and syn.dport == 80
    assert syn.options.mss == 1460 and syn.options.wscale == 3
    assert syn.options.sack_permitted and syn.options.timestamp is not None
    assert syn.options.timestamp[1] == 0
    with pytest.raises(WouldBlock):
        ep.connect_result()
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK,
              options=TcpOptions(mss=1200, wscale=2, timestamp=(9, syn.options.timestamp[0])))
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PEER_ISS + 1
    assert a.options.timestamp is not None and a.options.timestamp[1] == 9
    assert ep.state is TcpState.ESTABLISHED
    ep.connect_result()
    assert ep.snd.mss == 1200 - 12 and ep.snd.snd_wscale == 2
    assert a.window == 65535 >> 3 or a.window << 3 >= 65535


def test_active_open_without_peer_wscale_disables_scaling(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK,
              window=1000, options=TcpOptions(mss=1460))
    a = only(wire.recv())
    assert ep.rcv.rcv_wscale == 0 and ep.snd.snd_wscale == 0
    assert a.window == 65535 and a.options.timestamp is None
    assert ep.snd.snd_wnd == 1000


def test_rst_in_syn_sent_needs_acceptable_ack(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    wire.send(sport=80, dport=syn.sport, seq=0, flags=RST)  # no ACK: ignored
    wire.send(sport=80, dport=syn.sport, seq=0, ack=ISS + 5, flags=RST | ACK)  # bad ACK
    assert wire.recv() == [] and ep.state is TcpState.SYN_SENT
    wire.send(sport=80, dport=syn.sport, seq=0, ack=ISS + 1, flags=RST | ACK)
    assert ep.state is TcpState.CLOSED
    with pytest.raises(ConnectionRefused):
        ep.connect_result()
    assert wire.tcp.connections == {}


def test_bad_synack_in_syn_sent_gets_rst(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 9, flags=SYN | ACK)
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 9
    assert ep.state is TcpState.SYN_SENT


def test_syn_retries_back_off_then_time_out(wire: Wire) -> None:
    t0 = wire.net.now
    ep = _connect(wire)
    times = []
    for _ in range(7):
        wire.net.run(until=lambda: bool(wire.end.pending) or ep.state is TcpState.CLOSED,
                     timeout=200)
        for s in wire.recv():
            assert s.flags == SYN and s.seq == ISS
            times.append(round(wire.net.now - t0, 3))
    assert times == [0, 1, 3, 7, 15, 31, 63]
    assert wire.net.run(until=lambda: ep.state is TcpState.CLOSED, timeout=100)
    assert round(wire.net.now - t0, 3) == 127
    with pytest.raises(TimedOut):
        ep.connect_result()
    assert wire.tcp.connections == {} and len(wire.s.ports) == 0


# -- RFC 5961 -------------------------------------------------------------------------------------


def test_exact_rst_resets(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, flags=RST)
    assert ep.state is TcpState.CLOSED
    with pytest.raises(ConnectionReset):
        ep.read()
    assert wire.recv() == []


def test_inexact_in_window_rst_draws_challenge_ack(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 100, flags=RST)
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PEER_ISS + 1
    assert ep.state is TcpState.ESTABLISHED
    wire.send(seq=PEER_ISS + 10_000_000, flags=RST)  # out of window: silently dropped
    assert wire.recv() == []


def test_syn_in_established_draws_challenge_ack(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, flags=SYN)
    a = only(wire.recv())
    assert a.flags == ACK and a.ack == PEER_ISS + 1
    assert ep.state is TcpState.ESTABLISHED


def test_ack_of_unsent_data_is_acked_and_dropped(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 500, flags=ACK | PSH, payload=b"data")
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PEER_ISS + 1
    assert ep.unread() == 0


# -- data, ACK policy -----------------------------------------------------------------------------


def test_delayed_ack_and_every_second_segment(wire: Wire) -> None:
    _, ep = passive(wire)
    seq = PEER_ISS + 1
    wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"a" * 100)
    assert wire.recv() == []
    wire.advance(0.039)
    assert wire.recv() == []
    wire.advance(0.002)
    a = only(wire.recv())
    assert a.ack == seq + 100
    seq += 100
    wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"b" * MSS)
    assert wire.recv() == []
    wire.send(seq=seq + MSS, ack=ISS + 1, flags=ACK, payload=b"c" * MSS)
    assert only(wire.recv()).ack == seq + 2 * MSS
    assert ep.read() == b"a" * 100 + b"b" * MSS + b"c" * MSS


def test_out_of_order_immediate_ack_and_exact_reassembly(wire: Wire) -> None:
    _, ep = passive(wire)
    base = PEER_ISS + 1
    data = bytes(range(256)) * 8
    wire.send(seq=base + 1000, ack=ISS + 1, flags=ACK, payload=data[1000:1500])
    assert only(wire.recv()).ack == base  # duplicate ACK at once
    wire.send(seq=base + 1200, ack=ISS + 1, flags=ACK, payload=data[1200:2048])  # overlaps
    assert only(wire.recv()).ack == base
    wire.send(seq=base + 100, ack=ISS + 1, flags=ACK, payload=data[100:1100])  # overlaps both
    assert only(wire.recv()).ack == base
    with pytest.raises(WouldBlock):
        ep.read()
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=data[:300])  # fills the hole
    assert only(wire.recv()).ack == base + 2048
    assert ep.read() == data
    wire.send(seq=base + 500, ack=ISS + 1, flags=ACK, payload=data[500:600])  # old duplicate
    assert only(wire.recv()).ack == base + 2048
    assert ep.unread() == 0


def test_fin_waits_for_the_gap(wire: Wire) -> None:
    _, ep = passive(wire)
    base = PEER_ISS + 1
    wire.send(seq=base + 5, ack=ISS + 1, flags=ACK | FIN, payload=b"world")
    assert only(wire.recv()).ack == base
    assert ep.state is TcpState.ESTABLISHED
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"hello")
    assert only(wire.recv()).ack == base + 11
    assert ep.state is TcpState.CLOSE_WAIT
    assert ep.read() == b"helloworld" and ep.read() == b""


def test_nagle_holds_small_segments_until_ack(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.write(b"x")
    s = only(wire.recv())
    assert s.payload == b"x" and s.flags == ACK | PSH
    ep.write(b"y")
    ep.write(b"z")
    assert wire.recv() == []
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    assert bytes(only(wire.recv()).payload) == b"yz"
    ep.nodelay = True
    ep.write(b"1")
    ep.write(b"2")
    assert [bytes(s.payload) for s in wire.recv()] == [b"1", b"2"]


def test_autocork_joins_short_writes_made_in_one_turn(wire: Wire) -> None:
    """A short write while data is in flight waits for the end of the turn (the delayed-ACK
    timer, due now), so writes made in the same turn leave as one segment (Linux
    autocorking); no virtual time passes.  With nodelay every write is a segment."""
    _, ep = passive(wire)
    t0 = wire.net.now
    ep.write(b"a" * MSS)  # nothing in flight: at once
    ep.write(b"b" * 100)  # in flight now: held for the end of the turn ...
    ep.write(b"c" * 200)  # ... and joined by this one
    segs = wire.recv()
    assert [bytes(s.payload) for s in segs] == [b"a" * MSS, b"b" * 100 + b"c" * 200]
    assert wire.net.now == t0
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS + 300, flags=ACK)
    assert wire.recv() == []  # the held data went with the data: no ACK of its own follows
    ep.nodelay = True
    ep.write(b"d" * MSS)
    ep.write(b"e" * 100)
    ep.write(b"f" * 200)
    assert [len(s.payload) for s in wire.recv()] == [MSS, 100, 200]


def test_an_ack_leaving_nothing_to_send_sets_off_no_end_of_turn_output(wire: Wire) -> None:
    """An ACK for part of the data in flight, with nothing unsent, has nothing for autocorking
    to hold back: it sends nothing and arms no end-of-turn output (no wasted timer run)."""
    _, ep = passive(wire)
    timer = ep._delack_timer
    fired: list[float] = []
    callback = timer.callback
    timer.callback = lambda now: (fired.append(now), callback(now))
    ep.write(b"a" * (3 * MSS))
    segs = wire.recv()
    assert sum(len(s.payload) for s in segs) == 3 * MSS
    assert fired == []  # everything went at once: nothing was held for the end of the turn
    wire.send(seq=PEER_ISS + 1, ack=segs[0].seq + MSS, flags=ACK)
    assert wire.recv() == [] and fired == []
    ep.write(b"b" * 10)  # still in flight: held for the end of the turn, then sent
    assert [bytes(s.payload) for s in wire.recv()] == [b"b" * 10] and len(fired) == 1


def test_writable_again_once_half_of_what_is_queued_is_free(wire: Wire) -> None:
    """Like Linux's sk_stream_is_writeable: after the send buffer filled, EVENT_OUT comes
    back when the free space is at least half of what is still queued, not with each ACK."""
    _, ep = passive(wire)
    ep.set_buffer_sizes(sndbuf=6000)
    events: list[int] = []
    ep.waiter.register(lambda ev: events.append(ev), EVENT_OUT)
    assert ep.write(b"q" * 10000) == 6000
    assert not ep.readiness(EVENT_OUT)
    segs = wire.recv()
    wire.send(seq=PEER_ISS + 1, ack=segs[0].seq + 1000, flags=ACK)  # 1000 free, 5000 queued
    assert not ep.readiness(EVENT_OUT) and not events
    wire.send(seq=PEER_ISS + 1, ack=segs[0].seq + 2000, flags=ACK)  # 2000 free, 4000 queued
    assert ep.readiness(EVENT_OUT) and len(events) == 1
    assert ep.write(b"r" * 5000) == 2000  # any free space is taken


def test_segmentation_to_peer_mss_and_window(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None, window=3000)
    assert ep.write(b"q" * 10000) == 10000
    segs = wire.recv()
    assert [len(s.payload) for s in segs] == [MSS, MSS]  # 3000-byte window: 2 full segments
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK, window=3000)
    segs = wire.recv()
    assert [s.seq for s in segs] == [ISS + 1 + 2 * MSS]


def test_retransmission_timeout_and_backoff(wire: Wire) -> None:
    _, ep = passive(wire, sack=False)  # (no tail loss probe without SACK, RFC 8985 §7)
    t0 = wire.net.now
    ep.write(b"r" * 100)
    first = only(wire.recv())
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)
    again = only(wire.recv())
    assert again.seq == first.seq and bytes(again.payload) == bytes(first.payload)
    rto1 = wire.net.now - t0
    t1 = wire.net.now
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=10)
    only(wire.recv())
    assert wire.net.now - t1 == pytest.approx(2 * rto1, rel=1e-6)
    assert ep.info()["retransmits"] == 2


def test_fast_retransmit_on_three_dupacks(wire: Wire) -> None:
    _, ep = passive(wire, sack=False)
    ep.write(b"d" * (5 * MSS))
    segs = wire.recv()
    assert len(segs) == 5
    for _ in range(2):
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
        assert wire.recv() == []
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    r = only(wire.recv())
    assert r.seq == ISS + 1 and len(r.payload) == MSS
    assert ep.snd.in_recovery
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + 5 * MSS, flags=ACK)
    assert not ep.snd.in_recovery


def test_zero_window_probe(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None, window=0)
    ep.write(b"p" * 10)
    assert wire.recv() == []
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)
    probe = only(wire.recv())
    assert probe.flags == ACK and probe.seq == ISS and len(probe.payload) == 0
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=1000)
    segs = wire.recv()
    assert segs and segs[0].seq == ISS + 1 and bytes(segs[0].payload) == b"p" * 10


def test_advertised_window_tracks_unread_bytes(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.set_buffer_sizes(sndbuf=1000)
    cap = ep.rcv.capacity
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, payload=b"w" * MSS)
    wire.send(seq=PEER_ISS + 1 + MSS, ack=ISS + 1, flags=ACK, payload=b"w" * MSS)
    a = only(wire.recv())
    scale = ep.rcv.rcv_wscale
    assert a.window << scale == cap - 2 * MSS  # free buffer space
    ep.read()
    assert wire.recv() == []  # window still above half the buffer: no update needed


def test_small_buffer_window_closes_and_reopens(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.set_buffer_sizes(rcvbuf=4 * MSS)
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS))
    assert only(wire.recv()).window == 4 * MSS
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    ep = lst.accept()
    seq = PEER_ISS + 1
    for _ in range(4):
        wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"z" * MSS)
        seq += MSS
    acks = wire.recv()
    assert [a.window for a in acks] == [2 * MSS, 0]
    wire.send(seq=seq, ack=ISS + 1, flags=ACK, payload=b"!")  # beyond the window: dropped
    a = only(wire.recv())
    assert a.ack == seq and a.window == 0
    assert ep.read(100) == b"z" * 100
    assert wire.recv() == []  # 100 bytes free is silly window: no update
    ep.read(MSS)
    a = only(wire.recv())
    assert a.window == MSS + 100  # reopened once at least one MSS is free


# -- closing --------------------------------------------------------------------------------------


def test_close_with_unread_data_sends_rst(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"unread")
    wire.recv()
    ep.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 1
    assert ep.state is TcpState.CLOSED


def test_active_close_sequence_and_time_wait(wire: Wire) -> None:
    lst, ep = passive(wire)
    lst.close()
    ep.write(b"bye")
    only(wire.recv())
    ep.close()  # FIN waits behind unacknowledged data? no: Nagle lets FIN go with queue empty
    fin = only(wire.recv())
    assert fin.flags & FIN and fin.seq == ISS + 4
    assert ep.state is TcpState.FIN_WAIT_1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 5, flags=ACK)
    assert ep.state is TcpState.FIN_WAIT_2
    wire.send(seq=PEER_ISS + 1, ack=ISS + 5, flags=ACK | FIN)
    a = only(wire.recv())
    assert a.flags == ACK and a.ack == PEER_ISS + 2
    assert ep.state is TcpState.TIME_WAIT
    wire.advance(30)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 5, flags=ACK | FIN)  # retransmitted FIN: re-ACK
    assert only(wire.recv()).ack == PEER_ISS + 2
    wire.advance(59)
    assert ep.state is TcpState.TIME_WAIT  # 2*MSL restarted by the FIN
    wire.advance(2)
    assert ep.state is TcpState.CLOSED
    assert wire.tcp.connections == {} and len(wire.tcp.endpoints) == 0


def test_fin_is_retransmitted(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.shutdown_write()
    fin = only(wire.recv())
    assert fin.flags == ACK | FIN
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)
    again = only(wire.recv())
    assert again.flags == ACK | FIN and again.seq == fin.seq


def test_simultaneous_close_goes_through_closing(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.shutdown_write()
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN)  # their FIN, not acking ours
    assert ep.state is TcpState.CLOSING
    assert only(wire.recv()).ack == PEER_ISS + 2
    wire.send(seq=PEER_ISS + 2, ack=ISS + 2, flags=ACK)
    assert ep.state is TcpState.TIME_WAIT


def test_passive_close_last_ack(wire: Wire) -> None:
    lst, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN)
    assert only(wire.recv()).ack == PEER_ISS + 2
    assert ep.state is TcpState.CLOSE_WAIT
    assert ep.read() == b""
    ep.close()
    fin = only(wire.recv())
    assert fin.flags == ACK | FIN and ep.state is TcpState.LAST_ACK
    wire.send(seq=PEER_ISS + 2, ack=ISS + 2, flags=ACK)
    assert ep.state is TcpState.CLOSED
    lst.close()
    assert wire.tcp.connections == {} and len(wire.s.ports) == 0
    assert len(wire.s.timers) == 0


def test_data_after_close_is_answered_with_rst(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.close()
    fin = only(wire.recv())
    assert fin.flags == ACK | FIN
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | PSH, payload=b"late")
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 2
    assert ep.state is TcpState.CLOSED and wire.tcp.connections == {}


def test_new_syn_ends_time_wait(wire: Wire) -> None:
    lst, ep = passive(wire)
    ep.close()
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    only(wire.recv())
    assert ep.state is TcpState.TIME_WAIT
    wire.send(seq=PEER_ISS + 1, flags=SYN)  # old sequence number: just an ACK
    assert only(wire.recv()).flags == ACK
    wire.send(seq=PEER_ISS + 100_000, flags=SYN)  # a new incarnation
    s = only(wire.recv())
    assert s.flags == SYN | ACK and s.ack == PEER_ISS + 100_001
    assert ep.state is TcpState.CLOSED
    lst.close()


def test_user_timeout(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.user_timeout = 5.0
    t0 = wire.net.now
    ep.write(b"u")
    assert wire.net.run(until=lambda: ep.state is TcpState.CLOSED, timeout=60)
    assert isinstance(ep.error, TimedOut)
    assert 5.0 <= wire.net.now - t0 < 15.0


def test_rst_acceptable_in_closing_states_closes_quietly(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN)
    wire.recv()
    ep.close()
    wire.recv()
    assert ep.state is TcpState.LAST_ACK
    wire.send(seq=PEER_ISS + 2, flags=RST)
    assert ep.state is TcpState.CLOSED and ep.error is None


def test_checksum_is_filled_and_verified_without_offload() -> None:
    from aionetstack.link.pipe import pipe
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp
    from aionetstack.wire.tcp import tcp_checksum_ok

    net = VirtualNetwork(seed=4)
    s = net.stack()
    ea, eb = pipe(seed=4, corrupt=1e-12)  # "corrupting": no offload, no trust
    s.add_nic(ea, ["198.18.0.1/24"])
    w = Wire(net, s, install_tcp(s), eb)
    eb.attach(w, net.clock)
    w.send(seq=1, flags=SYN)
    r = only(w.recv())
    assert r.flags == RST | ACK
    assert r.checksum != 0 and tcp_checksum_ok(w.local, w.peer, memoryview(w.raw[0]))
    # a segment with a bad checksum is dropped without a reply
    from aionetstack.wire.ipv4 import pack_ipv4
    from aionetstack.wire.tcp import pack_tcp
    buf = bytearray(40)
    pack_ipv4(buf, 0, src=w.peer, dst=w.local, protocol=6, payload_len=20)
    pack_tcp(buf, 20, src=w.peer, dst=w.local, sport=1, dport=2, seq=1, ack=0, flags=SYN,
             window=0)
    assert tcp_checksum_ok(w.peer, w.local, memoryview(buf)[20:])
    buf[30] ^= 0xFF
    eb.send(buf)
    assert w.recv() == []
    assert s.stats()["tcp"]["malformed.bad-checksum"] == 1


def test_sack_blocks_most_recent_first(wire: Wire) -> None:
    _, _ep = passive(wire)
    base = PEER_ISS + 1
    wire.send(seq=base + 100, ack=ISS + 1, flags=ACK, payload=b"a" * 100)
    a = only(wire.recv())
    assert a.ack == base and a.options.sack_blocks == ((base + 100, base + 200),)
    wire.send(seq=base + 300, ack=ISS + 1, flags=ACK, payload=b"b" * 100)
    a = only(wire.recv())
    assert a.options.sack_blocks == ((base + 300, base + 400), (base + 100, base + 200))
    wire.send(seq=base + 200, ack=ISS + 1, flags=ACK, payload=b"c" * 100)  # joins both
    assert only(wire.recv()).options.sack_blocks == ((base + 100, base + 400),)
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"d" * 100)
    a = only(wire.recv())
    assert a.ack == base + 400 and a.options.sack_blocks == ()


def test_sack_blocks_fit_beside_timestamps(wire: Wire) -> None:
    _, _ep = passive(wire, ts=True)
    base = PEER_ISS + 1
    for i in range(5):
        wire.send(seq=base + 200 * (i + 1), ack=ISS + 1, flags=ACK, payload=b"x" * 100,
                  options=TcpOptions(timestamp=(800 + i, 0)))
    acks = wire.recv()
    last = acks[-1].options
    assert last.timestamp is not None and len(last.sack_blocks) == 3
    assert last.sack_blocks[0] == (base + 1000, base + 1100)


def test_limited_transmit_on_first_two_dupacks(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None, sack=False)
    ep.snd.cc.cwnd = 2 * MSS
    ep.write(b"L" * (6 * MSS))
    assert len(wire.recv()) == 2
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    s = only(wire.recv())
    assert s.seq == ISS + 1 + 2 * MSS  # new data, not a retransmission
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert only(wire.recv()).seq == ISS + 1 + 3 * MSS
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    segs = wire.recv()  # third: fast retransmit, then new data the inflated cwnd allows
    assert [s.seq for s in segs] == [ISS + 1, ISS + 1 + 4 * MSS]


def test_write_in_syn_sent_is_sent_after_the_handshake(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    assert ep.write(b"early") == 5
    assert wire.recv() == []
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK,
              options=TcpOptions(mss=MSS), payload=b"hi")  # data on the SYN-ACK too
    seg = only(wire.recv())
    assert seg.flags == ACK | PSH and bytes(seg.payload) == b"early"
    assert seg.ack == PEER_ISS + 3
    assert ep.read() == b"hi"


def test_connect_to_multicast_or_broadcast_fails(wire: Wire) -> None:
    from aionetstack.errors import NoRoute

    for dst in ("224.0.0.1", "255.255.255.255", "198.18.0.255"):
        ep = wire.tcp.new_endpoint()
        with pytest.raises(NoRoute):
            ep.connect(dst, 80)
        ep.close()
    assert wire.recv() == [] and len(wire.s.ports) == 0


def test_frag_needed_lowers_the_mss_and_resends(wire: Wire) -> None:
    from aionetstack.wire.checksum import checksum
    from aionetstack.wire.ipv4 import pack_ipv4

    _, ep = passive(wire, wscale=None)
    ep.write(b"m" * (2 * MSS))
    segs = wire.recv()
    assert [len(s.payload) for s in segs] == [MSS, MSS]
    quoted = wire.raw[0][:28]
    qip = bytearray(20)
    pack_ipv4(qip, 0, src=wire.local, dst=wire.peer, protocol=6, payload_len=len(wire.raw[0]))
    icmp = bytearray(8) + qip + quoted[:8]
    icmp[0], icmp[1] = 3, 4
    icmp[6:8] = (1000).to_bytes(2, "big")
    icmp[2:4] = checksum(icmp).to_bytes(2, "big")
    buf = bytearray(20) + icmp
    pack_ipv4(buf, 0, src=wire.peer, dst=wire.local, protocol=1, payload_len=len(icmp))
    wire.end.send(buf)
    resent = wire.recv()
    assert ep.snd.mss == 1000 - 40
    assert resent and resent[0].seq == ISS + 1 and len(resent[0].payload) == 960
    assert all(len(s.payload) <= 960 for s in resent)


def test_keepalive_probes_then_timeout(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.keepidle, ep.keepintvl, ep.keepcnt = 10.0, 2.0, 3
    ep.keepalive = True
    t0 = wire.net.now
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=20)
    p = only(wire.recv())
    assert p.flags == ACK and p.seq == ISS and not p.payload
    assert wire.net.now - t0 == pytest.approx(10.0)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)  # answered: idle again
    assert wire.recv() == []
    wire.advance(9.9)
    assert wire.recv() == []
    assert wire.net.run(until=lambda: ep.state is TcpState.CLOSED, timeout=30)
    assert len(wire.recv()) == 3
    assert isinstance(ep.error, TimedOut)


def test_keepalive_is_off_by_default(wire: Wire) -> None:
    _, ep = passive(wire)
    assert not ep.keepalive and ep.keepidle >= 7200
    wire.advance(10_000)
    assert wire.recv() == [] and ep.state is TcpState.ESTABLISHED


def test_challenge_acks_are_rate_limited(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.tcp.challenge_ack_limit = 3
    for i in range(5):
        wire.send(seq=PEER_ISS + 10 + i, flags=RST)
    assert len(wire.recv()) == 3
    wire.advance(1.0)
    wire.send(seq=PEER_ISS + 50, flags=RST)
    assert len(wire.recv()) == 1
    assert ep.state is TcpState.ESTABLISHED


def test_close_in_syn_sent_and_listen_sends_nothing(wire: Wire) -> None:
    ep = _connect(wire)
    only(wire.recv())
    ep.close()
    assert ep.state is TcpState.CLOSED and wire.recv() == []
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    lst.close()
    assert wire.recv() == [] and len(wire.s.ports) == 0 and len(wire.s.timers) == 0


def test_close_of_listener_resets_pending_children(wire: Wire) -> None:
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.tcp.isn_override = ISS
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    lst.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 1


def test_syn_received_times_out(wire: Wire) -> None:
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN)
    assert wire.net.run(until=lambda: not wire.tcp.connections, timeout=200)
    synacks = wire.recv()
    assert len(synacks) == 1 + 5 and all(s.flags == SYN | ACK for s in synacks)
    assert lst.listen_queue is not None and not lst.listen_queue.syn_queue
    lst.close()


def test_rst_in_syn_received_drops_the_half_open_connection(wire: Wire) -> None:
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, flags=RST)
    assert wire.tcp.connections == {} and lst.state is TcpState.LISTEN
    wire.send(seq=PEER_ISS + 7, flags=SYN)  # the listener still works
    assert only(wire.recv()).flags == SYN | ACK
    lst.close()


def test_data_without_ack_flag_is_dropped(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, flags=PSH, payload=b"noack")
    assert wire.recv() == [] and ep.unread() == 0


def test_out_of_window_data_in_close_wait_is_acked_and_dropped(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN)
    only(wire.recv())
    assert ep.state is TcpState.CLOSE_WAIT
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN)  # retransmitted FIN
    assert only(wire.recv()).ack == PEER_ISS + 2
    wire.send(seq=PEER_ISS + 2, ack=ISS + 1, flags=ACK, payload=b"after fin")
    assert ep.read() == b""


def test_old_duplicate_ack_is_ignored(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.write(b"1" * 100)
    wire.recv()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK)
    ep.write(b"2" * 100)
    wire.recv()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 50, flags=ACK)  # older than SND.UNA
    assert wire.recv() == [] and ep.snd.snd_una == ISS + 101


def test_peer_window_shrink_is_tolerated(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None, window=10 * MSS)
    ep.write(b"s" * (8 * MSS))
    assert len(wire.recv()) == 8
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK, window=MSS)  # right edge moves left
    ep.write(b"t" * MSS)
    assert wire.recv() == []  # nothing beyond the peer's (shrunk) window
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + 8 * MSS, flags=ACK, window=10 * MSS)
    assert [len(s.payload) for s in wire.recv()] == [MSS]


def test_huge_scaled_window(wire: Wire) -> None:
    _, ep = passive(wire, wscale=14, window=0xFFFF)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0xFFFF)
    assert ep.snd.snd_wnd == 0xFFFF << 14  # ~1 GiB


def test_sack_recovery_repairs_every_hole_in_one_round_trip(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None)
    assert ep.snd.sack_ok
    ep.write(b"S" * (10 * MSS))
    assert len(wire.recv()) == 10
    una = ISS + 1

    def seg(i: int) -> int:
        return una + i * MSS

    # segments 0 and 4 are lost; the peer SACKs 1-3, then 5-7
    wire.send(seq=PEER_ISS + 1, ack=una, flags=ACK,
              options=TcpOptions(sack_blocks=((seg(1), seg(4)),)))
    # more than two segments SACKed above SND.UNA: loss recovery starts at once (RFC 6675)
    out = wire.recv()
    assert [s.seq for s in out][:1] == [seg(0)]
    assert ep.snd.in_recovery
    wire.send(seq=PEER_ISS + 1, ack=una, flags=ACK,
              options=TcpOptions(sack_blocks=((seg(5), seg(8)), (seg(1), seg(4)))))
    out += wire.recv()
    assert seg(4) in [s.seq for s in out]  # the second hole is repaired without a timeout
    assert ep.snd.retransmits == 2
    wire.send(seq=PEER_ISS + 1, ack=seg(10), flags=ACK)
    assert not ep.snd.in_recovery and ep.snd.sb.blocks == []


def test_dsack_and_bogus_sack_blocks_are_ignored(wire: Wire) -> None:
    _, ep = passive(wire, wscale=None)
    ep.write(b"D" * (3 * MSS))
    wire.recv()
    una = ISS + 1
    wire.send(seq=PEER_ISS + 1, ack=una + MSS, flags=ACK,
              options=TcpOptions(sack_blocks=((una, una + MSS),  # D-SACK: below the ACK
                                             (una + 10 * MSS, una + 11 * MSS))))  # never sent
    assert ep.snd.sb.blocks == [] and ep.state is TcpState.ESTABLISHED


def test_paws_drops_old_timestamps(wire: Wire) -> None:
    _, ep = passive(wire, ts=True)
    base = PEER_ISS + 1
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"new",
              options=TcpOptions(timestamp=(1000, 0)))
    wire.advance(1)
    wire.recv()
    wire.send(seq=base + 3, ack=ISS + 1, flags=ACK, payload=b"old",
              options=TcpOptions(timestamp=(900, 0)))  # TSval went backwards
    a = only(wire.recv())
    assert a.ack == base + 3 and a.options.timestamp is not None
    assert a.options.timestamp[1] == 1000
    assert ep.read() == b"new"
    assert wire.s.stats()["tcp"]["dropped.paws"] == 1


def test_timestamps_on_every_segment_once_agreed(wire: Wire) -> None:
    _, ep = passive(wire, ts=True)
    ep.write(b"abc")
    d = only(wire.recv())
    assert d.options.timestamp is not None and d.options.timestamp[1] == 778
    ep.shutdown_write()
    assert only(wire.recv()).options.timestamp is not None


def test_default_mss_without_option(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    ep = lst.accept()
    assert ep.snd.mss == 536  # RFC 9293 §3.7.1 (MUST-15)
    ep.write(b"z" * 1000)
    # Minshall's Nagle: the short tail goes, since no earlier short segment is unacknowledged
    assert [len(s.payload) for s in wire.recv()] == [536, 464]
    ep.write(b"y" * 10)
    assert wire.recv() == []  # ... but the next short one waits for the 464 to be acked
    wire.send(seq=PEER_ISS + 1, ack=ISS + 537, flags=ACK)
    assert wire.recv() == []
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1001, flags=ACK)
    assert [len(s.payload) for s in wire.recv()] == [10]


def test_urgent_data_stays_in_the_stream(wire: Wire) -> None:
    from aionetstack.wire.tcp import URG

    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | URG | PSH, payload=b"urgent!")
    assert ep.read() == b"urgent!"


def test_unknown_options_in_syn_are_skipped(wire: Wire) -> None:
    from aionetstack.wire.ipv4 import pack_ipv4
    from aionetstack.wire.tcp import pack_tcp

    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    opts = bytes([2, 4, 0x05, 0xB4, 0xFE, 6, 1, 2, 3, 4, 1, 0])  # MSS, kind 254 len 6, NOP, EOL
    seg = bytearray(20 + len(opts))
    pack_tcp(seg, 0, src=wire.peer, dst=wire.local, sport=4000, dport=80, seq=PEER_ISS,
             ack=0, flags=SYN, window=1000, checksum=False)
    seg[12] = ((20 + len(opts)) // 4) << 4
    seg[20:] = opts
    buf = bytearray(20) + seg
    pack_ipv4(buf, 0, src=wire.peer, dst=wire.local, protocol=6, payload_len=len(seg))
    wire.end.send(buf)
    s = only(wire.recv())
    assert s.flags == SYN | ACK and s.ack == PEER_ISS + 1
    lst.close()


def test_syn_cookies_when_the_syn_queue_overflows(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen(1)
    wire.send(sport=4000, seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS))
    assert only(wire.recv()).seq == ISS  # a normal half-open connection
    wire.send(sport=4001, seq=7777, flags=SYN,
              options=TcpOptions(mss=1400, wscale=7, sack_permitted=True, timestamp=(5, 0)))
    c = only(wire.recv())
    assert c.flags == SYN | ACK and c.ack == 7778 and c.seq != ISS
    assert c.options.mss == 1460 and c.options.wscale is None and c.options.timestamp is None
    assert len(wire.tcp.connections) == 1  # no state kept for the cookie
    # a forged ACK is reset; the right one creates the connection
    wire.send(sport=4001, seq=7778, ack=(c.seq + 2) & 0xFFFFFFFF, flags=ACK)
    assert only(wire.recv()).flags == RST
    wire.send(sport=4001, seq=7778, ack=(c.seq + 1) & 0xFFFFFFFF, flags=ACK | PSH,
              payload=b"cookie data")
    ep = lst.accept()
    assert ep.state is TcpState.ESTABLISHED and ep.remote is not None and ep.remote[1] == 4001
    assert ep.snd.mss == 1360 and ep.read() == b"cookie data"
    ep.write(b"ok")
    assert [bytes(s.payload) for s in wire.recv() if s.payload] == [b"ok"]
    # an old cookie (more than two 64 s periods later) is refused
    wire.send(sport=4002, seq=9000, flags=SYN)
    old = only(wire.recv())
    wire.advance(200)
    wire.recv()
    wire.send(sport=4002, seq=9001, ack=(old.seq + 1) & 0xFFFFFFFF, flags=ACK)
    assert only(wire.recv()).flags == RST
    lst.close()


def test_plain_ack_to_listener_is_reset_without_cookies_in_use(wire: Wire) -> None:
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=1, ack=12345, flags=ACK)
    r = only(wire.recv())
    assert r.flags == RST and r.seq == 12345
    assert wire.s.stats()["tcp"].get("syncookies-accepted", 0) == 0
    lst.close()


def test_orphaned_fin_wait_2_times_out(wire: Wire) -> None:
    lst, ep = passive(wire)
    lst.close()
    ep.close()
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    assert ep.state is TcpState.FIN_WAIT_2
    wire.advance(59)
    assert ep.state is TcpState.FIN_WAIT_2
    wire.advance(2)
    assert ep.state is TcpState.CLOSED
    assert wire.tcp.connections == {} and len(wire.tcp.endpoints) == 0
    assert len(wire.s.timers) == 0


def test_half_closed_endpoint_keeps_receiving_in_fin_wait_2(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.shutdown_write()
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    assert ep.state is TcpState.FIN_WAIT_2
    wire.advance(120)  # not orphaned: no FIN-WAIT-2 timeout
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | PSH, payload=b"still here")
    assert ep.read() == b"still here" and ep.state is TcpState.FIN_WAIT_2


def test_data_on_syn_is_delivered_after_the_handshake(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    wire.send(seq=PEER_ISS, flags=SYN, payload=b"early bird")
    s = only(wire.recv())
    assert s.flags == SYN | ACK and s.ack == PEER_ISS + 11
    wire.send(seq=PEER_ISS + 11, ack=ISS + 1, flags=ACK)
    ep = lst.accept()
    assert ep.read() == b"early bird"


def test_read_into(wire: Wire) -> None:
    _, ep = passive(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"0123456789")
    buf = bytearray(4)
    assert ep.read_into(buf) == 4 and buf == b"0123"
    assert ep.read_into(memoryview(buf)[:0]) == 0
    big = bytearray(100)
    assert ep.read_into(big) == 6 and big[:6] == b"456789"
    with pytest.raises(WouldBlock):
        ep.read_into(big)
    wire.send(seq=PEER_ISS + 11, ack=ISS + 1, flags=ACK | FIN)
    assert ep.read_into(big) == 0


def test_full_segments_never_exceed_the_mtu_with_sack_blocks(wire: Wire) -> None:
    _, ep = passive(wire, ts=True)
    wire.send(seq=PEER_ISS + 500, ack=ISS + 1, flags=ACK, payload=b"hole before me",
              options=TcpOptions(timestamp=(900, 0)))
    assert only(wire.recv()).options.sack_blocks
    ep.write(b"F" * 5000)
    segs = wire.recv()
    assert segs and all(len(raw) <= 1480 for raw in wire.raw)
    assert max(len(s.payload) for s in segs) == 1448


def test_pure_ack_after_timeout_uses_the_highest_sequence_sent(wire: Wire) -> None:
    """Regression: after go-back-N, an ACK with SEQ=SND.NXT could sit behind the peer's
    RCV.NXT and be rejected, deadlocking two senders that both timed out.  (Without SACK: a
    SACK connection sends a tail loss probe first and does not pull SND.NXT back.)"""
    _, ep = passive(wire, wscale=None, sack=False)
    ep.write(b"g" * (3 * MSS))
    assert len(wire.recv()) == 3
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)  # RTO: resend the first
    assert only(wire.recv()).seq == ISS + 1
    assert ep.snd.snd_nxt == ISS + 1 + MSS
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"peer data")
    wire.advance(0.05)
    a = only(wire.recv())
    assert a.flags == ACK and not a.payload
    assert a.seq == ISS + 1 + 3 * MSS and a.ack == PEER_ISS + 10


def test_simultaneous_open_packet_level(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    sport = syn.sport
    wire.send(sport=80, dport=sport, seq=PEER_ISS, flags=SYN,
              options=TcpOptions(mss=MSS, wscale=2, sack_permitted=True))
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.seq == ISS and sa.ack == PEER_ISS + 1
    assert sa.options.wscale == 3 and sa.options.timestamp is None  # the peer sent no TS
    assert ep.state is TcpState.SYN_RECEIVED
    # the peer's SYN-ACK crosses ours: its SYN is old news, its ACK completes the handshake
    wire.send(sport=80, dport=sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK)
    assert ep.state is TcpState.ESTABLISHED
    ep.connect_result()
    wire.send(sport=80, dport=sport, seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH,
              payload=b"hi")
    assert ep.read() == b"hi"


def test_rst_in_simultaneous_syn_received_refuses(wire: Wire) -> None:
    ep = _connect(wire)
    syn = only(wire.recv())
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS + 1, flags=RST)
    assert ep.state is TcpState.CLOSED
    with pytest.raises(ConnectionRefused):
        ep.connect_result()


def test_rst_in_time_wait_ends_it(wire: Wire) -> None:
    _, ep = passive(wire)
    ep.shutdown_write()
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    only(wire.recv())
    assert ep.state is TcpState.TIME_WAIT
    wire.send(seq=PEER_ISS + 2, flags=RST)
    assert ep.state is TcpState.CLOSED and wire.tcp.connections == {}


def test_callback_shutting_down_mid_segment_is_safe(wire: Wire) -> None:
    """A reader that half-closes from inside the EVENT_IN notification for a segment that
    also carries FIN: the FIN must then move FIN-WAIT-1 to CLOSING, not trip the state table."""
    from aionetstack.stack.waiter import EVENT_IN

    _, ep = passive(wire)

    def on_in(events: int) -> None:
        if ep.state is TcpState.ESTABLISHED:
            ep.read()
            ep.shutdown_write()

    ep.waiter.register(on_in, EVENT_IN)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | FIN | PSH, payload=b"last words")
    assert ep.state is TcpState.CLOSING
    segs = wire.recv()
    assert segs[-1].ack == PEER_ISS + 12 and any(s.flags & FIN for s in segs)
