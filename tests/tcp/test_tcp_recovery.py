"""SACK loss recovery on the manual clock: RACK-TLP (RFC 8985), PRR (RFC 6937), D-SACK (RFC 2883)
and undo (RFC 3708); the stack under test sends, the hand-driven peer ACKs."""

from __future__ import annotations

import contextlib

import pytest
from conformance_helpers import ISS, MSS, PEER_ISS, establish, only
from tcp_helpers import Wire, make_pair

from aionetstack.errors import WouldBlock
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.transport.tcp.recovery import WC_DEL_ACK
from aionetstack.wire.tcp import ACK, PSH, TcpOptions

RTT = 0.02


def seg(k: int) -> int:
    return (ISS + 1 + k * MSS) & 0xFFFFFFFF


def ack(wire: Wire, upto: int, *blocks: tuple[int, int]) -> None:
    wire.send(seq=PEER_ISS + 1, ack=upto, flags=ACK,
              options=TcpOptions(sack_blocks=blocks) if blocks else None)


def warmed(wire: Wire) -> TcpEndpoint:
    """An established sender whose RTT estimate is ``RTT`` (the handshake took no time on the
    manual clock, so the estimate is set as a path with that RTT would have left it)."""
    _, ep = establish(wire)
    ep.nodelay = True
    ep.rtt.srtt, ep.rtt.rttvar = RTT, RTT / 4
    ep.rtt.rto = max(RTT + 4 * ep.rtt.rttvar, ep.rtt.min_rto)
    ep.snd.min_rtt = RTT
    return ep


def base(ep: TcpEndpoint) -> int:
    return ep.snd.snd_una


def test_tail_loss_probe_after_two_srtt_resends_the_last_segment(wire: Wire) -> None:
    """RFC 8985 §7: the last two segments of a flight are lost; instead of waiting for the RTO
    (>= 200 ms) the sender probes 2*SRTT after the last ACK with the last segment."""
    ep = warmed(wire)
    b = base(ep)
    ep.write(b"t" * (4 * MSS))
    assert len(wire.recv()) == 4
    wire.advance(RTT)
    ack(wire, b + 2 * MSS)  # segments 2 and 3 are lost: no more ACKs come
    srtt = ep.rtt.srtt
    assert srtt is not None and 2 * srtt < ep.rtt.timeout()
    wire.advance(2 * srtt - 0.001)
    assert wire.recv() == []
    wire.advance(0.002)
    probe = only(wire.recv())
    assert probe.seq == b + 3 * MSS and len(probe.payload) == MSS  # the last segment (§7.3)
    assert wire.s.stats()["tcp"]["loss-probes"] == 1
    # a round trip later the peer SACKs the probe: RACK marks segment 2 lost at once (it was
    # sent long before the probe) and fast recovery repairs it
    wire.advance(RTT)
    ack(wire, b + 2 * MSS, (b + 3 * MSS, b + 4 * MSS))
    assert [s.seq for s in wire.recv()] == [b + 2 * MSS]
    assert ep.snd.in_recovery and wire.s.stats()["tcp"].get("timeouts", 0) == 0


def test_probe_sends_new_data_when_the_window_allows(wire: Wire) -> None:
    """RFC 8985 §7.3: with unsent data that fits the peer's window, the probe is one new
    segment, sent beyond cwnd."""
    ep = warmed(wire)
    b = base(ep)
    ep.snd.cc.cwnd = 2 * MSS
    ep.write(b"n" * (3 * MSS))
    assert [s.seq for s in wire.recv()] == [b, b + MSS]  # cwnd-limited; both get lost
    wire.advance(2 * RTT + 0.001)
    probe = only(wire.recv())
    assert probe.seq == b + 2 * MSS and not ep.snd.tlp_retrans
    assert ep.snd.tlp_end == b + 3 * MSS


