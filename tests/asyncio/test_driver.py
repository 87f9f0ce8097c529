"""The asyncio driver: one ``loop.call_at`` handle per stack, re-armed only when needed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aio_helpers import A4, A6, B4, B6, Echo, Recorder, stack_pair

from aionetstack import Stack, link
from aionetstack.asyncio.stack import Stack as AsyncioStack


class CallAtSpy:
    """Wraps ``loop.call_at`` and records the handles a stack's driver creates.

    Only calls whose callback is ``Stack._fire`` are recorded (``asyncio.sleep`` and friends use
    ``call_at`` too).  ``fired`` holds the handles whose callback has run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.records: list[tuple[Any, float, asyncio.TimerHandle]] = []
        self.fired: set[int] = set()
        self._orig = loop.call_at

    def __call__(self, when: float, callback: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__func__", None) is not AsyncioStack._fire:
            return self._orig(when, callback, *args, **kwargs)
        index = len(self.records)

        def run(*a: Any) -> None:
            self.fired.add(index)
            callback(*a)

        handle = self._orig(when, run, *args, **kwargs)
        self.records.append((getattr(callback, "__self__", None), when, handle))
        return handle

    def count(self, stack: Stack | None = None, since: int = 0) -> int:
        return sum(1 for s, _, _ in self.records[since:] if stack is None or s is stack)

    def pending(self, stack: Stack) -> list[asyncio.TimerHandle]:
        """Handles of ``stack`` that neither ran nor were cancelled."""
        return [h for i, (s, _, h) in enumerate(self.records)
                if s is stack and i not in self.fired and not h.cancelled()]


@pytest.fixture
async def spy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CallAtSpy]:
    loop = asyncio.get_running_loop()
    s = CallAtSpy(loop)
    monkeypatch.setattr(loop, "call_at", s)
    yield s


async def _wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


# -- re-arming -------------------------------------------------------------------------------------

async def test_spy_sees_the_running_loop(spy: CallAtSpy) -> None:
    assert asyncio.get_running_loop() is spy.loop


async def test_handle_rearmed_only_when_the_earliest_deadline_moves_earlier(
        spy: CallAtSpy) -> None:
    async with Stack() as s:
        loop = asyncio.get_running_loop()
        assert s.next_deadline() is None and s._handle is None
        assert spy.count(s) == 0
        fired: list[tuple[str, float]] = []

        def cb(name: str) -> Callable[[float], None]:
            return lambda now: fired.append((name, now))

        base = loop.time()
        t_late = s.timers.call_at(base + 0.30, cb("late"))
        assert spy.count(s) == 1 and s._armed_at == base + 0.30
        s.timers.call_at(base + 0.40, cb("later"))  # later than the armed deadline: nothing
        t_late.schedule(base + 0.35)  # pushed back: nothing either
        assert spy.count(s) == 1
        first_handle = s._handle
        s.timers.call_at(base + 0.10, cb("early"))  # earlier: re-armed, old handle cancelled
        assert spy.count(s) == 2 and s._armed_at == base + 0.10
        assert first_handle is not None and first_handle.cancelled()
        s.timers.call_at(base + 0.10, cb("same"))  # equal to the armed deadline: nothing
        assert spy.count(s) == 2

        await _wait_for(lambda: len(fired) == 2)
        assert [n for n, _ in fired] == ["early", "same"]
        assert all(now >= base + 0.10 for _, now in fired)
        assert spy.count(s) == 3  # one re-arm, for the next deadline (base + 0.35)
        assert s._armed_at == pytest.approx(base + 0.35)
        await _wait_for(lambda: len(fired) == 4, timeout=3.0)
        assert [n for n, _ in fired] == ["early", "same", "late", "later"]
        assert fired[2][1] >= base + 0.35 and fired[3][1] >= base + 0.40
        assert s._handle is None and s.next_deadline() is None
        assert spy.count(s) == 4
        assert spy.pending(s) == []


async def test_cancelled_timer_leaves_at_most_one_spurious_wakeup(spy: CallAtSpy) -> None:
    async with Stack() as s:
        loop = asyncio.get_running_loop()
        t = s.timers.call_at(loop.time() + 0.05, lambda now: pytest.fail("cancelled timer ran"))
        t.cancel()
        await asyncio.sleep(0.1)
        assert spy.count(s) == 1
        assert s._handle is None and spy.pending(s) == []


async def test_cancelled_due_now_timer_still_leaves_the_next_deadline_armed(
        spy: CallAtSpy) -> None:
    """The call_soon for a timer due at once finds it cancelled: it runs nothing but arms the
    next deadline."""
    async with Stack() as s:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        s.timers.call_at(loop.time() + 0.02, fired.append)  # armed: a call_at handle
        now = s.timers.call_at(loop.time(), lambda now: pytest.fail("cancelled timer ran"))
        assert s._soon is not None
        now.cancel()
        await asyncio.sleep(0)  # the call_soon runs, finds nothing due
        assert s._soon is None and not fired
        assert s._handle is not None and not s._handle.cancelled()
        await asyncio.sleep(0.05)
        assert len(fired) == 1


