"""In-memory pipe: delivery timing, impairments, determinism, re-entrancy, close, wake-ups."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from aionetstack import link
from aionetstack.clock import ManualClock
from aionetstack.link import LinkCaps, PipeEnd


class Recorder:
    """A fake receiver: collects delivered frames (as bytes, with the time) and wake-ups."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.frames: list[bytes] = []
        self.times: list[float] = []
        self.wakeups: list[float] = []
        self.on_deliver: Callable[[memoryview], None] | None = None

    def link_deliver(self, frame: memoryview) -> None:
        assert isinstance(frame, memoryview)
        self.frames.append(bytes(frame))
        self.times.append(self.clock())
        if self.on_deliver is not None:
            self.on_deliver(frame)

    def link_wakeup(self, at: float) -> None:
        self.wakeups.append(at)


def attached(clock: ManualClock, **kwargs: object) -> tuple[PipeEnd, PipeEnd, Recorder, Recorder]:
    a, b = link.pipe(**kwargs)  # type: ignore[arg-type]
    ra, rb = Recorder(clock), Recorder(clock)
    a.attach(ra, clock)
    b.attach(rb, clock)
    return a, b, ra, rb


def run(clock: ManualClock, *ends: PipeEnd, until: float = math.inf) -> None:
    """Poll ``ends`` and jump the clock to the next due time until nothing is pending."""
    while True:
        nexts = [n for e in ends if (n := e.poll()) is not None]
        if not nexts:
            if any(e.pending for e in ends):
                continue  # a later end's delivery sent to an end polled earlier in this round
            return
        at = min(nexts)
        if at > until:
            return
        if at > clock():
            clock.set(at)


def frame(i: int, size: int = 100) -> bytes:
    return i.to_bytes(4, "big") + bytes(size - 4)


def ids(frames: list[bytes]) -> list[int]:
    return [int.from_bytes(f[:4], "big") for f in frames]


# -- basics ---------------------------------------------------------------------------------------


def test_fast_path_delivers_in_order_on_poll_only() -> None:
    clock = ManualClock(5.0)
    a, b, ra, rb = attached(clock)
    for i in range(5):
        a.send(frame(i))
    assert rb.frames == []  # never delivered from send
    assert rb.wakeups == [5.0]  # one wake-up: the first frame became the earliest
    assert b.pending == 5
    assert b.poll() is None
    assert ids(rb.frames) == [0, 1, 2, 3, 4]
    assert a.stats()["tx_frames"] == 5 and a.stats()["tx_bytes"] == 500
    assert b.stats()["rx_frames"] == 5 and b.stats()["rx_bytes"] == 500
    assert ra.frames == [] and a.poll() is None
    a.send(frame(9))
    assert rb.wakeups == [5.0, 5.0]


def test_caps() -> None:
    a, b = link.pipe(mtu=9000, seed=1)
    assert a.caps == LinkCaps(
        mtu=9000, l2=False, mac=a.caps.mac, tx_checksum_offload=True, rx_checksum_trusted=True
    )
    c, _ = link.pipe(l2=True, corrupt=0.01, seed=1)
    assert c.caps.l2 and not c.caps.tx_checksum_offload and not c.caps.rx_checksum_trusted
    for end in (a, b, c):
        mac = end.caps.mac
        assert mac is not None and len(mac) == 6
        assert mac[0] & 0x01 == 0  # unicast
        assert mac[0] & 0x02 == 0x02  # locally administered
    assert a.caps.mac != b.caps.mac
    x, y = link.pipe(seed=1)
    assert (x.caps.mac, y.caps.mac) == (a.caps.mac, b.caps.mac)
    m1, m2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
    p, q = link.pipe(l2=True, macs=(m1, m2))
    assert (p.caps.mac, q.caps.mac) == (m1, m2)
    assert a.peer is b and b.peer is a


def test_delay_timing_and_wakeups() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, delay=1.0)
    a.send(frame(0))
    assert rb.wakeups == [1.0]
    clock.set(0.5)
    a.send(frame(1))  # arrives at 1.5: not a new earliest, no wake-up
    assert rb.wakeups == [1.0]
    assert b.poll() == 1.0
    assert rb.frames == []
    clock.set(1.0)
    assert b.poll() == 1.5
    assert ids(rb.frames) == [0] and rb.times == [1.0]
    clock.set(1.2)
    a.send(frame(2))  # arrives at 2.2, behind frame 1
    assert rb.wakeups == [1.0]
    clock.set(3.0)
    assert b.poll() is None
    assert ids(rb.frames) == [0, 1, 2]
    a.send(frame(3))  # heap empty: a new earliest
    assert rb.wakeups == [1.0, 4.0]