def test_a_lone_segment_probe_waits_for_a_delayed_ack(wire: Wire) -> None:
    """RFC 8985 §7.2: with one segment in flight the receiver may delay its ACK, so the probe
    timeout is 2 SRTT + WCDelAckT (here below the RTO)."""
    ep = warmed(wire)
    ep.rtt.rto = 1.0
    b = base(ep)
    ep.write(b"1" * 100)
    assert len(wire.recv()) == 1
    wire.advance(2 * RTT + WC_DEL_ACK - 0.001)
    assert wire.recv() == []
    wire.advance(0.002)
    assert only(wire.recv()).seq == b


def test_rack_marks_a_segment_lost_after_the_reordering_window(wire: Wire) -> None:
    """RFC 8985 §6.2: one SACKed segment above a hole is not yet a loss (it may be reordering);
    the hole is lost once RTT + min_RTT/4 have passed since it was sent."""
    ep = warmed(wire)
    b = base(ep)
    ep.write(b"r" * (4 * MSS))
    assert len(wire.recv()) == 4
    wire.advance(RTT)
    ack(wire, b, (b + 2 * MSS, b + 3 * MSS))  # segment 2 arrived, 0 and 1 not (yet)
    assert wire.recv() == [] and not ep.snd.in_recovery
    reo_wnd = ep.snd.reo_wnd()
    assert reo_wnd == pytest.approx(RTT / 4)
    wire.advance(reo_wnd - 0.001)
    assert wire.recv() == []
    wire.advance(0.002)
    assert [s.seq for s in wire.recv()] == [b]  # fast retransmission (PRR: one segment first)
    assert ep.snd.in_recovery and wire.s.stats()["tcp"].get("timeouts", 0) == 0


def test_three_sacked_segments_mark_the_hole_lost_at_once(wire: Wire) -> None:
    """RFC 8985 §6.2 step 4: with DupThresh segments SACKed and no reordering seen, the
    reordering window is zero."""
    ep = warmed(wire)
    b = base(ep)
    ep.write(b"z" * (5 * MSS))
    assert len(wire.recv()) == 5
    wire.advance(RTT)
    ack(wire, b, (b + MSS, b + 4 * MSS))
    assert [s.seq for s in wire.recv()] == [b]
    assert ep.snd.in_recovery


