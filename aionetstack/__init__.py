"""aionetstack: a userspace TCP/IP stack for Python, native to asyncio.

    from aionetstack import Stack, link
    a_end, b_end = link.pipe(l2=True)
    async with Stack() as a, Stack() as b:
        a.add_nic(a_end, ["198.18.0.1/24", "fd00::1/64"])
        b.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        rtt = await a.ping("fd00::2")
"""

# ``_accel`` first: it picks the compiled core or the pure sources
from aionetstack import _accel, errors, link
from aionetstack.asyncio.stack import Stack
from aionetstack.clock import ManualClock
from aionetstack.stack.stack import CoreStack
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT

__version__ = "0.1.0"
compiled = _accel.compiled  # the mypyc-compiled core is in use (aionetstack._accel)

__all__ = [
    "EVENT_ERR",
    "EVENT_HUP",
    "EVENT_IN",
    "EVENT_OUT",
    "CoreStack",
    "ManualClock",
    "Stack",
    "__version__",
    "compiled",
    "errors",
    "link",
]
