"""Conformance, retransmission: RFC 6298 RTO (collapse, backoff, Karn), fast retransmit and
NewReno, the retry limit, zero-window probing and the user timeout, keep-alive."""

from __future__ import annotations

import itertools

import pytest
from conformance_helpers import ISS, MSS, PEER_ISS, S, establish, only, to_state
from tcp_helpers import Wire

from aionetstack.errors import TimedOut
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.wire.tcp import ACK, PSH, RST, TcpOptions


def _reno(wire: Wire, **kw: object) -> TcpEndpoint:
    wire.tcp.congestion_control = "reno"
    _, ep = establish(wire, wscale=None, sack=False, **kw)  # type: ignore[arg-type]
    ep.nodelay = True
    return ep


def _wait(wire: Wire, ep: TcpEndpoint, limit: float = 300) -> float:
    """Run to the next emitted segment (or the end of ``ep``); the time it took."""
    t0 = wire.net.now
    wire.net.run(until=lambda: bool(wire.end.pending) or ep.state is S.CLOSED, timeout=limit)
    return wire.net.now - t0


# -- RTO (RFC 6298, RFC 5681 §3.1) ---------------------------------------------------------------


def test_rto_collapses_cwnd_and_goes_back_to_snd_una(wire: Wire) -> None:
    ep = _reno(wire)
    cwnd0 = ep.snd.cc.cwnd
    n = cwnd0 // MSS
    ep.write(b"r" * (n * MSS + 500))
    assert len(wire.recv()) == n
    dt = _wait(wire, ep)
    r = only(wire.recv())  # one segment: the first unacknowledged one
    assert r.seq == ISS + 1 and len(r.payload) == MSS and dt == pytest.approx(ep.rtt.rto)
    assert ep.snd.cc.cwnd == MSS and ep.snd.cc.ssthresh == max(n * MSS // 2, 2 * MSS)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1 + MSS, flags=ACK)
    segs = wire.recv()  # slow start again from one segment: two more, from SND.UNA on
    assert [s.seq for s in segs] == [ISS + 1 + MSS, ISS + 1 + 2 * MSS]
    assert ep.snd.cc.cwnd == 2 * MSS


def test_rto_backoff_doubles_up_to_the_maximum_and_resets_on_progress(wire: Wire) -> None:
    ep = _reno(wire)
    wire.tcp.max_rto = ep.rtt.max_rto = 3.0
    ep.write(b"b" * 100)
    only(wire.recv())
    rto = ep.rtt.rto
    gaps = []
    for _ in range(6):
        gaps.append(round(_wait(wire, ep), 6))
        assert only(wire.recv()).seq == ISS + 1
    assert gaps == [round(min(rto * 2 ** i, 3.0), 6) for i in range(6)]
    # Karn: the ACK of a retransmitted segment gives no RTT sample, the backoff stays...
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK)
    assert ep.rtt.backoff == 6 and ep.rtt.timeout() == 3.0
    # ... until a segment sent once is acknowledged
    ep.write(b"c" * 100)
    only(wire.recv())
    wire.advance(0.05)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 201, flags=ACK)
    assert ep.rtt.backoff == 0 and ep.rtt.timeout() < 1.0


def test_karn_no_rtt_sample_from_a_retransmission_without_timestamps(wire: Wire) -> None:
    ep = _reno(wire)
    srtt = ep.rtt.srtt
    ep.write(b"k" * 100)
    only(wire.recv())
    _wait(wire, ep)
    only(wire.recv())
    wire.advance(0.7)  # a late ACK: of the original or of the retransmission?
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK)
    assert ep.rtt.srtt == srtt


def test_karn_with_timestamps_only_the_retransmissions_echo_is_sampled(wire: Wire) -> None:
    wire.tcp.congestion_control = "reno"
    _, ep = establish(wire, ts=True)
    srtt = ep.rtt.srtt
    ep.write(b"k" * 100)
    first = only(wire.recv())
    _wait(wire, ep)
    rx = only(wire.recv())
    assert first.options.timestamp is not None and rx.options.timestamp is not None
    wire.advance(0.05)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 51, flags=ACK,  # echoes the original: ambiguous
              options=TcpOptions(timestamp=(800, first.options.timestamp[0])))
    assert ep.rtt.srtt == srtt
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK,  # echoes the retransmission
              options=TcpOptions(timestamp=(801, rx.options.timestamp[0])))
    assert ep.rtt.srtt != srtt


