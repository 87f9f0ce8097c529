"""Awaiting a core endpoint's waiter queue from asyncio."""

from __future__ import annotations

import asyncio

from aionetstack.stack.waiter import WaiterQueue


async def wait_events(loop: asyncio.AbstractEventLoop, waiter: WaiterQueue, mask: int) -> None:
    """Return after ``waiter`` next notifies any event in ``mask`` (one wake-up: the caller
    re-checks its condition and waits again if needed)."""
    fut: asyncio.Future[None] = loop.create_future()

    def wake(_events: int) -> None:
        if not fut.done():
            fut.set_result(None)

    entry = waiter.register(wake, mask)
    try:
        await fut
    finally:
        waiter.unregister(entry)
