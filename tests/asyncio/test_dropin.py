"""Unmodified asyncio applications over stacks through the drop-in."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from aionetstack import Stack, link
from aionetstack.asyncio.loop import StackEventLoop, drop_in, run


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Stack, Stack]]:
    a_end, b_end = link.pipe(l2=True, seed=3)
    async with Stack(seed=1) as client, Stack(seed=2) as server:
        client.add_nic(a_end, ["198.18.0.1/24", "fd00::1/64"])
        server.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        client.add_host("server.test", "198.18.0.2", "fd00::2")
        yield client, server


async def _aiohttp_app(body: bytes, server_host: str, url_host: str) -> tuple[int, str, str]:
    """Plain aiohttp code, written for the kernel: nothing here knows about stacks."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.remote}")

    async def digest(request: web.Request) -> web.Response:
        data = await request.read()
        return web.Response(body=hashlib.sha256(data).hexdigest().encode())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.get("/", hello), web.post("/digest", digest)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, server_host, 8080)
    await site.start()
    try:
        async with ClientSession() as session:
            async with session.get(f"http://{url_host}:8080/") as r:
                status, text = r.status, await r.text()
            async with session.post(f"http://{url_host}:8080/digest", data=body) as r:
                remote_digest = await r.text()
    finally:
        await runner.cleanup()
    return status, text, remote_digest


async def test_aiohttp_server_and_client_unmodified(pair: tuple[Stack, Stack]) -> None:
    client, server = pair
    body = os.urandom(10 * 1024 * 1024)
    async with client.drop_in(server):
        status, text, remote_digest = await _aiohttp_app(body, "198.18.0.2", "server.test")
    assert status == 200
    assert text == "hello 198.18.0.1"  # the server saw the client stack's address
    assert remote_digest == hashlib.sha256(body).hexdigest()
    # the bytes really crossed the stacks (not the kernel): the server stack received them
    assert server.stats()["tcp"]["bytes-received"] >= len(body)
    # the loop is back to normal afterwards
    assert not hasattr(asyncio.get_running_loop(), "create_connection") or getattr(
        asyncio.get_running_loop(), "_aionetstack_router", None) is None


async def test_aiohttp_over_ipv6(pair: tuple[Stack, Stack]) -> None:
    client, server = pair
    body = os.urandom(300_000)
    async with drop_in([client, server]):
        status, text, remote_digest = await _aiohttp_app(body, "fd00::2", "[fd00::2]")
    assert status == 200 and text == "hello fd00::1"
    assert remote_digest == hashlib.sha256(body).hexdigest()


async def test_asyncio_streams_unmodified(pair: tuple[Stack, Stack]) -> None:
    client, server = pair

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readline()
        w.write(line.upper())
        await w.drain()
        w.close()

    async with client.drop_in(server):
        srv = await asyncio.start_server(handle, "198.18.0.2", 7000)
        r, w = await asyncio.open_connection("server.test", 7000)
        w.write(b"over a userspace stack\n")
        assert await r.readline() == b"OVER A USERSPACE STACK\n"
        assert w.get_extra_info("peername") == ("198.18.0.2", 7000)
        assert w.get_extra_info("stack") is client
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
        assert srv.get_loop() is asyncio.get_running_loop()


async def test_getaddrinfo_and_datagrams(pair: tuple[Stack, Stack]) -> None:
    client, server = pair
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
            assert isinstance(self.t, asyncio.DatagramTransport)
            self.t.sendto(data, addr)

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
            got.put_nowait(data)

    async with client.drop_in(server):
        infos = await loop.getaddrinfo("server.test", 53, type=socket.SOCK_DGRAM)
        assert (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "",
                ("198.18.0.2", 53)) in infos
        assert any(i[0] == socket.AF_INET6 for i in infos)
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("unknown.invalid", 80)
        await loop.create_datagram_endpoint(Echo, local_addr=("198.18.0.2", 53))
        tr, _ = await loop.create_datagram_endpoint(Client, remote_addr=("198.18.0.2", 53))
        tr.sendto(b"ping")
        assert await asyncio.wait_for(got.get(), 5) == b"ping"
        tr.close()


async def test_no_fallthrough_by_default(pair: tuple[Stack, Stack]) -> None:
    client, server = pair
    async with client.drop_in(server):
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.2", 9)  # owned or routed by no stack
        with pytest.raises(OSError):
            await asyncio.start_server(lambda r, w: None, "203.0.113.5", 80)


async def test_fallthrough_reaches_the_kernel_on_loopback(pair: tuple[Stack, Stack]) -> None:
    client, server = pair
    # a real kernel server on loopback, started before the drop-in
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"kernel\n")
        await w.drain()
        w.close()

    kernel = await asyncio.start_server(handle, "127.0.0.2", 0)
    port = kernel.sockets[0].getsockname()[1]
    try:
        async with client.drop_in(server, fallthrough=True):
            # 127.0.0.2 is neither owned nor routed by the stacks (they own 127.0.0.1 only):
            # with fallthrough it reaches the kernel's loopback
            r, w = await asyncio.open_connection("127.0.0.2", port)
            assert await r.readline() == b"kernel\n"
            assert w.get_extra_info("socket") is not None  # a real OS socket
            w.close()
            # while stack addresses still go through the stacks
            srv = await asyncio.start_server(handle, "198.18.0.2", 81)
            r, w = await asyncio.open_connection("198.18.0.2", 81)
            assert await r.readline() == b"kernel\n"
            assert w.get_extra_info("socket") is None
            w.close()
            srv.close()
    finally:
        kernel.close()
        await kernel.wait_closed()


def test_stack_event_loop_runs_a_program() -> None:
    async def program() -> bytes:
        a_end, b_end = link.pipe(seed=5)
        async with Stack() as a, Stack() as b:
            a.add_nic(a_end, ["198.18.0.1/24"])
            b.add_nic(b_end, ["198.18.0.2/24"])
            loop = asyncio.get_running_loop()
            assert isinstance(loop, StackEventLoop)
            loop.attach([a, b])

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.write(await r.read(5))
                await w.drain()
                w.close()

            srv = await asyncio.start_server(handle, "198.18.0.2", 25)
            r, w = await asyncio.open_connection("198.18.0.2", 25)
            w.write(b"hello")
            data = await r.read()
            w.close()
            srv.close()
            return data

    assert run(program()) == b"hello"