def test_retransmission_limit_reports_timed_out(wire: Wire) -> None:
    ep = _reno(wire)
    wire.tcp.data_retries = 4
    ep.write(b"l" * 100)
    only(wire.recv())
    resent = 0
    while ep.state is not S.CLOSED:
        _wait(wire, ep)
        segs = wire.recv()
        assert all(s.seq == ISS + 1 and s.flags & ACK and not s.flags & RST for s in segs)
        resent += len(segs)
    assert resent == 4
    assert isinstance(ep.error, TimedOut)
    with pytest.raises(TimedOut):
        ep.write(b"more")
    assert wire.tcp.connections == {}


# -- fast retransmit / NewReno (RFC 5681 §3.2, RFC 6582) -----------------------------------------


def test_only_pure_unchanged_acks_count_as_duplicates(wire: Wire) -> None:
    ep = _reno(wire)
    ep.write(b"d" * (6 * MSS))
    assert len(wire.recv()) == 6
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=60000)  # window update
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"data",
              window=60000)  # carries data
    wire.send(seq=PEER_ISS + 5, ack=ISS + 1, flags=ACK, window=60000)
    wire.send(seq=PEER_ISS + 5, ack=ISS + 1, flags=ACK, window=60000)
    assert ep.snd.dupacks == 2 and not ep.snd.in_recovery
    wire.send(seq=PEER_ISS + 5, ack=ISS + 1, flags=ACK, window=60000)
    assert ep.snd.in_recovery
    assert any(s.seq == ISS + 1 and len(s.payload) == MSS for s in wire.recv())


def test_newreno_partial_ack_retransmits_the_next_hole_at_once(wire: Wire) -> None:
    ep = _reno(wire)
    ep.write(b"n" * (8 * MSS))
    assert len(wire.recv()) == 8
    una = ISS + 1
    for _ in range(3):  # segments 0 and 2 are lost
        wire.send(seq=PEER_ISS + 1, ack=una, flags=ACK)
    segs = wire.recv()
    assert segs[0].seq == una and ep.snd.in_recovery
    recover = ep.snd.recover
    assert recover == una + 8 * MSS
    wire.send(seq=PEER_ISS + 1, ack=una + 2 * MSS, flags=ACK)  # partial: below "recover"
    segs = wire.recv()
    assert segs and segs[0].seq == una + 2 * MSS and len(segs[0].payload) == MSS
    assert ep.snd.in_recovery
    wire.send(seq=PEER_ISS + 1, ack=una + 8 * MSS, flags=ACK)  # full ACK: recovery ends
    assert not ep.snd.in_recovery
    assert ep.snd.cc.cwnd <= ep.snd.cc.ssthresh
    assert ep.snd.retransmits == 2  # no timeout was needed


def test_no_second_fast_retransmit_for_the_same_window(wire: Wire) -> None:
    ep = _reno(wire)
    ep.write(b"w" * (6 * MSS))
    wire.recv()
    for _ in range(3):
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    wire.recv()
    ssthresh = ep.snd.cc.ssthresh
    for _ in range(6):  # more duplicates: inflation only, no new reduction
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert ep.snd.cc.ssthresh == ssthresh
    assert sum(1 for s in wire.recv() if s.seq == ISS + 1) == 0


# -- zero window and persist (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17) -----------------------------


def _zero(wire: Wire) -> TcpEndpoint:
    ep = _reno(wire, window=0)
    ep.write(b"p" * 10)
    assert wire.recv() == []
    return ep


def test_zero_window_probes_back_off(wire: Wire) -> None:
    ep = _zero(wire)
    gaps = []
    for _ in range(5):
        gaps.append(_wait(wire, ep))
        p = only(wire.recv())
        assert p.flags == ACK and p.seq == ISS and not p.payload and p.ack == PEER_ISS + 1
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0)  # answered, still zero
        assert wire.recv() == []
    for a, b in itertools.pairwise(gaps):
        assert b == pytest.approx(2 * a, rel=1e-6)
    assert ep.state is S.ESTABLISHED


