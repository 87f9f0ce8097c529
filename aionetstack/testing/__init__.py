"""Test doubles users can import: a virtual network of stacks on one manual clock.

    net = VirtualNetwork(seed=1)
    a, b = net.stack(), net.stack()
    ea, eb = link.pipe(l2=True, delay=0.01, loss=0.05, seed=1)
    a.add_nic(ea, ["198.18.0.1/24"]); b.add_nic(eb, ["198.18.0.2/24"])
    ...
    net.run(until=lambda: got_reply, timeout=5.0)   # virtual seconds, instant in real time

Every stack shares the network's ``ManualClock``; ``run`` jumps the clock from deadline to
deadline, so a test of minutes of protocol time runs in milliseconds and replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from aionetstack.clock import ManualClock
from aionetstack.stack.stack import CoreStack


class VirtualNetwork:
    def __init__(self, seed: int = 0, start: float = 1000.0) -> None:
        self.clock = ManualClock(start)
        self.seed = seed
        self.stacks: list[CoreStack] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def stack(self, **options: Any) -> CoreStack:
        s = CoreStack(clock=self.clock, rng=random.Random(self.seed * 1000 + len(self.stacks)),
                      **options)
        self.stacks.append(s)
        return s

    def settle(self) -> None:
        """Run everything due at the current instant until nothing more is."""
        now = self.clock.now
        for _ in range(100000):
            progressed = False
            for s in self.stacks:
                if s.closed:
                    continue
                d = s.next_deadline()
                if d is not None and d <= now:
                    s.poll(now)
                    progressed = True
            if not progressed:
                return
        raise RuntimeError("the network did not settle (a timer keeps re-arming at 'now')")

    def next_deadline(self) -> float | None:
        ds = [d for s in self.stacks if not s.closed if (d := s.next_deadline()) is not None]
        return min(ds) if ds else None

    def run(self, duration: float | None = None, *, until: Callable[[], bool] | None = None,
            timeout: float = 600.0) -> bool:
        """Advance virtual time.

        With ``until``: stop as soon as it returns true (returns True), or after ``timeout``
        virtual seconds (returns False).  With ``duration``: run exactly that long.  Without
        either: run until no timer is pending.
        """
        end = self.clock.now + (duration if duration is not None else timeout)
        while True:
            self.settle()
            if until is not None and until():
                return True
            nxt = self.next_deadline()
            if nxt is None or nxt > end:
                if duration is not None:
                    self.clock.set(max(end, self.clock.now))
                    self.settle()
                return until() if until is not None else nxt is None
            self.clock.set(max(nxt, self.clock.now))


__all__ = ["ManualClock", "VirtualNetwork"]