def test_wakeup_only_for_new_earliest_arrival() -> None:
    # Held-back frames make the earliest pending arrival move both ways; a wake-up is issued
    # exactly when a send makes a new earliest arrival, and carries that arrival.
    clock = ManualClock()
    a, b, _, rb = attached(clock, delay=0.5, jitter=0.3, reorder=0.3, reorder_delay=2.0, seed=3)
    expected: list[float] = []
    for i in range(300):
        before = b.poll()  # delivers what is due, returns the earliest pending arrival
        a.send(frame(i))
        after = b.poll()  # the new frame is never due at once (delay - jitter > 0)
        assert after is not None
        if before is None or after < before:
            expected.append(after)
        else:
            assert after == before
        clock.advance(0.6 if i % 2 else 0.05)
    assert rb.wakeups == expected
    assert len(expected) > 10
    assert a.stats()["reordered"] > 50

    c, d, _, rd = attached(clock, delay=2.0, jitter=1.0, seed=3)
    for i in range(50):
        c.send(frame(i))
        clock.advance(0.01)
    assert len(rd.wakeups) == 1  # FIFO: the first frame stays the earliest
    assert d.poll() == rd.wakeups[0]


def test_peer_not_attached_yet_queues_until_attach() -> None:
    clock = ManualClock(2.0)
    a, b = link.pipe()
    ra, rb = Recorder(clock), Recorder(clock)
    a.attach(ra, clock)
    a.send(frame(1))
    a.send(frame(2))
    assert b.poll() is None  # not attached: nothing delivered
    b.attach(rb, clock)
    assert rb.wakeups == [2.0]
    b.poll()
    assert ids(rb.frames) == [1, 2]

    c, d = link.pipe(delay=0.5)
    rc, rd = Recorder(clock), Recorder(clock)
    c.attach(rc, clock)
    c.send(frame(3))
    d.attach(rd, clock)
    assert rd.wakeups == [2.5]


def test_send_before_attach_raises() -> None:
    a, _ = link.pipe()
    with pytest.raises(RuntimeError):
        a.send(b"x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": 1.5},
        {"duplicate": -0.1},
        {"delay": -1.0},
        {"rate": 0.0},
        {"mtu": 10},
        {"reorder_delay": -1.0},
        {"macs": (b"\x02", b"\x02\x00\x00\x00\x00\x01")},
    ],
)
def test_invalid_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        link.pipe(**kwargs)  # type: ignore[arg-type]


# -- ordering -------------------------------------------------------------------------------------


def test_jitter_alone_keeps_fifo() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, delay=0.010, jitter=0.009, seed=7)
    for i in range(2000):
        a.send(frame(i))
        run(clock, b, until=0.002 * (i + 1))  # deliver each frame at its arrival time
        clock.set(0.002 * (i + 1))
    run(clock, b)
    assert ids(rb.frames) == list(range(2000))
    assert rb.times == sorted(rb.times)
    latencies = [t - 0.002 * i for i, t in enumerate(rb.times)]
    assert min(latencies) < 0.004 and max(latencies) > 0.016  # jitter really varied them
    assert len({round(x, 9) for x in latencies}) > 1000
    assert a.stats()["reordered"] == 0


def test_reorder_reorders_and_counts() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, delay=0.005, reorder=0.1, seed=11)
    n = 2000
    for i in range(n):
        a.send(frame(i))
        clock.advance(0.001)  # the 5 ms hold-back lets ~5 later frames overtake
    run(clock, b)
    got = ids(rb.frames)
    assert sorted(got) == list(range(n))
    assert got != list(range(n))
    reordered = a.stats()["reordered"]
    assert 100 < reordered < 300  # p = 0.1 of 2000, sd ~13
    # each held-back frame shows up as a frame delivered after higher-numbered ones
    late = sum(1 for k, x in enumerate(got) if k > 0 and x < max(got[:k]))
    assert late == reordered
    assert rb.times == sorted(rb.times)


# -- probabilistic impairments -------------------------------------------------------------------


