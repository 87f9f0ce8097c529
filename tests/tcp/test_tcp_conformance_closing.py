"""Conformance, closing: close in every state, abortive closes, FIN-WAIT-2 and TIME-WAIT."""

from __future__ import annotations

import pytest
from conformance_helpers import (
    ISS,
    MSS,
    PEER_ISS,
    TIME_WAITS,
    S,
    connect,
    establish,
    listener,
    only,
    to_state,
)
from tcp_helpers import Wire

from aionetstack.errors import ConnectionAborted, ConnectionReset
from aionetstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions


def _gone(wire: Wire) -> None:
    assert wire.tcp.connections == {} and len(wire.tcp.endpoints) <= 1  # the listener
    assert len(wire.tcp.time_wait) == 0
    assert all(ep.state is S.LISTEN for ep in wire.tcp.endpoints)


# -- close in every state (RFC 9293 §3.10.4) ------------------------------------------------------


def test_close_in_established_sends_fin_and_finishes(wire: Wire) -> None:
    at = to_state(wire, "ESTABLISHED")
    at.ep.close()
    f = only(wire.recv())
    assert f.flags == ACK | FIN and f.seq == ISS + 1 and f.ack == PEER_ISS + 1
    assert at.ep.state is S.FIN_WAIT_1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 2 and a.ack == PEER_ISS + 2
    assert at.ep.state is S.TIME_WAIT
    wire.advance(2 * wire.tcp.msl + 0.1)
    assert at.ep.state is S.CLOSED
    _gone(wire)


def test_close_in_close_wait_sends_fin_then_last_ack(wire: Wire) -> None:
    at = to_state(wire, "CLOSE_WAIT")
    at.ep.close()
    f = only(wire.recv())
    assert f.flags == ACK | FIN and f.seq == ISS + 1 and f.ack == PEER_ISS + 2
    assert at.ep.state is S.LAST_ACK
    wire.send(seq=PEER_ISS + 2, ack=ISS + 2, flags=ACK)
    assert at.ep.state is S.CLOSED and wire.recv() == []
    _gone(wire)


def test_close_in_fin_wait_1_sends_nothing_more_and_orphan_times_out(wire: Wire) -> None:
    at = to_state(wire, "FIN_WAIT_1")
    at.ep.close()
    assert wire.recv() == [] and at.ep.state is S.FIN_WAIT_1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    assert at.ep.state is S.FIN_WAIT_2
    wire.advance(wire.tcp.fin_timeout - 1)
    assert at.ep.state is S.FIN_WAIT_2
    wire.advance(2)
    assert at.ep.state is S.CLOSED and wire.recv() == []
    _gone(wire)


def test_close_in_fin_wait_2_starts_the_orphan_timeout(wire: Wire) -> None:
    at = to_state(wire, "FIN_WAIT_2")
    wire.advance(500)  # not orphaned yet: waits for the peer as long as it likes
    assert at.ep.state is S.FIN_WAIT_2
    at.ep.close()
    assert wire.recv() == []
    wire.advance(wire.tcp.fin_timeout + 1)
    assert at.ep.state is S.CLOSED and wire.recv() == []
    _gone(wire)


def test_orphan_in_fin_wait_2_answers_data_with_rst(wire: Wire) -> None:
    at = to_state(wire, "FIN_WAIT_2")
    at.ep.close()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | PSH, payload=b"nobody reads this")
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 2
    assert at.ep.state is S.CLOSED
    _gone(wire)


def test_orphan_in_fin_wait_2_still_takes_the_fin(wire: Wire) -> None:
    at = to_state(wire, "FIN_WAIT_2")
    at.ep.close()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    assert only(wire.recv()).ack == PEER_ISS + 2
    assert at.ep.state is S.TIME_WAIT


@pytest.mark.parametrize("state", ["CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_close_in_late_states_is_a_no_op(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    at.ep.close()
    at.ep.close()  # idempotent
    assert wire.recv() == [] and at.ep.state is S[state]
    if state != "TIME_WAIT":
        wire.send(seq=at.rcv_nxt, ack=at.snd_max, flags=ACK)  # the ACK of our FIN
    wire.advance(2 * wire.tcp.msl + 0.1)
    assert at.ep.state is S.CLOSED
    _gone(wire)


def test_close_in_syn_received_sends_fin_after_the_handshake(wire: Wire) -> None:
    ep, syn = connect(wire)
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS))
    assert only(wire.recv()).flags == SYN | ACK
    assert ep.state is S.SYN_RECEIVED
    ep.close()
    assert wire.recv() == []  # RFC 9293: the FIN waits until ESTABLISHED
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    f = only(wire.recv())
    assert f.flags == ACK | FIN and f.seq == ISS + 1 and f.ack == PEER_ISS + 1
    assert ep.state is S.FIN_WAIT_1


