"""TCP against the kernel: flow control, option variants and connection churn.

Zero windows both ways (a kernel reader that stops reading; a stack reader that pauses), the
kernel with timestamps / SACK / window scaling switched off by sysctl in its namespace, a kernel
peer with a small MSS (TCP_MAXSEG), urgent data (which must not break the byte stream), a
simultaneous close, and many short connections in a row each way.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from aionetstack import link
from aionetstack.link.base import Frame, Link

from .conftest import PassThrough, ns_socket
from .test_tcp_kernel import (
    KERNEL4,
    PORT,
    STACK4,
    TUN_LINKS,
    addrs,
    blob,
    echo_handler,
    kernel_connect,
    kernel_echo,
    kernel_exchange,
    kernel_listener,
    kernel_tcp_info,
    recv_all,
    sha,
    stack_on,
)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_reader_stalls_zero_window(netns: str, kind: type[link.Tun],
                                                offload: bool) -> None:
    """The kernel application does not read for 1.5 s (small receive buffer: its window goes
    to zero); the stack keeps probing and the transfer completes intact."""
    loop = asyncio.get_running_loop()
    up = blob(3 << 20, 51)
    async with stack_on(netns, kind, offload) as stack:
        lsock = kernel_listener(netns, 4)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # inherited by accept

        async def kernel_side() -> tuple[bytes, float]:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            try:
                await asyncio.sleep(1.5)
                t = loop.time()
                data = await asyncio.wait_for(recv_all(conn), 60)
                return data, loop.time() - t
            finally:
                conn.close()

        ktask = asyncio.create_task(kernel_side())
        try:
            reader, writer = await asyncio.wait_for(stack.open_connection(KERNEL4, PORT), 10)
            writer.write(up)
            writer.write_eof()
            got, took = await asyncio.wait_for(ktask, 60)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            ktask.cancel()
            lsock.close()
        assert sha(got) == sha(up)
        assert took < 20, took


class _Paused(asyncio.Protocol):
    """Receives with reading paused for ``pause`` seconds after the connection is made."""

    def __init__(self, pause: float) -> None:
        loop = asyncio.get_running_loop()
        self.pause = pause
        self.data = bytearray()
        self.resumed_at = 0.0
        self.eof: asyncio.Future[float] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        asyncio.get_running_loop().call_later(self.pause, self._resume)

    def _resume(self) -> None:
        assert self.transport is not None
        self.resumed_at = time.monotonic()
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(time.monotonic())
        return False


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_stack_reader_paused_zero_window(netns: str, kind: type[link.Tun],
                                               offload: bool) -> None:
    """The stack application pauses reading for 1 s while the kernel sends 4 MB: the stack's
    window closes, then reopens (a window update) and everything arrives intact, promptly."""
    loop = asyncio.get_running_loop()
    protocols: list[_Paused] = []

    def factory() -> _Paused:
        protocols.append(_Paused(1.0))
        return protocols[-1]

    data = blob(4 << 20, 52)
    async with stack_on(netns, kind, offload) as stack:
        server = await stack.create_server(factory, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            await asyncio.wait_for(loop.sock_sendall(s, data), 30)
            s.shutdown(socket.SHUT_WR)
            eof_at = await asyncio.wait_for(protocols[0].eof, 30)
        finally:
            s.close()
        server.close()
    p = protocols[0]
    assert sha(p.data) == sha(data)
    # the rest of the data follows the window update at once, not after a kernel persist probe
    assert eof_at - p.resumed_at < 1.0, eof_at - p.resumed_at


SYSCTL_CASES = {
    "no-timestamps": ("net.ipv4.tcp_timestamps",),
    "no-sack": ("net.ipv4.tcp_sack",),
    "no-wscale": ("net.ipv4.tcp_window_scaling",),
    "none": ("net.ipv4.tcp_timestamps", "net.ipv4.tcp_sack", "net.ipv4.tcp_window_scaling"),
}


async def _sysctl_off(netns: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}=0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, out


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("case", list(SYSCTL_CASES))
async def test_kernel_without_options(netns: str, case: str, family: int) -> None:
    """The kernel offers no timestamps / SACK / window scaling (sysctl in its namespace): the
    stack does not use what was not offered, sizes segments accordingly, and data flows."""
    keys = SYSCTL_CASES[case]
    await _sysctl_off(netns, keys)
    _, saddr, _ = addrs(family)
    infos: list[dict[str, Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        infos.append(writer.get_extra_info("tcp_info"))
        await echo_handler(reader, writer)

    async with stack_on(netns, link.Tun, True) as stack:
        server = await stack.start_server(handler, saddr, PORT)
        s = await kernel_connect(netns, saddr)
        try:
            options, snd_wscale, rcv_wscale, snd_mss = kernel_tcp_info(s)
            data = blob(1 << 20, 53)
            got = await kernel_exchange(s, data, 60)
        finally:
            s.close()
        server.close()
    assert sha(got) == sha(data)
    ts_on = "net.ipv4.tcp_timestamps" not in keys
    sack_on = "net.ipv4.tcp_sack" not in keys
    ws_on = "net.ipv4.tcp_window_scaling" not in keys
    assert bool(options & 1) == ts_on and bool(options & 2) == sack_on
    assert bool(options & 4) == ws_on
    if not ws_on:
        assert (snd_wscale, rcv_wscale) == (0, 0)
    base = 1500 - (20 if family == 4 else 40) - 20
    want_mss = base - (12 if ts_on else 0)
    assert snd_mss == want_mss
    assert infos and infos[0]["snd_mss"] == want_mss
    if not ws_on:
        assert infos[0]["rcv_wnd"] <= 65535  # no scaling: the window field is the window


class _Sizes(PassThrough):
    """Wraps a link and records the TCP payload sizes of the outbound IPv4 packets."""

    def __init__(self, inner: Link) -> None:
        super().__init__(inner)
        self.payloads: list[int] = []

    def send(self, frame: Frame) -> None:
        mv = memoryview(frame)
        if len(mv) >= 40 and mv[0] >> 4 == 4 and mv[9] == 6:
            ihl = (mv[0] & 0x0F) * 4
            total = int.from_bytes(mv[2:4], "big")
            self.payloads.append(total - ihl - (mv[ihl + 12] >> 4) * 4)
        self.inner.send(frame)


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_small_mss_is_respected(netns: str, kind: type[link.Tun],
                                             offload: bool) -> None:
    """A kernel client with TCP_MAXSEG 536: the stack never sends a segment larger than that
    (less the 12 bytes of timestamps) and the echo is intact."""
    sizes: list[_Sizes] = []

    def wrap(dev: Link) -> Link:
        sizes.append(_Sizes(dev))
        return sizes[0]

    async with stack_on(netns, kind, offload, wrap=wrap) as stack:
        server = await stack.start_server(echo_handler, STACK4, PORT)
        k = ns_socket(netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            k.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(k, (STACK4, PORT)),
                                   10)
            data = blob(300_000, 54)
            got = await kernel_exchange(k, data, 30)
        finally:
            k.close()
        server.close()
    assert sha(got) == sha(data)
    payloads = sizes[0].payloads
    assert max(payloads) == 536 - 12, max(payloads)


async def test_urgent_data_does_not_break_the_stream(netns: str) -> None:
    """The kernel sends a byte with MSG_OOB (URG) between ordinary data: the stack's byte
    stream carries every byte in order (urgent data inline, RFC 6093)."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())
        writer.close()

    async with stack_on(netns) as stack:
        server = await stack.start_server(handler, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            await loop.sock_sendall(s, b"abc")
            await asyncio.sleep(0.05)
            s.send(b"!", socket.MSG_OOB)
            await asyncio.sleep(0.05)
            await loop.sock_sendall(s, b"def")
            s.shutdown(socket.SHUT_WR)
            got = await asyncio.wait_for(received, 10)
        finally:
            s.close()
        server.close()
    assert got == b"abc!def"


async def test_simultaneous_close(netns: str) -> None:
    """Both ends send their FIN at once after exchanging data: both see EOF, no RST."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"from-stack")
        await go.wait()
        writer.write_eof()
        done.set_result(await reader.read())
        writer.close()

    async with stack_on(netns) as stack:
        server = await stack.start_server(handler, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            await loop.sock_sendall(s, b"from-kernel")
            await asyncio.sleep(0.05)
            go.set()
            s.shutdown(socket.SHUT_WR)
            got = await asyncio.wait_for(recv_all(s), 10)
            assert await asyncio.wait_for(done, 10) == b"from-kernel"
            assert got == b"from-stack"
        finally:
            s.close()
        server.close()


async def test_many_short_connections_kernel_to_stack(netns: str) -> None:
    async with stack_on(netns) as stack:
        server = await stack.start_server(echo_handler, STACK4, PORT)
        for i in range(100):
            await kernel_echo(netns, STACK4, blob(1000, i), timeout=5)
        server.close()


async def test_many_short_connections_stack_to_kernel(netns: str) -> None:
    """100 connections in a row from the stack (each closed by the stack first, leaving it in
    TIME-WAIT) to a kernel echo server."""
    loop = asyncio.get_running_loop()
    async with stack_on(netns) as stack:
        lsock = kernel_listener(netns, 4)

        async def kernel_echo_server() -> None:
            while True:
                conn, _ = await loop.sock_accept(lsock)
                conn.setblocking(False)
                with conn:
                    while chunk := await loop.sock_recv(conn, 65536):
                        await loop.sock_sendall(conn, chunk)

        ktask = asyncio.create_task(kernel_echo_server())
        ports = set()
        try:
            for i in range(100):
                reader, writer = await asyncio.wait_for(stack.open_connection(KERNEL4, PORT), 5)
                ports.add(writer.get_extra_info("sockname")[1])
                msg = blob(1000, i)
                writer.write(msg)
                assert await asyncio.wait_for(reader.readexactly(len(msg)), 5) == msg
                writer.close()
                await writer.wait_closed()
        finally:
            ktask.cancel()
            lsock.close()
        assert len(ports) == 100
