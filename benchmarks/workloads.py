"""The asyncio workloads every case runs, the same code over the stack and over kernel sockets.

A *net* opens stream servers and connections: ``KernelLoopback`` uses asyncio's own kernel
sockets on 127.0.0.1, ``StackPipe`` two ``Stack``s joined by an in-memory ``link.pipe``.  The
workloads only see ``serve`` and ``connect``, so the stack and the kernel do exactly the same
job.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from benchmarks._kpeer import KERNEL_CC

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

STACK_A, STACK_B = "198.18.0.1", "198.18.0.2"
CHUNK = 65536


class Net(Protocol):
    async def serve(self, handler: Handler, *, backlog: int = 100) -> tuple[str, int]: ...

    async def connect(self, host: str, port: int) -> Streams: ...


class KernelLoopback:
    """asyncio streams over kernel sockets on 127.0.0.1, with the stack's congestion control
    (``KERNEL_CC``, CUBIC) rather than the machine's default."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def serve(self, handler: Handler, *, backlog: int = 100) -> tuple[str, int]:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=backlog,
                                         limit=CHUNK * 4)
        self.servers.append(srv)
        sock = srv.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, KERNEL_CC.encode())
        port: int = sock.getsockname()[1]  # (accepted sockets inherit the listener's choice)
        return "127.0.0.1", port

    async def connect(self, host: str, port: int) -> Streams:
        r, w = await asyncio.open_connection(host, port, limit=CHUNK * 4)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION,
                                              KERNEL_CC.encode())
        return r, w

    async def close(self) -> None:
        for s in self.servers:
            s.close()


class StackPipe:
    """Two stacks on one in-memory pipe: clients on ``a``, servers on ``b``."""

    def __init__(self, mtu: int = 1500, offload: bool = False,
                 max_connections: int | None = None) -> None:
        from aionetstack import Stack, link
        from aionetstack.stack.limits import Limits

        self.a_end, self.b_end = link.pipe(mtu=mtu, seed=1, gso=offload)
        # ``max_connections``: past the default cap (``Limits``), which guards against SYN floods
        limits = Limits() if max_connections is None else Limits(max_connections=max_connections)
        self.a = Stack(seed=1, limits=limits)
        self.b = Stack(seed=2, limits=limits)
        self.a.add_nic(self.a_end, [f"{STACK_A}/24"])
        self.b.add_nic(self.b_end, [f"{STACK_B}/24"])
        self.servers: list[Any] = []
        self._port = 5000

    async def serve(self, handler: Handler, *, backlog: int = 100) -> tuple[str, int]:
        self._port += 1
        srv = await self.b.start_server(handler, STACK_B, self._port, backlog=backlog,
                                        limit=CHUNK * 4)
        self.servers.append(srv)
        return STACK_B, self._port

    async def connect(self, host: str, port: int) -> Streams:
        return await self.a.open_connection(host, port, limit=CHUNK * 4)

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        self.a.close()
        self.b.close()


@contextlib.asynccontextmanager
async def open_net(kind: str, mtu: int = 1500, offload: bool = False) -> AsyncIterator[Net]:
    net: KernelLoopback | StackPipe = (KernelLoopback() if kind == "kernel"
                                       else StackPipe(mtu, offload))
    try:
        yield net
    finally:
        await net.close()


# -- servers -------------------------------------------------------------------------------------
async def echo_handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await r.read(CHUNK)
            if not data:
                break
            w.write(data)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()


class Sink:
    """A server handler that counts bytes until EOF and records how long that took."""

    def __init__(self) -> None:
        self.results: list[tuple[int, float, float]] = []  # (bytes, start, end)
        self.done = asyncio.Event()
        self.expect = 1

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.perf_counter()
        got = 0
        try:
            while True:
                data = await r.read(CHUNK * 4)
                if not data:
                    break
                got += len(data)
        finally:
            self.results.append((got, start, time.perf_counter()))
            w.close()
            if len(self.results) >= self.expect:
                self.done.set()


# -- client workloads ----------------------------------------------------------------------------
async def send_for(w: asyncio.StreamWriter, nbytes: int, budget: float) -> int:
    """Write zeros until ``nbytes`` or ``budget`` seconds, then close; return bytes written."""
    chunk = bytes(CHUNK)
    deadline = time.perf_counter() + budget
    sent = 0
    while sent < nbytes:
        w.write(chunk)
        sent += CHUNK
        await w.drain()
        if time.perf_counter() >= deadline:
            break
    w.close()
    with contextlib.suppress(ConnectionError, OSError):
        await w.wait_closed()
    return sent


async def bulk(net: Net, nbytes: int, budget: float, flows: int = 1) -> float:
    """Aggregate bulk throughput (bytes/s) of ``flows`` client→server transfers."""
    sink = Sink()
    sink.expect = flows
    host, port = await net.serve(sink, backlog=max(100, flows))
    conns = [await net.connect(host, port) for _ in range(flows)]
    per_flow = max(CHUNK, nbytes // flows)
    t0 = time.perf_counter()
    await asyncio.gather(*(send_for(w, per_flow, budget) for _, w in conns))
    await asyncio.wait_for(sink.done.wait(), budget * 4 + 30)
    end = max(e for _, _, e in sink.results)
    total = sum(b for b, _, _ in sink.results)
    return total / (end - t0)


async def connect_echo_close(net: Net, host: str, port: int) -> None:
    r, w = await net.connect(host, port)
    w.write(b"x")
    await r.readexactly(1)
    w.close()
    with contextlib.suppress(ConnectionError, OSError):
        await w.wait_closed()


async def conn_rate(net: Net, count: int, budget: float, host: str | None = None,
                    port: int | None = None) -> float:
    """Sequential connect / 1-byte echo / close cycles per second."""
    if host is None or port is None:
        host, port = await net.serve(echo_handler)
    await connect_echo_close(net, host, port)  # warm-up
    t0 = time.perf_counter()
    deadline = t0 + budget
    n = 0
    while n < count:
        await connect_echo_close(net, host, port)
        n += 1
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - t0)


async def echo_rtt(net: Net, count: int, size: int = 64, host: str | None = None,
                   port: int | None = None) -> list[float]:
    """Round-trip times (seconds) of ``count`` ``size``-byte ping-pongs on one connection."""
    if host is None or port is None:
        host, port = await net.serve(echo_handler)
    r, w = await net.connect(host, port)
    msg = b"m" * size
    for _ in range(20):  # warm-up
        w.write(msg)
        await r.readexactly(size)
    out: list[float] = []
    pc = time.perf_counter
    for _ in range(count):
        t = pc()
        w.write(msg)
        await r.readexactly(size)
        out.append(pc() - t)
    # end as the server sees it: EOF, its handler's close, then ours (a handler still waiting
    # in read() when the loop ends is cancelled, and Python 3.11 logs that as an error)
    w.write_eof()
    with contextlib.suppress(ConnectionError, OSError):
        await r.read()
    w.close()
    return out
