"""Injected time and randomness.

The sans-IO core never reads the system clock or a global random generator: a ``Stack`` is handed
a ``Clock`` (any zero-argument callable returning seconds as a float, monotonic) and a
``RandomSource`` (``random.Random`` and ``random.SystemRandom`` both fit).  Tests use
``ManualClock`` and a seeded ``random.Random`` and so replay exactly.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float: ...


class RandomSource(Protocol):
    def getrandbits(self, k: int, /) -> int: ...

    def random(self) -> float: ...


class ManualClock:
    """A clock that moves only when told to."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds})")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError(f"a clock cannot go backwards ({when} < {self._now})")
        self._now = float(when)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
