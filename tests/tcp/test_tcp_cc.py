"""Congestion control: CUBIC against RFC 9438's equations on a manual clock, the pluggable
interface (a user-registered controller drives a real connection), per-endpoint selection."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from tcp_helpers import make_pair
from test_tcp_loss_matrix import check_payload, close_and_check_no_leaks, run_transfer
from test_tcp_transfer import pump

from aionetstack.clock import ManualClock
from aionetstack.errors import InvalidArgument
from aionetstack.transport.tcp.congestion import (
    CongestionControl,
    Cubic,
    Reno,
    available,
    make_cc,
    register_congestion_control,
    unregister_congestion_control,
)

MSS = 1000
C, BETA = 0.4, 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


def w_cubic(t: float, k: float, w_max: float) -> float:
    """RFC 9438 eq. 1."""
    return C * (t - k) ** 3 + w_max


def after_loss(cwnd_seg: int, clock: ManualClock, srtt: float = 0.1) -> Cubic:
    """A CUBIC sender that lost a segment at ``cwnd_seg`` and finished recovery."""
    cc = Cubic(MSS)
    cc.srtt = srtt
    cc.cwnd = cwnd_seg * MSS
    cc.on_loss(cc.cwnd)
    cc.on_recovery_exit(cwnd_seg * MSS)  # full ACK: cwnd = ssthresh
    assert cc.cwnd == cc.ssthresh == round(cwnd_seg * BETA * MSS)
    return cc


def ack_rounds(cc: Cubic, clock: ManualClock, rtt: float, rounds: int) -> Iterator[float]:
    """ACK-clock ``rounds`` round trips: one SMSS ACK per segment of the window, spread over
    the RTT; yields the time after each round."""
    for _ in range(rounds):
        n = max(1, cc.cwnd // MSS)
        for _ in range(n):
            clock.advance(rtt / n)
            cc.on_ack(MSS, None, clock.now)
        yield clock.now


# -- RFC 9438 ---------------------------------------------------------------------------------
def test_constants_and_multiplicative_decrease() -> None:
    assert (Cubic.C, Cubic.BETA) == (0.4, 0.7)
    alpha = Cubic.ALPHA
    assert alpha == pytest.approx(0.5294, abs=1e-4)  # §4.3: 3(1-beta)/(1+beta)
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_loss(100 * MSS)
    assert cc.ssthresh == 70 * MSS  # §4.6: ssthresh = cwnd * beta_cubic
    assert cc.cwnd == 73 * MSS  # + 3 SMSS inflation in non-SACK fast recovery (RFC 5681)
    assert cc.cwnd_prior == 100 and cc.w_max == 100  # first loss: W_max = cwnd
    small = Cubic(MSS)
    small.cwnd = 2 * MSS
    small.on_loss(2 * MSS)
    assert small.ssthresh == 2 * MSS  # never below 2 SMSS


def test_k_and_the_window_function() -> None:
    clock = ManualClock(50.0)
    cc = after_loss(100, clock)
    cc.on_ack(MSS, None, clock.now)  # first ACK in congestion avoidance: the epoch starts
    assert cc.epoch == 50.0
    k = ((100 - 70) / C) ** (1 / 3)  # §4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C)
    assert cc.k == pytest.approx(k) and cc.k == pytest.approx(4.2172, abs=1e-4)
    assert cc.w_cubic(0) == pytest.approx(70)  # starts at cwnd_epoch ...
    assert cc.w_cubic(k) == pytest.approx(100)  # ... reaches W_max at K ...
    for t in (0.5, 2.0, 6.0, 10.0):
        assert cc.w_cubic(t) == pytest.approx(w_cubic(t, k, 100))  # ... eq. 1 everywhere


def test_concave_increment_per_ack_targets_w_cubic_one_rtt_ahead() -> None:
    clock = ManualClock(0.0)
    cc = after_loss(100, clock, srtt=0.1)
    cc.on_ack(MSS, None, clock.now)
    k = cc.k
    clock.advance(1.0)
    cwnd = cc.cwnd / MSS
    assert w_cubic(1.0, k, 100) > cc.w_est  # the cubic region, not the Reno-friendly one
    cc.on_ack(MSS, None, clock.now)
    target = w_cubic(1.0 + 0.1, k, 100)  # §4.2: target = W_cubic(t + RTT), within [cwnd, 1.5cwnd]
    assert cwnd < target < 1.5 * cwnd
    assert cc.cwnd == int(cwnd * MSS + (target - cwnd) / cwnd * MSS)  # += (target-cwnd)/cwnd


def test_convex_increment_is_capped_at_one_and_a_half_cwnd_per_rtt() -> None:
    clock = ManualClock(0.0)
    cc = after_loss(100, clock, srtt=0.1)
    cc.on_ack(MSS, None, clock.now)
    clock.advance(30.0)  # far into the convex region: W_cubic(t + RTT) >> 1.5 cwnd
    before = cc.cwnd
    cc.on_ack(MSS, None, clock.now)
    assert cc.cwnd - before == int(0.5 * MSS)  # (1.5 cwnd - cwnd) / cwnd per SMSS acked


def test_window_follows_w_cubic_through_the_plateau() -> None:
    """ACK-clocked over 100 ms round trips, cwnd tracks W_cubic(t + RTT): concave below W_max,
    flat around t = K, convex beyond."""
    clock = ManualClock(0.0)
    rtt = 0.1
    cc = after_loss(200, clock, srtt=rtt)
    cc.on_ack(MSS, None, clock.now)
    start, k = cc.epoch, cc.k
    assert start is not None
    samples: list[tuple[float, float]] = []
    for now in ack_rounds(cc, clock, rtt, 120):
        samples.append((now - start, cc.cwnd / MSS))
    for t, w in samples[5:]:
        if w_cubic(t, k, 200) > cc.w_est:  # (past the first Reno-friendly RTTs)
            assert w == pytest.approx(w_cubic(t + rtt, k, 200), rel=0.03), (t, w)
    near_k = [w for t, w in samples if abs(t - k) < 0.5]
    assert near_k and max(near_k) - min(near_k) < 1.0  # the plateau around W_max
    assert all(abs(w - 200) < 2 for w in near_k)
    assert samples[-1][1] > 200 * 1.1  # probing beyond W_max once past K


def test_fast_convergence() -> None:
    """§4.7: a loss below the previous W_max releases bandwidth: W_max = cwnd (1 + beta) / 2."""
    clock = ManualClock(0.0)
    cc = after_loss(100, clock)
    assert cc.w_max == 100
    cc.cwnd = 80 * MSS  # the next loss comes before the window regained W_max
    cc.on_loss(80 * MSS)
    assert cc.w_max == pytest.approx(80 * (1 + BETA) / 2)  # 68 segments
    assert cc.cwnd_prior == 80 and cc.ssthresh == 56 * MSS
    cc.on_recovery_exit(80 * MSS)
    cc.on_ack(MSS, None, clock.now)
    assert cc.k == pytest.approx(((68 - 56) / C) ** (1 / 3))
    cc.cwnd = 90 * MSS  # a loss above W_max: no fast convergence
    cc.on_loss(90 * MSS)
    assert cc.w_max == 90


def test_reno_friendly_region_alpha_then_one() -> None:
    """§4.3: on a short RTT the cubic function grows slower than Reno would, so cwnd follows
    W_est, which grows by alpha_cubic segments per RTT until it reaches cwnd_prior, then by 1."""
    clock = ManualClock(0.0)
    rtt = 0.001
    cc = after_loss(50, clock, srtt=rtt)  # cwnd 35, W_max = cwnd_prior = 50
    cc.on_ack(MSS, None, clock.now)
    assert cc.epoch is not None
    prev = cc.w_est
    slopes_below: list[float] = []
    slopes_above: list[float] = []
    for now in ack_rounds(cc, clock, rtt, 60):
        t = now - cc.epoch
        assert cc.w_cubic(t) < cc.w_est  # Reno-friendly all along ...
        assert cc.cwnd == int(cc.w_est * MSS)  # ... so cwnd is set to W_est
        (slopes_below if cc.w_est < cc.cwnd_prior else slopes_above).append(cc.w_est - prev)
        prev = cc.w_est
    assert slopes_below and slopes_above
    # one round of ACKs is about one window, so W_est grows by about alpha (then 1) per RTT
    assert sum(slopes_below[1:-1]) / len(slopes_below[1:-1]) == pytest.approx(ALPHA, rel=0.06)
    assert sum(slopes_above[1:]) / len(slopes_above[1:]) == pytest.approx(1.0, rel=0.06)


def test_timeout_restarts_with_k_zero_from_the_new_window() -> None:
    """§4.8: after an RTO, slow start to ssthresh, then the first epoch has K = 0 and
    W_max = the window at its start."""
    clock = ManualClock(0.0)
    cc = after_loss(100, clock)
    cc.cwnd = 90 * MSS
    cc.on_rto(90 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 63 * MSS and cc.epoch is None
    while cc.cwnd < cc.ssthresh:  # slow start: + SMSS per ACK
        before = cc.cwnd
        cc.on_ack(MSS, 0.1, clock.advance(0.01))
        assert cc.cwnd - before == MSS
    start_seg = cc.cwnd / MSS
    cc.on_ack(MSS, 0.1, clock.advance(0.01))
    assert cc.k == 0.0 and cc.w_max == pytest.approx(start_seg)


def test_slow_start_and_recovery_hooks_are_renos() -> None:
    cc, reno = Cubic(MSS), Reno(MSS)
    for c in (cc, reno):
        c.on_ack(3000, 0.1, 1.0)
    assert cc.cwnd == reno.cwnd == 13 * MSS  # + acked (byte counting, no per-ACK cap)
    cc.ssthresh = reno.ssthresh = 5 * MSS
    for c in (cc, reno):
        c.on_dupack()
        c.on_partial_ack(2 * MSS)
    assert cc.cwnd == reno.cwnd


# -- the pluggable interface --------------------------------------------------------------------
class Recording(CongestionControl):
    """A user controller: a fixed window of ``WINDOW`` segments, halved to 2 on loss, 1 on RTO
    (back to ``WINDOW`` on the next ACK); it records every hook call."""

    __slots__ = ("calls",)
    WINDOW = 4

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.cwnd = self.WINDOW * mss
        self.calls: list[str] = []

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = self.WINDOW * mss

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        self.calls.append("on_ack")
        self.cwnd = self.WINDOW * self.mss

    def on_loss(self, flight: int) -> None:
        self.calls.append("on_loss")
        self.ssthresh = self.cwnd = 2 * self.mss

    def on_rto(self, flight: int) -> None:
        self.calls.append("on_rto")
        self.ssthresh = 2 * self.mss
        self.cwnd = self.mss

    def on_recovery_exit(self, flight: int) -> None:
        self.calls.append("on_recovery_exit")
        super().on_recovery_exit(flight)


@pytest.fixture
def recording() -> Iterator[None]:
    register_congestion_control("recording", Recording)
    try:
        yield
    finally:
        unregister_congestion_control("recording")


def test_registry() -> None:
    assert {"reno", "cubic"} <= set(available())
    assert make_cc("cubic", MSS).name == "cubic" and isinstance(make_cc("reno", MSS), Reno)
    with pytest.raises(InvalidArgument):
        make_cc("vegas", MSS)
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError
        make_cc("", MSS)
    with pytest.raises(InvalidArgument):
        register_congestion_control("reno", Cubic)  # no silent replacement
    with pytest.raises(InvalidArgument):
        unregister_congestion_control("cubic")
    def bogus(mss: int) -> Any:
        return object()

    register_congestion_control("not-a-cc", bogus)
    try:
        with pytest.raises(InvalidArgument):
            make_cc("not-a-cc", MSS)
    finally:
        unregister_congestion_control("not-a-cc")


def test_cubic_is_the_default_and_reno_is_selectable_per_endpoint() -> None:
    p = make_pair(delay=0.01)
    assert p.ta.congestion_control == "cubic"
    ep = p.ta.new_endpoint()
    assert ep.congestion_control == "cubic" and isinstance(ep.snd.cc, Cubic)
    ep.congestion_control = "reno"
    assert ep.congestion_control == "reno" and type(ep.snd.cc) is Reno
    with pytest.raises(InvalidArgument):
        ep.congestion_control = "bbr"
    assert ep.congestion_control == "reno"
    ep.close()
    # an accepted connection inherits its listener's choice, not the stack default
    lst = p.tb.new_endpoint()
    lst.congestion_control = "reno"
    lst.bind(None, 80)
    lst.listen(4)
    cli = p.ta.new_endpoint()
    with pytest.raises(OSError):
        cli.connect("198.18.0.2", 80)
    assert p.run(lambda: bool(lst.listen_queue and lst.listen_queue.accept_queue))
    srv = lst.accept()
    assert srv.congestion_control == "reno" and cli.congestion_control == "cubic"
    # switching on an open connection keeps the window the old controller reached
    data = random.Random(1).randbytes(200_000)
    srv.write(data[:100_000])
    assert p.run(lambda: cli.unread() == 100_000)
    cwnd = srv.snd.cc.cwnd
    srv.congestion_control = "cubic"
    assert type(srv.snd.cc) is Cubic and srv.snd.cc.cwnd == cwnd
    assert cli.read() == data[:100_000]
    assert pump(p, srv, cli, data[100_000:]) == data[100_000:]


def test_a_user_controller_is_driven_by_a_real_connection(recording: None) -> None:
    """Registered by name, selected per endpoint: its hooks are called on ACKs, losses and
    timeouts, and its window is what the sender obeys."""
    t = run_transfer(seed=5, size=300_000, loss=0.08, delay=0.02, cc="recording")
    check_payload(t)
    cc = t.cli.snd.cc
    assert isinstance(cc, Recording) and t.cli.congestion_control == "recording"
    calls = set(cc.calls)
    assert {"on_ack", "on_loss", "on_rto", "on_recovery_exit"} <= calls, calls
    assert t.cli.info()["cwnd"] == cc.cwnd


def _goodput(cc: str | None, **kw: Any) -> float:
    t = run_transfer(seed=3, size=400_000, delay=0.05, cc=cc, **kw)
    check_payload(t)
    return t.goodput()


def test_the_user_window_limits_the_sender(recording: None) -> None:
    """Four segments per 100 ms round trip is what a fixed 4-segment window allows; CUBIC on
    the same path is an order of magnitude faster."""
    fixed = _goodput("recording")
    mss = 1448
    assert fixed == pytest.approx(Recording.WINDOW * mss / 0.1, rel=0.1)
    assert _goodput("cubic") > 5 * fixed
    assert _goodput("reno") > 5 * fixed


def test_cubic_and_reno_complete_a_lossy_transfer_with_clean_close() -> None:
    for cc in ("cubic", "reno"):
        t = run_transfer(seed=9, size=500_000, back=200_000, loss=0.03, reorder=0.02,
                         delay=0.02, cc=cc)
        check_payload(t)
        assert t.cli.congestion_control == cc and t.srv.congestion_control == cc
        assert t.retransmits()[0] > 0
        close_and_check_no_leaks(t)


def test_cubic_plateau_k_matches_closed_form() -> None:
    """K = cbrt(W_max (1 - beta) / C) when the window was cut from W_max by beta (§4.2)."""
    for w in (10, 100, 1000):
        cc = after_loss(w, ManualClock(0.0))
        cc.on_ack(MSS, None, 0.0)
        cwnd_epoch = round(w * BETA * MSS) / MSS
        assert cc.k == pytest.approx(math.pow((w - cwnd_epoch) / C, 1 / 3))
        assert cc.k == pytest.approx(math.pow(w * (1 - BETA) / C, 1 / 3), rel=0.01)
