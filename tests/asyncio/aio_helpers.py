"""Shared helpers for the asyncio-level tests: two stacks on a pipe, recording protocols."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aionetstack import Stack, link
from aionetstack.wire.checksum import checksum

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "fd00::1", "fd00::2"


@contextlib.asynccontextmanager
async def stack_pair(**pipe_options: Any) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two stacks joined by ``link.pipe(**pipe_options)`` (L2 unless ``l2=False``)."""
    pipe_options.setdefault("l2", True)
    pipe_options.setdefault("seed", 1)
    a_end, b_end = link.pipe(**pipe_options)
    async with Stack() as a, Stack() as b:
        a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
        b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
        yield a, b


async def ping_until_reply(stack: Stack, address: str, *, attempts: int = 10,
                           timeout: float = 0.5) -> float:
    """Ping until one reply arrives (for lossy links); re-raise the last timeout."""
    for attempt in range(attempts):
        try:
            return await stack.ping(address, timeout=timeout)
        except TimeoutError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class Recorder(asyncio.DatagramProtocol):
    """Records every callback, in order; datagrams and errors are also queued."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.datagrams: asyncio.Queue[tuple[bytes, tuple[Any, ...]]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.events.append(("made", transport))
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.events.append(("datagram", data, addr))
        self.datagrams.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.events.append(("error", exc))
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    async def next_datagram(self, timeout: float = 2.0) -> tuple[bytes, tuple[Any, ...]]:
        return await asyncio.wait_for(self.datagrams.get(), timeout)

    async def next_error(self, timeout: float = 2.0) -> Exception:
        return await asyncio.wait_for(self.errors.get(), timeout)


class Echo(Recorder):
    """Sends every datagram straight back to its source."""

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        super().datagram_received(data, addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


def icmp4_echo(icmp_type: int, src: bytes, dst: bytes, ident: int, seq: int, data: bytes) -> bytes:
    """An IPv4 ICMP echo request (type 8) or reply (0), checksums filled in."""
    msg = bytearray([icmp_type, 0, 0, 0]) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
    msg += data
    msg[2:4] = checksum(msg).to_bytes(2, "big")
    hdr = bytearray(20)
    hdr[0], hdr[8], hdr[9] = 0x45, 64, 1
    hdr[2:4] = (20 + len(msg)).to_bytes(2, "big")
    hdr[12:16], hdr[16:20] = src, dst
    hdr[10:12] = checksum(hdr).to_bytes(2, "big")
    return bytes(hdr + msg)
