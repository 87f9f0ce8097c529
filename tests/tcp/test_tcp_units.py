"""Unit tests of the engine's pieces: state table, ISN, RTO, Reno, reassembly."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aionetstack.transport.tcp.congestion import Cubic, Reno, make_cc
from aionetstack.transport.tcp.isn import IsnGenerator
from aionetstack.transport.tcp.receiver import Receiver
from aionetstack.transport.tcp.rtt import RttEstimator
from aionetstack.transport.tcp.state import IllegalTransition, TcpState, check_transition
from aionetstack.wire.seqnum import seq_add, seq_sub


def test_illegal_transitions_raise() -> None:
    check_transition(TcpState.CLOSED, TcpState.SYN_SENT)
    check_transition(TcpState.FIN_WAIT_1, TcpState.CLOSING)
    with pytest.raises(IllegalTransition):
        check_transition(TcpState.LISTEN, TcpState.ESTABLISHED)
    with pytest.raises(IllegalTransition):
        check_transition(TcpState.TIME_WAIT, TcpState.ESTABLISHED)


def test_isn_is_keyed_per_tuple_and_advances_with_the_clock() -> None:
    g = IsnGenerator(random.Random(1))
    a = g.isn(b"\x0a\0\0\1", 1000, b"\x0a\0\0\2", 80, 10.0)
    b = g.isn(b"\x0a\0\0\1", 1001, b"\x0a\0\0\2", 80, 10.0)
    assert a != b
    later = g.isn(b"\x0a\0\0\1", 1000, b"\x0a\0\0\2", 80, 10.000004)
    assert seq_sub(later, a) == 1  # one tick every 4 microseconds
    other = IsnGenerator(random.Random(2))
    assert other.isn(b"\x0a\0\0\1", 1000, b"\x0a\0\0\2", 80, 10.0) != a
    # F is the keyed BLAKE2b of the 4-tuple, the same on every call (a copied keyed state)
    import hashlib

    four = b"\x0a\0\0\1" + b"\x0a\0\0\2" + (1000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    f = int.from_bytes(hashlib.blake2b(four, digest_size=4, key=g._secret).digest(), "big")
    for _ in range(3):
        assert g.isn(b"\x0a\0\0\1", 1000, b"\x0a\0\0\2", 80, 10.0) == a == (
            2_500_000 + f) & 0xFFFFFFFF


def test_rto_rfc6298() -> None:
    r = RttEstimator()
    assert r.timeout() == 1.0
    r.sample(0.5)
    assert r.srtt == 0.5 and r.rttvar == 0.25 and r.timeout() == pytest.approx(1.5)
    r.sample(0.5)
    assert r.rttvar == pytest.approx(0.1875) and r.timeout() == pytest.approx(0.5 + 0.75)
    for _ in range(50):
        r.sample(0.01)
    # the floor bounds the variance term, as Linux's tcp_rto_min: SRTT + 200 ms
    assert r.srtt is not None and r.timeout() == pytest.approx(r.srtt + 0.2)
    assert 0.2 < r.timeout() < 0.22
    r.on_expiry()
    r.on_expiry()
    assert r.timeout() == pytest.approx(4 * (r.srtt + 0.2))
    for _ in range(20):
        r.on_expiry()
    assert r.timeout() == 120.0
    r.sample(0.01)
    assert r.backoff == 0


def test_reno_slow_start_avoidance_and_loss() -> None:
    cc = Reno(1000)
    assert cc.cwnd == 10_000
    cc.on_ack(3000, None, 0.0)
    assert cc.cwnd == 13_000  # slow start: the bytes acknowledged (a stretch ACK counts whole)
    cc.ssthresh = 14_000
    cc.on_ack(3000, None, 0.0)
    assert cc.cwnd == 14_000  # ... but never past ssthresh
    cc.on_loss(20_000)
    assert cc.ssthresh == 10_000 and cc.cwnd == 13_000
    cc.on_dupack()
    assert cc.cwnd == 14_000
    cc.on_partial_ack(2000)
    assert cc.cwnd == 13_000
    cc.on_recovery_exit(5000)
    assert cc.cwnd == 6000
    cc.cwnd = cc.ssthresh
    cc.on_ack(1000, None, 0.0)
    assert cc.cwnd == 10_100  # congestion avoidance: SMSS*SMSS/cwnd per SMSS acked
    cc.on_ack(5000, None, 0.0)
    assert cc.cwnd == 10_100 + 1000 * 5000 // 10_100  # a stretch ACK: SMSS*acked/cwnd
    cc.on_rto(8000)
    assert cc.ssthresh == 4000 and cc.cwnd == 1000


def _receiver(irs: int, cap: int = 1 << 20) -> Receiver:
    r = Receiver(cap, 0)
    r.mss = 1000
    r.start(irs)
    r.rcv_adv = seq_add(r.rcv_nxt, cap)
    return r


@settings(max_examples=400, deadline=None)
@given(
    size=st.integers(1, 5000),
    cuts=st.lists(st.integers(1, 4999), max_size=12),
    seed=st.integers(0, 2**32 - 1),
    irs=st.sampled_from([0, 2**32 - 1, 2**32 - 1000, 12345]),
    fin=st.booleans(),
)
def test_reassembly_is_exact_for_any_order_overlap_and_duplication(
        size: int, cuts: list[int], seed: int, irs: int, fin: bool) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    edges = sorted({0, size, *(c for c in cuts if c < size)})
    segs = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
    # overlapping extras and duplicates
    for _ in range(rng.randrange(4)):
        a = rng.randrange(size)
        segs.append((a, min(size, a + rng.randrange(1, 2000))))
    segs += rng.sample(segs, k=min(len(segs), rng.randrange(3)))
    rng.shuffle(segs)
    r = _receiver(irs)
    base = seq_add(irs, 1)
    for a, b in segs:
        r.on_data(seq_add(base, a), memoryview(data)[a:b], fin and b == size)
        _check_blocks(r)
    if fin and not any(b == size for _, b in segs):  # pragma: no cover - size>0 always ends
        return
    assert bytes(r.buffer) == data
    assert r.ooo == [] and r.ooo_bytes == 0
    assert r.fin_received == fin
    assert r.rcv_nxt == seq_add(base, size + (1 if fin else 0))
    assert r.bytes_received == size


def _check_blocks(r: Receiver) -> None:
    """Out-of-order blocks: beyond RCV.NXT, sorted, disjoint, not adjacent, sizes tallied."""
    prev_end = 0
    for i, b in enumerate(r.ooo):
        start = seq_sub(b.seq, r.rcv_nxt)
        assert start > prev_end or (i == 0 and start > 0)
        prev_end = start + len(b.data)
    assert r.ooo_bytes == sum(len(b.data) for b in r.ooo)


def test_a_long_run_behind_a_hole_is_linear() -> None:
    r = _receiver(2**32 - 100, cap=8 << 20)
    seg = memoryview(b"x" * 1448)
    base = seq_add(r.irs, 1)
    for i in range(1, 4000):  # quadratic merging took seconds here
        r.on_data(seq_add(base, i * 1448), seg, False)
    assert len(r.ooo) == 1 and r.ooo_bytes == 3999 * 1448
    assert r.on_data(base, seg, False) == (4000 * 1448, True)
    assert len(r.buffer) == 4000 * 1448 and r.ooo_bytes == 0


def test_receiver_window_never_shrinks_and_avoids_sws() -> None:
    r = Receiver(4000, 0)
    r.mss = 1000
    r.start(0)
    assert r.advertise(syn=True) == 4000
    r.on_data(1, memoryview(b"x" * 3500), False)
    assert r.advertise() == 500
    r.read(200)  # 200 bytes free more: silly, keep the old right edge
    assert r.advertise() == 500
    r.read(900)
    assert r.advertise() == 1600
    assert seq_sub(r.rcv_adv, r.rcv_nxt) == 1600


def test_receiver_trims_to_window() -> None:
    r = Receiver(100, 0)
    r.start(10)
    r.advertise(syn=True)
    delivered, _ = r.on_data(11, memoryview(b"y" * 150), True)
    assert delivered == 100 and not r.fin_received  # the FIN fell outside the window


def test_cubic_window_growth_is_concave_then_convex() -> None:
    mss = 1000
    cc = Cubic(mss)
    cc.cwnd = 100 * mss
    cc.on_loss(100 * mss)
    assert cc.ssthresh == 70 * mss and cc.w_max == 100
    cc.cwnd = cc.ssthresh
    now, samples = 0.0, []
    for _ in range(80):  # 80 RTTs of 100 ms, one ACK per segment
        for _ in range(cc.cwnd // mss):
            cc.on_ack(mss, 0.1, now)
        samples.append(cc.cwnd / mss)
        now += 0.1
    k = (100 * 0.3 / 0.4) ** (1 / 3)  # ~4.2 s to regain W_max
    before = [w for i, w in enumerate(samples) if i * 0.1 < k - 1]
    assert all(w < 100 for w in before)  # concave approach below W_max ...
    assert samples[-1] > 100  # ... then convex probing beyond it
    assert all(b >= a for a, b in itertools.pairwise(samples))
    assert 105 < samples[-1] < 140  # W(8 s) = 100 + 0.4 (8 - 4.2)^3 ~ 122
    cc.on_rto(10 * mss)
    assert cc.cwnd == mss and cc.epoch is None
    with pytest.raises(ValueError):
        make_cc("vegas", mss)


def test_install_tcp_is_idempotent() -> None:
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    s = VirtualNetwork().stack()
    t = install_tcp(s)
    assert install_tcp(s) is t and s.transports[6] is t and s.tcp is t  # type: ignore[attr-defined]


# -- the receive window arithmetic against RFC 9293's formulas (seq_* helpers) --------------------

def _acceptable_rfc(nxt: int, wnd: int, seq: int, seg_len: int) -> bool:
    """RFC 9293 §3.10.7.4's four cases, written with the serial-number helpers."""
    from aionetstack.wire.seqnum import seq_le, seq_lt

    if seg_len == 0:
        return seq == nxt if wnd == 0 else seq_le(nxt, seq) and seq_lt(seq, seq_add(nxt, wnd))
    if wnd == 0:
        return seq == nxt
    last = seq_add(seq, seg_len - 1)
    return (seq_le(nxt, seq) and seq_lt(seq, seq_add(nxt, wnd))) or (
        seq_le(nxt, last) and seq_lt(last, seq_add(nxt, wnd)))