async def test_timer_due_in_the_past_fires_promptly_with_now_not_before_deadline() -> None:
    async with Stack() as s:
        loop = asyncio.get_running_loop()
        got: list[float] = []
        at = loop.time() - 1.0
        s.timers.call_at(at, got.append)
        await _wait_for(lambda: bool(got), timeout=0.5)
        assert got[0] >= at
        assert abs(got[0] - loop.time()) < 0.1
        assert s.now() == pytest.approx(loop.time(), abs=0.05)  # the stack's clock is the loop's


async def test_hundred_datagrams_do_not_create_a_handle_each(spy: CallAtSpy) -> None:
    async with stack_pair() as (a, b):
        await a.ping(B4)
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        assert isinstance(cp, Recorder)
        await asyncio.sleep(0)
        since = len(spy.records)
        for i in range(100):  # one burst
            ct.sendto(b"%d" % i)
        await _wait_for(lambda: cp.datagrams.qsize() == 100)
        burst = spy.count(since=since)
        assert burst <= 10, burst

        since = len(spy.records)
        for i in range(100):  # interleaved: each datagram makes a wake-up per hop at most
            ct.sendto(b"%d" % i)
            await asyncio.sleep(0)
        await _wait_for(lambda: cp.datagrams.qsize() == 200)
        interleaved = spy.count(since=since)
        assert interleaved <= 2 * 100 + 10, interleaved
        assert spy.count(a, since) <= 100 + 5 and spy.count(b, since) <= 100 + 5


async def test_delayed_pipe_batches_wakeups(spy: CallAtSpy) -> None:
    async with stack_pair(delay=0.005) as (a, b):
        await a.ping(B4)
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        assert isinstance(cp, Recorder)
        await asyncio.sleep(0)
        since = len(spy.records)
        for i in range(500):
            ct.sendto(b"%d" % i)
            if i % 50 == 49:
                await asyncio.sleep(0)
        await _wait_for(lambda: cp.datagrams.qsize() == 500)
        assert spy.count(since=since) <= 60


# -- closing ---------------------------------------------------------------------------------

async def test_close_cancels_the_handle_and_leaves_no_timer(spy: CallAtSpy) -> None:
    async with stack_pair(delay=0.01) as (a, b):
        await a.ping(B4)
        await a.ping(B6)
        assert a._handle is not None  # neighbour-cache timers are pending
        handle = a._handle
        assert a.next_deadline() is not None
        a.close()
        assert a._handle is None and handle.cancelled()
        assert spy.pending(a) == []
        a.close()  # idempotent
        # traffic towards the closed stack does not wake it up
        with pytest.raises(TimeoutError):
            await b.ping(A4, timeout=0.1)
        assert a._handle is None and spy.pending(a) == []
        assert spy.pending(b)  # the other stack is alive and armed
    assert b._handle is None and spy.pending(b) == []


async def test_exiting_the_context_closes_everything(spy: CallAtSpy) -> None:
    async with stack_pair(delay=0.01) as (a, b):
        await a.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        await a.ping(B4)
    assert a.closed and b.closed
    assert a._handle is None and b._handle is None
    assert spy.pending(a) == [] and spy.pending(b) == []


async def test_closing_the_stack_from_inside_a_timer(spy: CallAtSpy) -> None:
    async with Stack() as s:
        loop = asyncio.get_running_loop()
        s.timers.call_at(loop.time() + 0.01, lambda now: s.close())
        s.timers.call_at(loop.time() + 0.5, lambda now: pytest.fail("ran after close"))
        await _wait_for(lambda: s.closed)
        await asyncio.sleep(0)
        assert s._handle is None and spy.pending(s) == []


async def test_timer_due_now_from_a_deferred_callback_fires_after_its_wakeups() -> None:
    """A timer due at once, pushed by a deferred callback, fires after the ``call_soon`` wake-ups
    that callback queued (so, e.g., a task's reply can carry an ACK the timer would send)."""
    async with stack_pair() as (a, _b):
        loop = asyncio.get_running_loop()
        order: list[str] = []
        fired = asyncio.Event()

        def deferred() -> None:
            a.timers.call_at(loop.time(), lambda now: (order.append("timer"), fired.set()))
            loop.call_soon(order.append, "wake-up")  # queued after the timer was pushed

        def kick(now: float) -> None:
            a.defer(deferred)  # from inside a timer run: queued, run right after the timers

        a.timers.call_at(loop.time(), kick)
        await asyncio.wait_for(fired.wait(), 2)
        assert order == ["wake-up", "timer"]


# -- errors ----------------------------------------------------------------------------------

