"""The stack's deadline heap (``aionetstack.stack.timers``): lazy re-arming, ordering,
``next_deadline``, the ``on_earliest`` driver hook and compaction."""

from __future__ import annotations

import random

import pytest

from aionetstack.stack.timers import Timer, Timers


class Log:
    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []

    def cb(self, name: str):  # type: ignore[no-untyped-def]
        return lambda now: self.fired.append((name, now))


def test_schedule_and_fire() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    assert not t.armed and t.deadline is None
    t.schedule(10.0)
    assert t.armed and len(ts) == 1
    assert ts.next_deadline() == 10.0
    assert ts.run_due(9.999) == 0
    assert ts.run_due(12.0) == 1
    assert log.fired == [("a", 12.0)]  # called with the time run_due was given
    assert not t.armed and len(ts) == 0
    assert ts.next_deadline() is None
    assert ts.run_due(100.0) == 0


def test_cancel() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    t.schedule(10.0)
    t.cancel()
    assert not t.armed
    assert ts.next_deadline() is None
    assert ts.run_due(100.0) == 0
    assert log.fired == []
    t.cancel()  # idempotent
    t.schedule(20.0)  # and re-armable
    assert ts.run_due(20.0) == 1


def test_reschedule_later_is_lazy() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    t.schedule(10.0)
    t.schedule(20.0)
    t.schedule(30.0)
    assert len(ts._heap) == 1  # no new heap entries for later moves
    assert t.deadline == 30.0
    assert ts.next_deadline() == 30.0  # exact, not the stale 10
    assert ts.run_due(29.0) == 0
    assert log.fired == []
    assert ts.run_due(30.0) == 1
    assert log.fired == [("a", 30.0)]
    assert ts.run_due(1000.0) == 0  # fired once


def test_reschedule_earlier_fires_once_at_the_new_time() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    t.schedule(20.0)
    t.schedule(10.0)
    assert ts.next_deadline() == 10.0
    assert ts.run_due(10.0) == 1
    assert ts.run_due(20.0) == 0  # the entry for 20 is stale
    assert log.fired == [("a", 10.0)]
    assert ts.next_deadline() is None


def test_lazy_then_earlier_then_later() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    t.schedule(10.0)
    t.schedule(30.0)
    t.schedule(25.0)  # still later than the live entry: lazy
    assert ts.next_deadline() == 25.0
    t.schedule(5.0)
    assert ts.next_deadline() == 5.0
    t.schedule(7.5)
    assert ts.next_deadline() == 7.5
    assert ts.run_due(7.4) == 0
    assert ts.run_due(8.0) == 1
    assert ts.run_due(100.0) == 0
    assert log.fired == [("a", 8.0)]


def test_schedule_if_earlier() -> None:
    ts, log = Timers(), Log()
    t = ts.timer(log.cb("a"))
    t.schedule_if_earlier(10.0)
    t.schedule_if_earlier(20.0)
    assert t.deadline == 10.0
    t.schedule_if_earlier(5.0)
    assert t.deadline == 5.0
    assert ts.next_deadline() == 5.0


def test_run_due_order_and_ties() -> None:
    ts, log = Timers(), Log()
    plan = [("c", 3.0), ("a", 1.0), ("t1", 2.0), ("t2", 2.0), ("t3", 2.0), ("late", 9.0)]
    timers = {name: ts.call_at(at, log.cb(name)) for name, at in plan}
    assert ts.run_due(5.0) == 5
    assert [n for n, _ in log.fired] == ["a", "t1", "t2", "t3", "c"]  # ties: arming order
    assert timers["late"].armed
    assert ts.next_deadline() == 9.0


def test_callbacks_may_arm_and_cancel_timers() -> None:
    ts, log = Timers(), Log()
    second = ts.timer(log.cb("second"))
    victim = ts.timer(log.cb("victim"))
    victim.schedule(3.0)

    def first_cb(now: float) -> None:
        log.fired.append(("first", now))
        second.schedule(now)  # due right now: runs in the same run_due
        victim.cancel()
        ts.call_at(now + 1.0, log.cb("later"))

    ts.call_at(1.0, first_cb)
    assert ts.run_due(5.0) == 2
    assert log.fired == [("first", 5.0), ("second", 5.0)]  # not the victim; "later" is at 6
    assert ts.next_deadline() == 6.0