def test_answered_probes_keep_the_connection_indefinitely(wire: Wire) -> None:
    ep = _zero(wire)
    t0 = wire.net.now
    while wire.net.now - t0 < 3 * 3600:
        _wait(wire, ep, 200)
        only(wire.recv())
        wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0)
    assert ep.state is S.ESTABLISHED and ep.error is None
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=1000)  # the window opens
    s = only(wire.recv())
    assert s.seq == ISS + 1 and bytes(s.payload) == b"p" * 10


def test_unanswered_probes_do_not_kill_the_connection_early(wire: Wire) -> None:
    ep = _zero(wire)
    for _ in range(wire.tcp.data_retries - 1):
        _wait(wire, ep)
        only(wire.recv())
    assert ep.state is S.ESTABLISHED
    assert wire.net.run(until=lambda: ep.state is S.CLOSED, timeout=1000)
    assert isinstance(ep.error, TimedOut)


def test_user_timeout_applies_to_unanswered_probes(wire: Wire) -> None:
    ep = _zero(wire)
    ep.user_timeout = 10.0
    t0 = wire.net.now
    assert wire.net.run(until=lambda: ep.state is S.CLOSED, timeout=200)
    assert isinstance(ep.error, TimedOut)
    assert 10.0 <= wire.net.now - t0 < 20.0


def test_user_timeout_applies_to_a_window_that_stays_closed(wire: Wire) -> None:
    """As Linux does since 5.11: answered probes do not stop TCP_USER_TIMEOUT while the
    window stays zero and the data cannot be sent."""
    ep = _zero(wire)
    ep.user_timeout = 30.0
    t0 = wire.net.now
    while ep.state is not S.CLOSED and wire.net.now - t0 < 300:
        _wait(wire, ep, 100)
        if wire.recv():
            wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=0)
    assert isinstance(ep.error, TimedOut)
    assert 30.0 <= wire.net.now - t0 < 70.0


def test_window_reopened_by_a_probe_answer_resumes_sending(wire: Wire) -> None:
    ep = _zero(wire)
    _wait(wire, ep)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK, window=4)  # opens a little
    s = only(wire.recv())
    assert s.seq == ISS + 1 and bytes(s.payload) == b"pppp"  # nothing in flight: send
    wire.send(seq=PEER_ISS + 1, ack=ISS + 5, flags=ACK, window=100)
    s = only(wire.recv())
    assert s.seq == ISS + 5 and bytes(s.payload) == b"p" * 6
    assert ep.rtt.backoff == 0 or ep.snd.retries == 0


# -- keep-alive (RFC 9293 §3.8.4) ----------------------------------------------------------------


@pytest.mark.parametrize("state", ["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_2"])
def test_keepalive_probe_format_and_timeout(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    ep = at.ep
    ep.keepidle, ep.keepintvl, ep.keepcnt = 60.0, 5.0, 2
    ep.keepalive = True
    assert _wait(wire, ep) == pytest.approx(60.0)
    p = only(wire.recv())
    assert p.flags == ACK and p.seq == at.snd_max - 1 and p.ack == at.rcv_nxt
    assert not p.payload
    wire.send(seq=at.rcv_nxt, ack=at.snd_max, flags=ACK)
    assert wire.recv() == []
    assert _wait(wire, ep) == pytest.approx(60.0)  # answered: idle again
    only(wire.recv())
    assert _wait(wire, ep) == pytest.approx(5.0)
    only(wire.recv())
    wire.net.run(until=lambda: ep.state is S.CLOSED, timeout=20)
    assert isinstance(ep.error, TimedOut)
    assert wire.recv() == []


def test_keepalive_does_not_probe_while_data_is_outstanding(wire: Wire) -> None:
    ep = _reno(wire)
    ep.keepidle, ep.keepintvl, ep.keepcnt = 1.0, 1.0, 1
    ep.keepalive = True
    ep.write(b"x")
    only(wire.recv())
    for _ in range(3):  # only retransmissions: the RTO watches this connection
        _wait(wire, ep)
        assert all(s.seq == ISS + 1 and s.payload == b"x" for s in wire.recv())
