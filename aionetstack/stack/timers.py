"""One deadline structure per stack.

A binary heap of ``(at, seq, timer, generation)`` entries with lazy deletion.  Protocol timers
(RTO, delayed ACK, neighbour retries) are re-armed far more often than they fire, and usually to a
*later* time: such a move only updates ``timer.deadline``; the old heap entry stays, fires early,
sees the later deadline and re-queues itself.  Only moving a timer *earlier* pushes a new entry.
So the common "push the RTO forward on every ACK" costs one attribute write.

``on_earliest`` (set by a driver) is called with the new earliest time whenever an entry is pushed
ahead of the current head, so an event-loop driver keeps exactly one wake-up armed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

_Entry = tuple[float, int, "Timer", int]


class Timer:
    """A re-armable one-shot timer owned by a ``Timers`` heap."""

    __slots__ = ("_gen", "_queued_at", "_timers", "callback", "deadline")

    def __init__(self, timers: Timers, callback: Callable[[float], Any]) -> None:
        self._timers = timers
        self.callback = callback
        self.deadline: float | None = None
        self._queued_at: float | None = None  # time of this timer's live heap entry
        self._gen = 0

    @property
    def armed(self) -> bool:
        return self.deadline is not None

    def schedule(self, at: float) -> None:
        """Fire at ``at`` (replacing any earlier schedule)."""
        self.deadline = at
        q = self._queued_at
        if q is not None and q <= at:
            return  # the live entry fires first and re-queues for the later deadline
        self._timers._push(self, at)

    def schedule_if_earlier(self, at: float) -> None:
        d = self.deadline
        if d is None or at < d:
            self.deadline = at  # schedule(at), inline: links wake their NIC this way per frame
            q = self._queued_at
            if q is None or at < q:
                self._timers._push(self, at)

    def cancel(self) -> None:
        self.deadline = None

    def __repr__(self) -> str:
        return f"<Timer deadline={self.deadline} cb={getattr(self.callback, '__qualname__', '?')}>"


class Timers:
    """The stack's deadline heap."""

    __slots__ = ("_compact_at", "_heap", "_seq", "on_earliest")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = 0
        self._compact_at = 256  # heap size at which to look for garbage next
        self.on_earliest: Callable[[float], None] | None = None

    def timer(self, callback: Callable[[float], Any]) -> Timer:
        return Timer(self, callback)

    def call_at(self, at: float, callback: Callable[[float], Any]) -> Timer:
        t = Timer(self, callback)
        t.schedule(at)
        return t

    def _push(self, timer: Timer, at: float) -> None:
        timer._gen += 1
        timer._queued_at = at
        self._seq += 1
        heap = self._heap
        head = heap[0][0] if heap else None
        heapq.heappush(heap, (at, self._seq, timer, timer._gen))
        if (head is None or at < head) and self.on_earliest is not None:
            self.on_earliest(at)
        if len(heap) > self._compact_at:
            # the O(n) scan runs only when the heap has doubled since the last one: amortised O(1)
            if len(heap) > 4 * self._live_estimate():
                self._compact()
            self._compact_at = max(256, 2 * len(self._heap))

    def _live_estimate(self) -> int:
        return sum(1 for e in self._heap if e[3] == e[2]._gen and e[2].deadline is not None)

    def _compact(self) -> None:
        live = [e for e in self._heap if e[3] == e[2]._gen and e[2].deadline is not None]
        for e in self._heap:
            t = e[2]
            if e[3] == t._gen and t.deadline is None:
                t._queued_at = None
        heapq.heapify(live)
        self._heap = live

    def _settle(self) -> None:
        """Drop stale and cancelled entries at the head; re-queue deferred ones."""
        heap = self._heap
        while heap:
            at, _, t, gen = heap[0]
            if gen != t._gen:
                heapq.heappop(heap)
                continue
            d = t.deadline
            if d is None:
                heapq.heappop(heap)
                t._queued_at = None
                continue
            if d > at:
                heapq.heappop(heap)
                t._gen += 1
                t._queued_at = d
                self._seq += 1
                heapq.heappush(heap, (d, self._seq, t, t._gen))
                continue
            return

    def next_deadline(self) -> float | None:
        self._settle()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer whose deadline is <= ``now``; returns how many fired."""
        fired = 0
        heap = self._heap
        pop = heapq.heappop
        while heap:
            at, _, t, gen = heap[0]
            if at > now:
                break
            pop(heap)
            # what ``_settle`` does at the head, for entries that are due
            if gen != t._gen:
                continue  # stale
            d = t.deadline
            if d is None:  # cancelled
                t._queued_at = None
                continue
            if d > at:  # moved later: re-queue (it may still be due)
                t._gen = gen = gen + 1
                t._queued_at = d
                self._seq += 1
                heapq.heappush(heap, (d, self._seq, t, gen))
                continue
            t._queued_at = None
            t.deadline = None
            fired += 1
            t.callback(now)
        return fired

    def __len__(self) -> int:
        """Armed timers (an O(n) count, for tests and leak checks)."""
        return sum(1 for e in self._heap if e[3] == e[2]._gen and e[2].deadline is not None)
