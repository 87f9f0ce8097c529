"""Waiter queues (gVisor ``waiter.Queue``): how endpoints announce readiness.

An endpoint owns a ``WaiterQueue``; whoever waits (the asyncio adapter, an embedder's poll loop)
registers a callback with an event mask and then *re-checks* the endpoint's readiness, so a
notification that raced the registration is never lost.  ``notify`` calls every entry whose mask
intersects the events.  Callbacks must not raise; they usually just resolve a future.
"""

from __future__ import annotations

from collections.abc import Callable

EVENT_IN = 0x01
EVENT_PRI = 0x02
EVENT_OUT = 0x04
EVENT_ERR = 0x08
EVENT_HUP = 0x10
EVENT_ALL = EVENT_IN | EVENT_PRI | EVENT_OUT | EVENT_ERR | EVENT_HUP


def _unregistered(events: int) -> None:
    """The callback of an entry that has been unregistered."""


class WaiterEntry:
    __slots__ = ("callback", "mask")

    def __init__(self, callback: Callable[[int], None], mask: int) -> None:
        self.callback = callback
        self.mask = mask


class WaiterQueue:
    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[WaiterEntry] = []

    def register(self, callback: Callable[[int], None], mask: int = EVENT_ALL) -> WaiterEntry:
        entry = WaiterEntry(callback, mask)
        self._entries.append(entry)
        return entry

    def unregister(self, entry: WaiterEntry) -> None:
        try:
            self._entries.remove(entry)
        except ValueError:
            return
        # the entry is done with: drop the callback, which usually refers (as a bound method)
        # to an owner that keeps the entry, so the owner is not left in a reference cycle
        entry.callback = _unregistered

    def notify(self, events: int) -> None:
        if not self._entries:
            return
        for entry in tuple(self._entries):
            if entry.mask & events:
                entry.callback(events & entry.mask)

    def __len__(self) -> int:
        return len(self._entries)
