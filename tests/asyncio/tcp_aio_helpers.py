"""Helpers for the asyncio TCP tests: two stacks on a pipe with fast TCP timers, a recording
protocol, and leak checks (endpoints, ports and timers back to zero)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aionetstack import Stack, link
from aionetstack.link.pipe import PipeEnd
from aionetstack.transport.tcp import TcpProtocol, install_tcp

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "fd00::1", "fd00::2"
UNROUTABLE4 = "198.19.7.7"  # inside 198.18.0.0/15, outside both stacks' /24: no route


def tcp_of(stack: Stack) -> TcpProtocol:
    tcp: TcpProtocol | None = getattr(stack, "tcp", None)
    return tcp if tcp is not None else install_tcp(stack)


def fast_tcp(stack: Stack, **overrides: Any) -> TcpProtocol:
    """Small retry limits and timers so failure paths finish in well under a second."""
    tcp = tcp_of(stack)
    settings: dict[str, Any] = {
        "initial_rto": 0.05, "min_rto": 0.01, "max_rto": 0.08, "syn_retries": 2,
        "synack_retries": 2, "data_retries": 4, "msl": 0.05, "fin_timeout": 0.3,
        "delack": 0.002,
    }
    settings.update(overrides)
    for k, v in settings.items():
        assert hasattr(tcp, k), k
        setattr(tcp, k, v)
    return tcp


@dataclass
class Net:
    a: Stack
    b: Stack
    a_end: PipeEnd
    b_end: PipeEnd


@contextlib.asynccontextmanager
async def tcp_pair(*, fast: bool = True, **pipe_options: Any) -> AsyncIterator[Net]:
    """Two stacks joined by a pipe (L3 unless ``l2=True``: no neighbour timers to wait for)."""
    pipe_options.setdefault("l2", False)
    pipe_options.setdefault("seed", 7)
    a_end, b_end = link.pipe(**pipe_options)
    async with Stack(seed=1) as a, Stack(seed=2) as b:
        a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
        b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
        if fast:
            fast_tcp(a)
            fast_tcp(b)
        yield Net(a, b, a_end, b_end)


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.002)


async def assert_no_leaks(*stacks: Stack, timeout: float = 3.0) -> None:
    """Every endpoint gone, every port released, every stack timer expired."""
    await wait_until(lambda: all(len(tcp_of(s).endpoints) == 0 for s in stacks), timeout,
                     "no TCP endpoints")
    await wait_until(lambda: all(len(s.ports) == 0 for s in stacks), timeout, "no ports")
    await wait_until(lambda: all(len(s.timers) == 0 for s in stacks), timeout, "no timers")
    for s in stacks:
        assert not tcp_of(s).connections
        assert not tcp_of(s).time_wait
        assert not tcp_of(s).listeners


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes, fast to make."""
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048  # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


def sha(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class Rec(asyncio.Protocol):
    """Records every callback; ``keep_open`` is what ``eof_received`` returns."""

    def __init__(self, keep_open: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.keep_open = keep_open
        self.transport: asyncio.Transport | None = None
        self.events: list[str] = []
        self.data = bytearray()
        self.made: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.lost_calls = 0
        self.pauses = 0
        self.resumes = 0
        self._grew = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        assert not self.events, "connection_made must come first"
        self.events.append("made")
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        assert "eof" not in self.events and "lost" not in self.events
        assert isinstance(data, bytes)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self._grew.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.eof.set_result(None)
        self._grew.set()
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)
        self._grew.set()

    def pause_writing(self) -> None:
        self.pauses += 1
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.resumes += 1
        self.events.append("resume")

    async def wait_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        async def loop() -> None:
            while len(self.data) < n:
                if self.lost.done() or self.eof.done():
                    raise AssertionError(f"closed after {len(self.data)} of {n} bytes")
                self._grew.clear()
                await self._grew.wait()

        await asyncio.wait_for(loop(), timeout)
        return bytes(self.data)


class Factory:
    """A protocol factory that remembers what it made; ``accepted.get()`` waits for the next."""

    def __init__(self, cls: Callable[[], asyncio.BaseProtocol] = Rec) -> None:
        self.cls = cls
        self.made: list[Any] = []
        self.accepted: asyncio.Queue[Any] = asyncio.Queue()

    def __call__(self) -> Any:
        p = self.cls()
        self.made.append(p)
        self.accepted.put_nowait(p)
        return p

    async def next(self, timeout: float = 3.0) -> Any:
        p = await asyncio.wait_for(self.accepted.get(), timeout)
        await asyncio.wait_for(p.made, timeout) if hasattr(p, "made") else None
        return p