def test_timer_rearming_itself_in_its_callback() -> None:
    ts = Timers()
    fired: list[float] = []
    t: Timer

    def tick(now: float) -> None:
        fired.append(now)
        if len(fired) < 5:
            t.schedule(now + 1.0)

    t = ts.timer(tick)
    t.schedule(0.0)
    now = 0.0
    while (d := ts.next_deadline()) is not None:
        now = d
        ts.run_due(now)
    assert fired == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_on_earliest_only_when_the_head_moves_earlier() -> None:
    ts = Timers()
    calls: list[float] = []
    ts.on_earliest = calls.append
    t1, t2, t3, t4 = (ts.timer(lambda now: None) for _ in range(4))
    t1.schedule(10.0)
    assert calls == [10.0]  # first deadline
    t2.schedule(20.0)
    assert calls == [10.0]  # behind the head
    t3.schedule(5.0)
    assert calls == [10.0, 5.0]  # new head
    t1.schedule(30.0)  # lazy move later: no call
    t2.schedule(7.0)  # earlier for t2, but not ahead of the head
    assert calls == [10.0, 5.0]
    t4.schedule(5.0)  # equal to the head: not earlier
    assert calls == [10.0, 5.0]
    t4.schedule(1.0)
    assert calls == [10.0, 5.0, 1.0]
    # the driver wakes at 1: everything due runs, and next_deadline says when to wake next
    assert ts.run_due(1.0) == 1
    assert ts.next_deadline() == 5.0
    assert ts.run_due(5.0) == 1
    assert ts.next_deadline() == 7.0
    assert ts.run_due(7.0) == 1
    assert ts.next_deadline() == 30.0
    assert calls == [10.0, 5.0, 1.0]


def test_no_missed_wakeup_under_random_operations() -> None:
    """Driven like an event loop that sleeps until the earliest of the last ``next_deadline``
    and every ``on_earliest`` since: it never wakes after a deadline, and every timer fires
    exactly once at the first wake-up at or after its final deadline."""
    rng = random.Random(5)
    ts = Timers()
    hooks: list[float] = []
    ts.on_earliest = hooks.append
    fired: dict[int, list[float]] = {}
    timers = [ts.timer(lambda now, i=i: fired.setdefault(i, []).append(now)) for i in range(60)]
    want: dict[int, float] = {}
    now = 0.0
    wake: float | None = None
    total = 0
    for _ in range(400):
        for _ in range(rng.randrange(1, 25)):  # user calls at `now`
            i = rng.randrange(60)
            if rng.random() < 0.8:
                at = now + rng.choice((0.0, rng.uniform(0.0, 10.0)))
                timers[i].schedule(at)
                want[i] = at
            else:
                timers[i].cancel()
                want.pop(i, None)
        candidates = [x for x in [wake, *hooks] if x is not None]
        hooks.clear()
        wake = min(candidates) if candidates else None
        if wake is None:
            assert not want
            now += 1.0
            continue
        assert all(v >= wake for v in want.values())  # never sleeping past a deadline
        now = max(now, wake)
        due = {k: v for k, v in want.items() if v <= now}
        before = {k: len(fired.get(k, [])) for k in due}
        total += ts.run_due(now)
        for k in due:
            assert fired[k][before[k]:] == [now]
            del want[k]
        wake = ts.next_deadline()
        assert wake == (min(want.values()) if want else None)
    assert total == sum(len(v) for v in fired.values())
    assert all(timers[k].deadline == v for k, v in want.items())


def test_compaction_keeps_behaviour() -> None:
    ts = Timers()
    fired: list[tuple[int, float]] = []
    timers = [ts.timer(lambda now, i=i: fired.append((i, now))) for i in range(400)]
    for i, t in enumerate(timers):
        t.schedule(1000.0 + i)
    # cancel most, and move the rest earlier several times (each move pushes an entry)
    for i, t in enumerate(timers):
        if i % 10:
            t.cancel()
    live = [i for i in range(400) if i % 10 == 0]
    for round_ in range(6):
        for i in live:
            timers[i].schedule(500.0 - round_ * 50 + i / 1000)
    assert len(ts._heap) < 300  # compaction ran (640 entries were pushed, 40 are live)
    assert len(ts) == len(live)
    assert ts.next_deadline() == pytest.approx(250.0)
    # a cancelled timer whose entry was compacted away can be armed again
    timers[1].schedule(260.0)
    ts.run_due(10_000.0)
    assert [i for i, _ in fired] == [*live, 1]
    assert [now for _, now in fired] == [10_000.0] * (len(live) + 1)
    assert ts.next_deadline() is None


def test_compaction_check_is_amortised(monkeypatch: pytest.MonkeyPatch) -> None:
    """With many live timers, pushes must not rescan the whole heap each time."""
    scans = 0
    original = Timers._live_estimate

    def counting(self: Timers) -> int:
        nonlocal scans
        scans += 1
        return original(self)

    monkeypatch.setattr(Timers, "_live_estimate", counting)
    ts = Timers()
    timers = [ts.timer(lambda now: None) for _ in range(5000)]
    for i, t in enumerate(timers):
        t.schedule(10_000.0 - i)  # every push is a new entry
    for i, t in enumerate(timers):
        t.schedule(5_000.0 - i)  # earlier again: another push each
    assert len(ts) == 5000
    assert scans < 50