def test_loss_rate_within_bounds() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, loss=0.1, seed=1234)
    n = 10_000
    for i in range(n):
        a.send(frame(i, 64))
    b.poll()
    dropped = a.stats()["dropped_loss"]
    assert abs(dropped - 1000) < 150  # binomial sd = 30
    assert len(rb.frames) == n - dropped
    got = ids(rb.frames)
    assert got == sorted(got)  # loss does not reorder
    assert b.stats()["rx_frames"] == n - dropped


def test_duplicate() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, duplicate=0.2, seed=99)
    n = 5000
    for i in range(n):
        a.send(bytearray(frame(i, 64)))
    b.poll()
    dup = a.stats()["duplicated"]
    assert abs(dup - 1000) < 170  # sd ~28
    assert len(rb.frames) == n + dup
    got = ids(rb.frames)
    assert sorted(set(got)) == list(range(n))
    # the copy arrives right after the original
    assert got == sorted(got)
    assert sum(1 for x, y in itertools.pairwise(got) if x == y) == dup


def test_corrupt_flips_one_to_three_bits() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, corrupt=0.3, seed=5)
    n = 3000
    sent = [bytes(range(256)) * 2 for _ in range(n)]
    originals = [bytes(f) for f in sent]
    for f in sent:
        a.send(f)
    b.poll()
    assert sent == originals  # the sender's buffers are untouched
    assert len(rb.frames) == n
    diffs = [
        sum(bin(x ^ y).count("1") for x, y in zip(got, orig, strict=True))
        for got, orig in zip(rb.frames, originals, strict=True)
    ]
    damaged = [d for d in diffs if d]
    assert all(1 <= d <= 3 for d in damaged)
    assert len(damaged) == a.stats()["corrupted"]
    assert abs(len(damaged) - 900) < 130  # sd ~25
    assert {1, 2, 3} <= set(damaged)



def test_corrupt_damage_is_always_caught_by_the_internet_checksum() -> None:
    """All flipped bits lie in one 16-bit word at an even offset, so an RFC 1071 checksum over
    the frame (and over any even-aligned part of it) always changes: flips in two words at the
    same bit position and in opposite directions would cancel out and slip through."""
    from aionetstack.wire.checksum import checksum

    clock = ManualClock()
    a, b, _, rb = attached(clock, corrupt=0.5, seed=11)
    originals = [bytes((i * 7 + j) & 0xFF for j in range(60 + i % 41)) for i in range(3000)]
    for f in originals:
        a.send(f)
    b.poll()
    damaged = 0
    for got, orig in zip(rb.frames, originals, strict=True):
        if got == orig:
            continue
        damaged += 1
        offsets = [k for k in range(len(orig)) if got[k] != orig[k]]
        assert offsets[-1] - offsets[0] <= 1 and offsets[0] // 2 == offsets[-1] // 2, offsets
        assert checksum(got) != checksum(orig)
    assert damaged == a.stats()["corrupted"] and abs(damaged - 1500) < 150


def test_corrupt_bytearray_frame_copied() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, corrupt=1.0, seed=5)
    buf = bytearray(50)
    a.send(buf)
    b.poll()
    assert buf == bytearray(50)
    assert rb.frames[0] != bytes(50)


# -- rate limiting, queue, MTU --------------------------------------------------------------------


def test_rate_limit_serialises() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, rate=10_000.0)
    for i in range(10):
        a.send(frame(i, 1000))
    assert rb.wakeups == [pytest.approx(0.1)]
    run(clock, b)
    assert ids(rb.frames) == list(range(10))
    assert rb.times == pytest.approx([0.1 * (k + 1) for k in range(10)])
    # N bytes at rate R take N/R seconds
    assert clock() == pytest.approx(10 * 1000 / 10_000.0)


def test_rate_plus_delay() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, rate=1_000_000.0, delay=0.05)
    for i in range(100):
        a.send(frame(i, 1000))
    run(clock, b)
    assert len(rb.frames) == 100
    assert rb.times[0] == pytest.approx(0.051)
    assert rb.times[-1] == pytest.approx(0.15)