def test_close_of_listener_resets_established_but_unaccepted_children(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.listen_queue is not None and len(lst.listen_queue.accept_queue) == 1
    lst.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 1
    assert wire.tcp.connections == {} and len(wire.tcp.endpoints) == 0
    assert len(wire.s.ports) == 0


# -- abortive closes ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["ESTABLISHED", "CLOSE_WAIT"])
def test_close_with_unread_data_sends_rst(wire: Wire, state: str) -> None:
    _, ep = establish(wire)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"unread")
    rcv = PEER_ISS + 7
    if state == "CLOSE_WAIT":
        wire.send(seq=rcv, ack=ISS + 1, flags=ACK | FIN)
        rcv += 1
    wire.recv()
    assert ep.state is S[state]
    ep.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 1 and r.window == 0
    assert ep.state is S.CLOSED and isinstance(ep.error, ConnectionAborted)
    _gone(wire)


@pytest.mark.parametrize("state", ["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2"])
def test_linger_zero_close_sends_rst(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    at.ep.linger = 0
    at.ep.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == at.snd_max and r.ack == 0 and r.window == 0
    assert at.ep.state is S.CLOSED
    _gone(wire)


def test_linger_zero_is_inherited_by_accepted_children(wire: Wire) -> None:
    lst = listener(wire)
    lst.linger = 0
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    ep = lst.accept()
    ep.write(b"pending")
    only(wire.recv())
    ep.close()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 8


def test_abort_in_established_sends_rst_with_the_highest_sequence(wire: Wire) -> None:
    _, ep = establish(wire)
    ep.write(b"x" * 100)
    only(wire.recv())
    ep.abort()
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 101
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK)  # the peer's late ACK: reset again
    assert only(wire.recv()).flags == RST


def test_peer_rst_reported_to_reader_and_writer(wire: Wire) -> None:
    from aionetstack.errors import WouldBlock

    _, ep = establish(wire)
    with pytest.raises(WouldBlock):
        ep.read()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=RST | ACK)
    with pytest.raises(ConnectionReset):
        ep.read()
    with pytest.raises(ConnectionReset):
        ep.write(b"x")


# -- TIME-WAIT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tw", TIME_WAITS)
def test_time_wait_acks_a_retransmitted_fin_and_restarts_2msl(wire: Wire, tw: str) -> None:
    at = to_state(wire, tw)
    wire.advance(wire.tcp.msl)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 2 and a.ack == PEER_ISS + 2
    wire.advance(2 * wire.tcp.msl - 1)
    assert at.ep.state is S.TIME_WAIT
    wire.advance(2)
    assert at.ep.state is S.CLOSED


@pytest.mark.parametrize("tw", TIME_WAITS)
def test_time_wait_reuse_by_syn_with_higher_sequence(wire: Wire, tw: str) -> None:
    at = to_state(wire, tw)
    (lst,) = wire.tcp.listeners.values()
    wire.tcp.isn_override = ISS + 500_000
    wire.send(seq=PEER_ISS + 3, flags=SYN, options=TcpOptions(mss=MSS))
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.ack == PEER_ISS + 4 and sa.seq == ISS + 500_000
    assert at.ep.state is S.CLOSED
    assert lst.listen_queue is not None and len(lst.listen_queue.syn_queue) == 1


@pytest.mark.parametrize("tw", TIME_WAITS)
def test_time_wait_reuse_by_syn_with_newer_timestamp(wire: Wire, tw: str) -> None:
    """RFC 6191: with timestamps, a SYN whose sequence number went backwards still reopens the
    4-tuple if its TSval is newer; one with an older TSval is PAWS-rejected."""
    at = to_state(wire, tw, ts=True)
    recent = at.ep.ts_recent
    wire.send(seq=PEER_ISS - 1000, flags=SYN,
              options=TcpOptions(mss=MSS, timestamp=(recent - 5, 0)))  # old TSval: ACK only
    a = only(wire.recv())
    assert a.flags == ACK and a.ack == PEER_ISS + 2 and at.ep.state is S.TIME_WAIT
    wire.send(seq=PEER_ISS + 10_000, flags=SYN,
              options=TcpOptions(mss=MSS, timestamp=(recent - 5, 0)))  # higher seq, old TS
    assert only(wire.recv()).flags == ACK and at.ep.state is S.TIME_WAIT
    wire.send(seq=PEER_ISS - 1000, flags=SYN,
              options=TcpOptions(mss=MSS, timestamp=(recent + 1000, 0)))
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.ack == PEER_ISS - 999
    assert sa.options.timestamp is not None and sa.options.timestamp[1] == recent + 1000
    assert at.ep.state is S.CLOSED


@pytest.mark.parametrize("tw", TIME_WAITS)
def test_time_wait_without_listener_resets_the_new_syn(wire: Wire, tw: str) -> None:
    at = to_state(wire, tw)
    wire.tcp.listeners.clear()
    wire.send(seq=PEER_ISS + 100, flags=SYN)
    r = only(wire.recv())
    assert r.flags == RST | ACK and r.ack == PEER_ISS + 101
    assert at.ep.state is S.CLOSED