_u32 = st.integers(0, 0xFFFFFFFF)


@given(nxt=_u32, wnd=st.one_of(st.just(0), st.integers(1, 0xFFFF << 14)),
       off=st.one_of(st.integers(-70_000, 70_000), _u32), seg_len=st.integers(0, 70_000))
def test_acceptability_matches_rfc_9293(nxt: int, wnd: int, off: int, seg_len: int) -> None:
    r = Receiver(1 << 30, 14)
    r.rcv_nxt, r.rcv_adv = nxt, seq_add(nxt, wnd)
    seq = seq_add(nxt, off)
    assert r.rcv_wnd == wnd
    assert r.acceptable(seq, seg_len) == _acceptable_rfc(nxt, wnd, seq, seg_len)


@given(nxt=_u32, adv_off=st.integers(-5, 300_000), cap=st.integers(1, 1 << 20),
       buffered=st.integers(0, 1 << 20), scale=st.integers(0, 14), mss=st.integers(64, 9000))
def test_advertised_window_follows_the_rules(nxt: int, adv_off: int, cap: int, buffered: int,
                                             scale: int, mss: int) -> None:
    """The field never moves the right edge left, moves it right only by at least
    min(capacity/2, MSS) (receiver SWS avoidance), and covers at most the free buffer rounded
    up to the scale (RFC 9293 §3.8.6.2, RFC 7323 §2.3)."""
    r = Receiver(cap, scale)
    r.mss = mss
    if buffered:
        r.buffer.append(memoryview(bytes(min(buffered, cap + 10))))
    r.rcv_nxt = nxt
    r.rcv_adv = seq_add(nxt, adv_off)
    old_right = seq_add(nxt, max(adv_off, 0))
    field = r.advertise()
    assert 0 <= field <= 0xFFFF
    right = seq_add(nxt, field << scale)
    assert r.rcv_adv == right
    moved = seq_sub(right, old_right)
    if adv_off <= 0xFFFF << scale:
        assert moved >= 0  # the right edge never moves left (rounded up to the scale)
    grew = seq_sub(right, seq_add(nxt, adv_off)) > (1 << scale) - 1
    if grew and adv_off >= 0:  # beyond rounding the edge moved right: by a real increase
        assert moved >= min(cap // 2, mss) - ((1 << scale) - 1)
        free = max(cap - len(r.buffer), 0)
        assert (field << scale) < min(free, 0xFFFF << scale) + (1 << scale)


@given(samples=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=20),
       min_rto=st.sampled_from([0.0, 0.2, 1.0]), backoff=st.integers(0, 40))
def test_rto_follows_rfc_6298(samples: list[float], min_rto: float, backoff: int) -> None:
    """SRTT/RTTVAR per RFC 6298 §2, RTO = SRTT + max(G, 4 RTTVAR, min_rto) capped at max_rto
    (the floor bounds the variance term, as Linux), doubled per backoff (§5.5) up to max_rto."""
    est = RttEstimator(initial_rto=1.0, min_rto=min_rto, max_rto=60.0)
    srtt: float | None = None
    var = 0.0
    for r in samples:
        r = max(r, 0.001)
        if srtt is None:
            srtt, var = r, r / 2
        else:
            var = 0.75 * var + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        est.sample(r)
        assert est.srtt == pytest.approx(srtt) and est.rttvar == pytest.approx(var)
        assert est.rto == pytest.approx(min(srtt + max(0.001, 4 * var, min_rto), 60.0))
    for _ in range(backoff):
        est.on_expiry()
    assert est.timeout() == pytest.approx(min(est.rto * 2 ** min(backoff, 30), 60.0))
