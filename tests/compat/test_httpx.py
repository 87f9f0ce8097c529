"""httpx (through the httpcore backend) fetching from an aiohttp server on the other stack."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
import pytest
import trustme
from aiohttp import web
from compat_helpers import A4, B4, B6, assert_no_leaks, payload, stacks, tcp_of

from aionetstack import Stack
from aionetstack.compat.httpcore import StackNetworkBackend, StackNetworkStream, httpx_transport

BIG = payload(1024 * 1024, seed=51)


class App:
    """An aiohttp application served on a stack; records the client port of every request."""

    def __init__(self) -> None:
        self.peers: list[tuple[Any, ...]] = []
        self.app = web.Application()
        self.app.router.add_get("/hello", self.hello)
        self.app.router.add_get("/big", self.big)
        self.app.router.add_post("/sha", self.sha)

    def _seen(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))

    async def hello(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text=f"hello {request.remote}")

    async def big(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def sha(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.read()
        return web.Response(text=hashlib.sha256(body).hexdigest())


@contextlib.asynccontextmanager
async def serve(stack: Stack, host: str | list[str], *, ssl_ctx: ssl.SSLContext | None = None,
                keepalive_timeout: float = 75.0) -> AsyncIterator[tuple[App, int]]:
    app = App()
    runner = web.AppRunner(app.app, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    assert runner.server is not None
    server = await stack.create_server(runner.server, host, 0, ssl=ssl_ctx)
    try:
        yield app, server.addresses[0][1]
    finally:
        server.close()
        await runner.cleanup()
        await server.wait_closed()


async def test_httpx_get_and_keep_alive_reuse() -> None:
    async with stacks() as (a, b):
        async with (serve(b, [B4, B6]) as (app, port),
                    httpx.AsyncClient(transport=httpx_transport(a)) as client):
            r1 = await client.get(f"http://{B4}:{port}/hello")
            assert r1.status_code == 200 and r1.text == f"hello {A4}"
            r2 = await client.get(f"http://{B4}:{port}/hello")
            assert r2.status_code == 200
            # both requests travelled on one TCP connection
            assert len(app.peers) == 2 and app.peers[0] == app.peers[1]
            stream = r2.extensions["network_stream"]
            assert isinstance(stream, StackNetworkStream)
            assert stream.get_extra_info("server_addr") == (B4, port)
            assert stream.get_extra_info("client_addr") == app.peers[0][:2]
            assert stream.get_extra_info("stack") is a
            r6 = await client.get(f"http://[{B6}]:{port}/hello")
            assert r6.status_code == 200 and r6.text.startswith("hello fd00::1")
        await assert_no_leaks(a, b)


async def test_httpx_1mb_download_and_upload() -> None:
    async with stacks() as (a, b):
        async with (serve(b, B4) as (app, port),
                    httpx.AsyncClient(transport=httpx_transport(a)) as client):
            r = await client.get(f"http://{B4}:{port}/big")
            assert r.status_code == 200 and len(r.content) == len(BIG)
            assert r.content == BIG
            async with client.stream("GET", f"http://{B4}:{port}/big") as resp:
                h = hashlib.sha256()
                async for chunk in resp.aiter_bytes():
                    h.update(chunk)
            assert h.hexdigest() == hashlib.sha256(BIG).hexdigest()
            up = await client.post(f"http://{B4}:{port}/sha", content=BIG)
            assert up.text == hashlib.sha256(BIG).hexdigest()
            assert len(set(app.peers)) == 1  # all three on the pooled connection
        await assert_no_leaks(a, b)


async def test_server_closed_keep_alive_connection_is_replaced() -> None:
    async with stacks() as (a, b):
        async with (serve(b, B4, keepalive_timeout=0.05) as (app, port),
                    httpx.AsyncClient(transport=httpx_transport(a)) as client):
            assert (await client.get(f"http://{B4}:{port}/hello")).status_code == 200
            await asyncio.sleep(0.2)  # the server closes the idle connection
            assert (await client.get(f"http://{B4}:{port}/hello")).status_code == 200
            assert len(app.peers) == 2 and app.peers[0] != app.peers[1]
        await assert_no_leaks(a, b)


async def test_httpx_https_with_trustme() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("server.test", B4).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with stacks() as (a, b):
        a.add_host("server.test", B4)
        async with serve(b, B4, ssl_ctx=server_ctx) as (app, port):
            transport = httpx_transport(a, verify=client_ctx)
            async with httpx.AsyncClient(transport=transport) as c:
                r = await c.get(f"https://server.test:{port}/big")
                assert r.status_code == 200 and r.content == BIG
                r2 = await c.get(f"https://server.test:{port}/hello")
                assert r2.text == f"hello {A4}"
                stream = r2.extensions["network_stream"]
                sslobj = stream.get_extra_info("ssl_object")
                assert isinstance(sslobj, ssl.SSLObject)
                assert sslobj.server_hostname == "server.test"
                assert len(set(app.peers)) == 1
            # a client that does not trust the CA refuses the server
            async with httpx.AsyncClient(transport=httpx_transport(a)) as c:
                with pytest.raises(httpx.ConnectError):
                    await c.get(f"https://server.test:{port}/hello")
        await assert_no_leaks(a, b)


async def test_backend_directly() -> None:
    async with stacks() as (a, b):
        backend = StackNetworkBackend(a)
        with pytest.raises(httpcore.ConnectError):
            await backend.connect_tcp(B4, 9)
        conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.Queue()
        server = await b.start_server(lambda r, w: conns.put_nowait((r, w)), B4, 0)
        port = server.addresses[0][1]
        stream = await backend.connect_tcp(B4, port, timeout=1.0, local_address=A4)
        sr, sw = await conns.get()
        assert stream.get_extra_info("client_addr")[0] == A4
        assert stream.get_extra_info("socket") is None
        assert stream.get_extra_info("is_readable") is False
        await stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=1.0)
        assert await sr.readuntil(b"\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.02)
        sw.write(b"reply")
        assert await stream.read(100, timeout=1.0) == b"reply"
        sw.close()
        await sw.wait_closed()
        await asyncio.sleep(0.01)
        assert stream.get_extra_info("is_readable") is True  # EOF pending: the peer closed
        assert await stream.read(100) == b""
        await stream.aclose()
        await stream.aclose()
        await backend.sleep(0.001)
        server.close()
        await server.wait_closed()
        await assert_no_leaks(a, b)


async def test_backend_connect_timeout() -> None:
    async with stacks(loss=1.0) as (a, b):
        with pytest.raises(httpcore.ConnectTimeout):
            await StackNetworkBackend(a).connect_tcp(B4, 80, timeout=0.02)
        assert len(tcp_of(a).endpoints) == 0
        await assert_no_leaks(a, b)


async def test_backend_start_tls_and_write_error() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(B4).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with stacks() as (a, b):
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await w.start_tls(server_ctx)
            w.write(await r.readline())
            await w.drain()
            w.transport.abort()

        server = await b.start_server(handle, B4, 0)
        stream = await StackNetworkBackend(a).connect_tcp(B4, server.addresses[0][1])
        tls = await stream.start_tls(client_ctx, server_hostname=B4, timeout=2.0)
        assert isinstance(tls.get_extra_info("ssl_object"), ssl.SSLObject)
        await tls.write(b"over tls\n")
        assert await tls.read(100, timeout=2.0) == b"over tls\n"
        with pytest.raises((httpcore.ReadError, httpcore.WriteError)):
            for _ in range(50):  # the server reset the connection
                assert await tls.read(100, timeout=2.0) == b""
                await tls.write(b"more")
        await tls.aclose()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(a, b)