def test_prr_spreads_the_window_reduction_over_the_acks(wire: Wire) -> None:
    """RFC 6937 §3: while pipe > ssthresh, PRR sends ceil(prr_delivered * ssthresh / RecoverFS)
    - prr_out, so about 0.7 of a segment per segment delivered with CUBIC; never a burst."""
    ep = warmed(wire)
    b = base(ep)
    cc = ep.snd.cc
    cc.cwnd = 20 * MSS
    ep.write(b"p" * (40 * MSS))
    assert len(wire.recv()) == 20
    wire.advance(RTT)
    ack(wire, b, (b + MSS, b + 4 * MSS))  # segment 0 lost, 1-3 SACKed: recovery
    out = [s.seq for s in wire.recv()]
    assert out[0] == b and ep.snd.in_recovery
    ssthresh, fs = cc.ssthresh, 20 * MSS
    assert ssthresh == round(20 * MSS * 0.7)
    sent = len(out)
    for k in range(5, 21):  # segments 4..19 arrive one by one
        ack(wire, b, (b + MSS, b + k * MSS))
        sent += len(wire.recv())
        delivered = (k - 1) * MSS
        pipe = ep.snd.pipe()
        if pipe > ssthresh:
            # prr_out tracks the proportional share (whole segments: at most one over)
            assert sent * MSS - MSS < -(-delivered * ssthresh // fs) <= sent * MSS + MSS
    # all delivered: about ssthresh was sent in recovery and the pipe is at ssthresh
    assert abs(ep.snd.pipe() - ssthresh) <= MSS
    ack(wire, ep.snd.snd_max)
    assert not ep.snd.in_recovery and cc.cwnd >= ssthresh


def test_dsack_of_every_retransmission_undoes_the_reduction(wire: Wire) -> None:
    """RFC 3708 §3 with RFC 2883: the fast retransmission was spurious (segment 0 was only
    reordered); the receiver reports the duplicate in a D-SACK block and cwnd and ssthresh
    return to their values before recovery."""
    ep = warmed(wire)
    b = base(ep)
    cc = ep.snd.cc
    ep.write(b"u" * (6 * MSS))
    assert len(wire.recv()) == 6
    before = (cc.cwnd, cc.ssthresh)
    wire.advance(RTT)
    ack(wire, b, (b + MSS, b + 4 * MSS))
    assert [s.seq for s in wire.recv()] == [b] and ep.snd.in_recovery
    assert cc.ssthresh < before[0]
    ack(wire, b + 6 * MSS)  # the original segment 0 arrives: everything acknowledged
    ack(wire, b + 6 * MSS, (b, b + MSS))  # then the retransmission: a D-SACK
    assert (cc.cwnd, cc.ssthresh) == (max(before[0], cc.cwnd), before[1])
    assert cc.cwnd >= before[0]


def test_a_dsack_for_something_else_does_not_undo(wire: Wire) -> None:
    ep = warmed(wire)
    b = base(ep)
    cc = ep.snd.cc
    ep.write(b"v" * (6 * MSS))
    wire.recv()
    before = cc.cwnd
    wire.advance(RTT)
    ack(wire, b, (b + MSS, b + 4 * MSS))
    wire.recv()
    reduced = cc.ssthresh
    ack(wire, b + 6 * MSS, (b + MSS, b + 2 * MSS))  # a duplicate of segment 1, never resent
    assert cc.ssthresh == reduced and cc.cwnd < before


def test_receiver_reports_a_duplicate_segment_in_a_dsack_block(wire: Wire) -> None:
    """RFC 2883 §4: the first SACK block of the ACK for a duplicate names the duplicate; with
    out-of-order data queued the D-SACK block precedes the SACK blocks, and it is sent once."""
    _, ep = establish(wire)
    p = PEER_ISS + 1
    wire.send(seq=p, ack=ISS + 1, flags=ACK | PSH, payload=b"a" * 100)
    wire.advance(0.1)
    wire.recv()
    wire.send(seq=p, ack=ISS + 1, flags=ACK | PSH, payload=b"a" * 100)  # again
    a = only(wire.recv())
    assert a.ack == p + 100 and a.options.sack_blocks == ((p, p + 100),)
    wire.send(seq=p + 200, ack=ISS + 1, flags=ACK | PSH, payload=b"c" * 100)  # a hole
    assert only(wire.recv()).options.sack_blocks == ((p + 200, p + 300),)
    wire.send(seq=p + 50, ack=ISS + 1, flags=ACK | PSH, payload=b"a" * 50)  # old again
    a = only(wire.recv())
    assert a.options.sack_blocks == ((p + 50, p + 100), (p + 200, p + 300))
    wire.send(seq=p + 100, ack=ISS + 1, flags=ACK | PSH, payload=b"b" * 100)  # fills the hole
    a = only(wire.recv())
    assert a.ack == p + 300 and a.options.sack_blocks == ()
    assert ep.read() == b"a" * 100 + b"b" * 100 + b"c" * 100


def test_lossy_transfer_avoids_timeouts() -> None:
    """End to end at 5% loss each way with a 20 ms RTT: tail probes and RACK repair losses
    without waiting for the retransmission timer in most cases (before RACK-TLP this 1 MB
    transfer took 10 timeouts and 7 s; now 3 and 3.5 s)."""
    pair = make_pair(seed=2, delay=RTT / 2, loss=0.05)
    _, cli, srv = pair.connect()
    start = pair.net.now
    data = bytes(range(256)) * 4000
    sent = 0
    got = bytearray()

    def step() -> bool:
        nonlocal sent
        if sent < len(data):
            with contextlib.suppress(WouldBlock):
                sent += cli.write(data[sent:sent + 65536])
        with contextlib.suppress(WouldBlock):
            got.extend(srv.read())
        return len(got) == len(data)

    assert pair.run(step, timeout=120)
    assert bytes(got) == data
    st = pair.a.stats()["tcp"]
    assert st["loss-probes"] > 0
    assert st.get("timeouts", 0) <= 4, st
    assert pair.net.now - start < 5.0