async def test_exception_in_a_timer_goes_to_the_loop_exception_handler() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx))
    try:
        async with stack_pair(delay=0.005) as (a, _b):
            boom = RuntimeError("boom")
            ran: list[float] = []

            def explode(now: float) -> None:
                raise boom

            t0 = loop.time()
            a.timers.call_at(t0 + 0.01, explode)
            a.timers.call_at(t0 + 0.01, ran.append)  # due in the same run as the failing one
            a.timers.call_at(t0 + 0.05, ran.append)
            await _wait_for(lambda: len(ran) == 2)
            assert len(contexts) == 1
            assert contexts[0]["exception"] is boom
            assert "aionetstack" in contexts[0]["message"]
            # the stack and the loop carry on
            assert await a.ping(B4) > 0.0
            assert await a.ping(A6) >= 0.0
    finally:
        loop.set_exception_handler(None)


# -- loops -----------------------------------------------------------------------------------

async def _scenario() -> float:
    loop = asyncio.get_running_loop()
    async with stack_pair(delay=0.002) as (a, b):
        assert a.loop is loop and b.loop is loop
        rtt = await a.ping(B6)
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        assert isinstance(cp, Recorder)
        ct.sendto(b"ping")
        assert await cp.next_datagram() == (b"ping", (B4, 7))
        ct.close()
    return rtt


def test_fresh_stacks_on_consecutive_loops() -> None:
    assert asyncio.run(_scenario()) > 0.0
    assert asyncio.run(_scenario()) > 0.0
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_scenario()) > 0.0
    finally:
        loop.close()


async def test_nics_added_before_the_loop_binding() -> None:
    a_end, b_end = link.pipe(l2=True, delay=0.002, seed=1)
    a, b = Stack(), Stack()
    a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
    b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
    async with a, b:
        assert await a.ping(B4) > 0.0
        assert await b.ping(A6) > 0.0


def test_nics_added_outside_any_loop() -> None:
    a_end, b_end = link.pipe(l2=False, seed=1)
    a, b = Stack(), Stack()
    a.add_nic(a_end, [f"{A4}/24"])
    b.add_nic(b_end, [f"{B4}/24"])

    async def run() -> float:
        async with a, b:
            return await a.ping(B4)

    assert asyncio.run(run()) >= 0.0


class _OffsetClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is not ``time.monotonic`` (as a virtual-time loop's isn't)."""

    def time(self) -> float:
        return time.monotonic() + 10_000.0


def test_a_loop_with_its_own_clock_times_nics_added_before_it() -> None:
    # the stack takes the loop's clock when it binds; a link and a neighbour cache made before
    # that must read the same clock, or their deadlines (a delayed frame, an ARP/NDP entry's
    # age) are set in another time base than the stack's timers run on
    a_end, b_end = link.pipe(l2=True, delay=0.002, seed=3)
    a, b = Stack(), Stack()
    nic = a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
    b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])

    async def run() -> tuple[float, float]:
        async with a, b:
            now = asyncio.get_running_loop().time()
            assert nic.neigh4 is not None
            for clock in (a.now, a_end._clock, nic.neigh4._clock):
                assert clock is not None and clock() == pytest.approx(now, abs=1.0)
            return await a.ping(B4, timeout=2), await b.ping(A6, timeout=2)

    with asyncio.Runner(loop_factory=_OffsetClockLoop) as runner:
        rtt4, rtt6 = runner.run(run())
    assert 0.004 <= rtt4 < 1.0 and 0.004 <= rtt6 < 1.0  # two 2 ms hops each way round


# -- stats -----------------------------------------------------------------------------------

def _assert_plain(obj: object, path: str = "stats") -> None:
    if isinstance(obj, dict):
        assert type(obj) is dict, f"{path} is a {type(obj).__name__}, not a plain dict"
        for k, v in obj.items():
            assert type(k) is str, f"{path} has key {k!r}"
            _assert_plain(v, f"{path}[{k!r}]")
    else:
        assert type(obj) in (int, float), f"{path} = {obj!r}"


async def test_stats_are_plain_json_serialisable_dicts(tmp_path: Path) -> None:
    a_end, b_end = link.pipe(l2=True, corrupt=0.05, loss=0.05, delay=0.001, seed=2)
    async with Stack() as a, Stack() as b:
        a.add_nic(link.pcap(a_end, tmp_path / "a.pcap"), [f"{A4}/24", f"{A6}/64"])
        b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
        for dst in (B4, B6, A4, "203.0.113.1"):
            try:
                await a.ping(dst, timeout=0.3)
            except OSError:
                pass
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        ct, _ = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        for i in range(200):
            ct.sendto(b"x" * (i + 1))
        await asyncio.sleep(0.05)
        for s in (a, b):
            stats = s.stats()
            _assert_plain(stats)
            assert json.loads(json.dumps(stats)) == stats
            assert {"ipv4", "ipv6", "udp", "icmpv4", "icmpv6", "nics"} <= set(stats)
            assert stats["udp"]["sent"] > 0
        snapshot = a.stats()
        ct.sendto(b"later")
        await asyncio.sleep(0.01)
        assert a.stats()["udp"]["sent"] == snapshot["udp"]["sent"] + 1  # a copy, not a view
        assert a.stats()["nics"]["nic2"]["pcap_frames"] > 0