def test_queue_limit_drop_tail() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, rate=10_000.0, queue_limit=3000)
    for i in range(10):
        a.send(frame(i, 1000))
    assert a.stats()["dropped_queue"] == 7
    run(clock, b, until=0.15)
    clock.set(0.15)  # frame 0 done, frame 1 half done: 1500 bytes still queued
    a.send(frame(10, 1000))  # 2500 <= 3000: accepted
    a.send(frame(11, 1000))  # 3500 > 3000: dropped
    assert a.stats()["dropped_queue"] == 8
    run(clock, b)
    assert ids(rb.frames) == [0, 1, 2, 10]
    assert rb.times == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # an idle link always accepts a frame, even one larger than the queue limit
    c, d, _, rd = attached(clock, rate=10_000.0, queue_limit=100)
    c.send(frame(0, 1000))
    run(clock, d)
    assert len(rd.frames) == 1 and c.stats()["dropped_queue"] == 0


def test_mtu_drops() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, mtu=1500)
    a.send(bytes(1500))
    a.send(bytes(1501))
    b.poll()
    assert [len(f) for f in rb.frames] == [1500]
    assert a.stats()["dropped_mtu"] == 1
    c, d, _, rd = attached(clock, l2=True, mtu=1500, delay=0.1)
    c.send(bytes(1514))
    c.send(bytes(1515))
    run(clock, d)
    assert [len(f) for f in rd.frames] == [1514]
    assert c.stats()["dropped_mtu"] == 1


# -- determinism ----------------------------------------------------------------------------------

IMPAIRED = dict(
    loss=0.05,
    duplicate=0.05,
    reorder=0.05,
    corrupt=0.05,
    delay=0.01,
    jitter=0.005,
    rate=2_000_000.0,
    queue_limit=50_000,
)


def trace(seed: int | None) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    clock = ManualClock()
    a, b, ra, rb = attached(clock, seed=seed, **IMPAIRED)
    for i in range(600):
        a.send(frame(i, 100 + i % 1000))
        if i % 3 == 0:
            b.send(frame(100_000 + i, 200))
        clock.advance(0.0003)
    run(clock, a, b)
    return list(zip(rb.times, rb.frames, strict=True)), list(zip(ra.times, ra.frames, strict=True))


def test_determinism() -> None:
    first = trace(42)
    assert first == trace(42)
    assert first != trace(43)
    assert first != trace(None)
    assert len(first[0]) > 400 and len(first[1]) > 150


def test_directions_are_independent() -> None:
    # traffic in one direction does not perturb the other direction's random stream
    def forward(with_reverse: bool) -> list[bytes]:
        clock = ManualClock()
        a, b, _, rb = attached(clock, seed=8, loss=0.3, corrupt=0.3)
        for i in range(300):
            a.send(frame(i))
            if with_reverse:
                b.send(frame(i))
        run(clock, a, b)
        return rb.frames

    assert forward(False) == forward(True)


# -- re-entrancy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"delay": 0.001}, {"loss": 0.1, "seed": 1}])
def test_reentrant_reply_from_deliver(kwargs: dict[str, object]) -> None:
    clock = ManualClock()
    a, b, ra, rb = attached(clock, **kwargs)

    def echo(end: PipeEnd, limit: int) -> Callable[[memoryview], None]:
        def reply(f: memoryview) -> None:
            i = int.from_bytes(f[:4], "big")
            if i < limit:
                end.send(frame(i + 1))
                end.send(frame(i + 1))  # two replies from inside link_deliver

        return reply

    rb.on_deliver = echo(b, 10)
    ra.on_deliver = echo(a, 10)
    a.send(frame(0))
    assert rb.frames == []
    run(clock, a, b)
    assert rb.frames and ra.frames
    assert all(i % 2 == 0 for i in ids(rb.frames))
    assert all(i % 2 == 1 for i in ids(ra.frames))
    if not kwargs:
        assert len(rb.frames) + len(ra.frames) == 2**11 - 1


def test_fast_path_poll_reports_frames_queued_during_delivery() -> None:
    clock = ManualClock(1.0)
    a, b, _, rb = attached(clock)
    first = True

    def more(f: memoryview) -> None:
        nonlocal first
        if first:
            first = False
            a.send(b"more")  # lands in b's inbound queue while b.poll() is delivering

    rb.on_deliver = more
    a.send(b"hello")
    assert b.poll() == 1.0  # the new frame is due now
    assert rb.frames == [b"hello"]
    assert b.poll() is None
    assert rb.frames == [b"hello", b"more"]