# -- FIN handling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2"])
def test_fin_behind_a_gap_is_held_until_the_gap_fills(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    ep = at.ep
    wire.send(seq=PEER_ISS + 4, ack=ISS + 1, flags=ACK | FIN, payload=b"def")
    a = only(wire.recv())
    assert a.ack == PEER_ISS + 1 and ep.state is S[state]
    (block,) = a.options.sack_blocks
    assert block[0] == PEER_ISS + 4 and block[1] in (PEER_ISS + 7, PEER_ISS + 8)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, payload=b"abc")
    a = only(wire.recv())
    assert a.ack == PEER_ISS + 8 and a.options.sack_blocks == ()
    assert ep.read() == b"abcdef" and ep.read() == b""
    assert ep.state is {"ESTABLISHED": S.CLOSE_WAIT, "FIN_WAIT_1": S.CLOSING,
                        "FIN_WAIT_2": S.TIME_WAIT}[state]


def test_fin_retransmission_backs_off_and_times_out(wire: Wire) -> None:
    from aionetstack.errors import TimedOut

    at = to_state(wire, "FIN_WAIT_1")
    wire.tcp.data_retries = 3
    t0 = wire.net.now
    gaps = []
    while at.ep.state is not S.CLOSED:
        wire.net.run(until=lambda: bool(wire.end.pending) or at.ep.state is S.CLOSED,
                     timeout=100)
        for s in wire.recv():
            assert s.flags == ACK | FIN and s.seq == ISS + 1
            gaps.append(wire.net.now - t0)
    # a tail loss probe takes the first timeout's place (RFC 8985 §7.2-7.3: the PTO is capped at
    # the RTO and re-arms it), then the timeouts back off, doubling each time
    assert len(gaps) == 4
    rto = gaps[0]
    assert gaps[1] - gaps[0] == pytest.approx(rto, rel=0.01)
    assert gaps[2] - gaps[1] == pytest.approx(2 * rto, rel=0.01)
    assert gaps[3] - gaps[2] == pytest.approx(4 * rto, rel=0.01)
    assert wire.s.stats()["tcp"]["loss-probes"] == 1
    assert isinstance(at.ep.error, TimedOut)


def test_peer_fin_lost_then_retransmitted(wire: Wire) -> None:
    """The peer's FIN is lost: its data arrives, its retransmitted FIN still closes cleanly."""
    at = to_state(wire, "FIN_WAIT_2")
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | PSH, payload=b"tail")
    wire.advance(0.05)
    assert only(wire.recv()).ack == PEER_ISS + 5
    wire.send(seq=PEER_ISS + 5, ack=ISS + 2, flags=ACK | FIN)
    assert only(wire.recv()).ack == PEER_ISS + 6
    assert at.ep.state is S.TIME_WAIT
    assert at.ep.read() == b"tail" and at.ep.read() == b""


def test_half_close_peer_fin_then_keep_sending(wire: Wire) -> None:
    at = to_state(wire, "CLOSE_WAIT")
    ep = at.ep
    assert ep.read() == b""
    ep.nodelay = True
    ep.write(b"more")
    s = only(wire.recv())
    assert s.flags == ACK | PSH and s.seq == ISS + 1 and s.ack == PEER_ISS + 2
    wire.send(seq=PEER_ISS + 2, ack=ISS + 5, flags=ACK)
    assert wire.recv() == [] and ep.state is S.CLOSE_WAIT


@pytest.mark.parametrize("passive_close", [False, True])
def test_acks_after_shutdown_write_notify_event_out(wire: Wire, passive_close: bool) -> None:
    """Regression: once the FIN was queued (FIN-WAIT-1 / LAST-ACK) ACKs freeing send-buffer
    space notified nobody, so a caller could not learn that its bytes drained."""
    from aionetstack.stack.waiter import EVENT_OUT

    _, ep = establish(wire, wscale=None)
    rcv = PEER_ISS + 1
    if passive_close:
        wire.send(seq=rcv, ack=ISS + 1, flags=ACK | FIN)
        rcv += 1
        wire.recv()
    events: list[int] = []
    ep.waiter.register(events.append, EVENT_OUT)
    ep.write(b"x" * (3 * MSS))
    ep.shutdown_write()
    segs = wire.recv()
    assert segs[-1].flags & FIN and ep.send_buffered() == 3 * MSS
    assert ep.state is (S.LAST_ACK if passive_close else S.FIN_WAIT_1)
    wire.send(seq=rcv, ack=ISS + 1 + MSS, flags=ACK)
    assert events and events[-1] & EVENT_OUT
    n = len(events)
    wire.send(seq=rcv, ack=ISS + 2 + 3 * MSS, flags=ACK)  # everything, FIN included
    assert len(events) > n and ep.send_buffered() == 0
