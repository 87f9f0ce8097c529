"""Two stacks on an in-memory pipe, fast TCP timers and leak checks, for the compat tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable

from aionetstack import Stack, link
from aionetstack.transport.tcp import TcpProtocol, install_tcp

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "fd00::1", "fd00::2"


def tcp_of(stack: Stack) -> TcpProtocol:
    tcp: TcpProtocol | None = getattr(stack, "tcp", None)
    return tcp if tcp is not None else install_tcp(stack)


@contextlib.asynccontextmanager
async def stacks(**pipe_options: object) -> AsyncIterator[tuple[Stack, Stack]]:
    a_end, b_end = link.pipe(seed=3, **pipe_options)  # type: ignore[arg-type]
    async with Stack(seed=1) as a, Stack(seed=2) as b:
        a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
        b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
        for s in (a, b):
            tcp = tcp_of(s)
            tcp.min_rto, tcp.max_rto, tcp.initial_rto = 0.01, 0.08, 0.05
            tcp.syn_retries = tcp.synack_retries = 2
            tcp.data_retries, tcp.msl, tcp.delack = 4, 0.05, 0.002
        yield a, b


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.002)


async def assert_no_leaks(*ss: Stack, timeout: float = 3.0) -> None:
    await wait_until(lambda: all(len(tcp_of(s).endpoints) == 0 for s in ss), timeout,
                     "no TCP endpoints")
    await wait_until(lambda: all(len(s.ports) == 0 and len(s.timers) == 0 for s in ss),
                     timeout, "no ports and no timers")


def payload(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048
    return (block * (n // len(block) + 1))[:n]


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()