# -- close ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"delay": 1.0}])
def test_close_stops_delivery_both_ways(kwargs: dict[str, object]) -> None:
    clock = ManualClock()
    a, b, ra, rb = attached(clock, **kwargs)
    a.send(b"in flight a->b")
    b.send(b"in flight b->a")
    b.send(b"in flight b->a 2")
    a.close()
    assert a.closed and b.closed
    clock.advance(2.0)
    assert a.poll() is None and b.poll() is None
    assert ra.frames == [] and rb.frames == []
    a.send(b"after")
    b.send(b"after")
    assert a.stats()["dropped_closed"] == 2
    assert b.stats()["dropped_closed"] == 3
    assert a.pending == 0 and b.pending == 0
    a.close()
    b.close()  # idempotent


def test_close_from_inside_deliver() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock)
    rb.on_deliver = lambda f: b.close()
    a.send(b"1")
    a.send(b"2")
    assert b.poll() is None
    assert rb.frames == [b"1"]
    assert a.stats()["dropped_closed"] == 1


def test_stats_keys() -> None:
    a, _ = link.pipe()
    assert set(a.stats()) == {
        "tx_frames",
        "tx_bytes",
        "rx_frames",
        "rx_bytes",
        "dropped_loss",
        "dropped_queue",
        "dropped_mtu",
        "dropped_closed",
        "duplicated",
        "reordered",
        "corrupted",
    }


# -- segmentation offload ------------------------------------------------------------------------


def _super_packet(proto: int, payload_len: int, l2: bool) -> bytearray:
    from aionetstack.wire.ipv4 import pack_ipv4
    from aionetstack.wire.tcp import ACK, pack_tcp

    src, dst = b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02"
    l3 = 14 if l2 else 0
    payload = bytes(i & 0xFF for i in range(payload_len))
    if proto == 6:
        buf = bytearray(l3 + 20 + 20 + payload_len)
        l4 = pack_tcp(buf, l3 + 20, src=src, dst=dst, sport=1, dport=2, seq=1000, ack=5,
                      flags=ACK, window=100, payload=payload)
    else:
        l4 = 8 + payload_len
        buf = bytearray(l3 + 20 + l4)
        buf[l3 + 20:l3 + 24] = b"\x00\x01\x00\x02"
        buf[l3 + 24:l3 + 26] = l4.to_bytes(2, "big")
        buf[l3 + 28:] = payload
    pack_ipv4(buf, l3, src=src, dst=dst, protocol=proto, payload_len=l4)
    if l2:
        buf[12:14] = b"\x08\x00"
    return buf


def test_gso_caps_and_refusal() -> None:
    a, _ = link.pipe(seed=1)
    assert a.caps.gso_max_size == 0
    with pytest.raises(RuntimeError):
        a.send_gso(_super_packet(6, 4000, False), 1460)
    g, _ = link.pipe(seed=1, gso=True)
    assert g.caps.gso_max_size == 65535


@pytest.mark.parametrize("l2", [False, True])
def test_gso_tcp_super_segment_passes_whole_on_an_intact_pipe(l2: bool) -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, gso=True, l2=l2, mtu=1500)
    pkt = _super_packet(6, 20000, l2)
    a.send_gso(pkt, 1460)
    run(clock, a, b)
    assert rb.frames == [bytes(pkt)]
    assert a.stats()["tx_frames"] == 1 and b.stats()["rx_bytes"] == len(pkt)


@pytest.mark.parametrize("kwargs", [{"gso": True, "delay": 0.001},
                                    {"gso": True, "corrupt": 0.0, "loss": 0.0, "jitter": 0.001}])
def test_gso_is_segmented_on_an_impaired_pipe(kwargs: dict[str, object]) -> None:
    from aionetstack.wire.ipv4 import parse_ipv4
    from aionetstack.wire.tcp import parse_tcp

    clock = ManualClock()
    a, b, _, rb = attached(clock, mtu=1500, **kwargs)
    pkt = _super_packet(6, 4000, False)
    a.send_gso(pkt, 1460)
    run(clock, a, b)
    assert len(rb.frames) == 3
    data = b""
    seqs = []
    for f in rb.frames:
        h = parse_tcp(parse_ipv4(memoryview(f)).payload)
        seqs.append(h.seq)
        data += bytes(h.payload)
    assert seqs == [1000, 2460, 3920]
    assert data == bytes(i & 0xFF for i in range(4000))


def test_gso_udp_is_split_into_datagrams() -> None:
    clock = ManualClock()
    a, b, _, rb = attached(clock, gso=True)
    a.send_gso(_super_packet(17, 3000, False), 1000)
    run(clock, a, b)
    assert [len(f) for f in rb.frames] == [1028, 1028, 1028]
