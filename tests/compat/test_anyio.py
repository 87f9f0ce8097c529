"""anyio streams and listeners over two in-memory stacks (asyncio backend, in task groups)."""

from __future__ import annotations

import socket
import ssl

import anyio
import anyio.abc
import pytest
import trustme
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from compat_helpers import A4, A6, B4, B6, assert_no_leaks, payload, sha, stacks, tcp_of, wait_until

from aionetstack.compat.anyio import (
    StackListener,
    StackSocketStream,
    connect_tcp,
    create_tcp_listener,
)


async def test_data_both_ways_in_a_task_group() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        assert isinstance(listener, StackListener)
        assert isinstance(listener, anyio.abc.Listener)
        port = listener.extra(SocketAttribute.local_port)
        assert listener.extra(SocketAttribute.local_address) == (B4, port)
        served: list[tuple[object, ...]] = []

        async def handler(stream: StackSocketStream) -> None:
            async with stream:
                served.append((stream.extra(SocketAttribute.local_address),
                               stream.extra(SocketAttribute.remote_address)))
                async for chunk in stream:  # until EndOfStream
                    await stream.send(chunk.upper())

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler, tg)
            client = await connect_tcp(a, B4, port)
            assert isinstance(client, anyio.abc.SocketStream)
            assert client.extra(SocketAttribute.family) == socket.AF_INET
            local = client.extra(SocketAttribute.local_address)
            assert local[0] == A4
            assert client.extra(SocketAttribute.local_port) == local[1]
            assert client.extra(SocketAttribute.remote_address) == (B4, port)
            assert client.extra(SocketAttribute.remote_port) == port
            with pytest.raises(anyio.TypedAttributeLookupError):
                client.extra(SocketAttribute.raw_socket)
            for word in (b"hello", b"anyio", b"over a userspace stack"):
                await client.send(word)
                got = b""
                while len(got) < len(word):
                    got += await client.receive()
                assert got == word.upper()
            await client.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await client.receive()
            await client.aclose()
            tg.cancel_scope.cancel()
        assert served == [((B4, port), local)]
        await listener.aclose()
        await assert_no_leaks(a, b)


async def test_receive_max_bytes_and_half_close() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            client = await connect_tcp(a, B4, port)
            server = await listener.accept()
            await client.send(b"0123456789")
            assert await server.receive(4) == b"0123"
            assert await server.receive(4) == b"4567"
            assert await server.receive(100) == b"89"
            with pytest.raises(ValueError):
                await server.receive(0)
            await client.send_eof()
            await client.send_eof()  # idempotent
            with pytest.raises(anyio.ClosedResourceError):
                await client.send(b"after eof")
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            with pytest.raises(anyio.EndOfStream):
                await server.receive()  # stays at EOF
            # the other direction still works
            big = payload(500_000, seed=41)

            async def send_big() -> None:
                await server.send(big)
                await server.aclose()

            tg.start_soon(send_big)
            got = bytearray()
            with pytest.raises(anyio.EndOfStream):
                while True:
                    got += await client.receive()
            assert sha(got) == sha(big)
            await client.aclose()
        await listener.aclose()
        await assert_no_leaks(a, b)


async def test_closed_resource_errors() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)
        client = await connect_tcp(a, B4, port)
        server = await listener.accept()
        async with anyio.create_task_group() as tg:
            results: list[type[BaseException]] = []

            async def blocked_receive() -> None:
                try:
                    await client.receive()
                except BaseException as exc:
                    results.append(type(exc))

            tg.start_soon(blocked_receive)
            await anyio.sleep(0.01)
            await client.aclose()  # wakes the blocked receive
        assert results == [anyio.ClosedResourceError]
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"x")
        with pytest.raises(anyio.ClosedResourceError):
            await client.send_eof()
        await client.aclose()  # idempotent
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        await server.aclose()
        await listener.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await listener.accept()
        await assert_no_leaks(a, b)


async def test_reset_is_a_broken_resource() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)
        client = await connect_tcp(a, B4, port)
        server = await listener.accept()
        await client.send(b"x")
        assert await server.receive() == b"x"
        server.transport.abort()  # RST
        with pytest.raises(anyio.BrokenResourceError) as ei:
            await client.receive()
        assert isinstance(ei.value.__cause__, ConnectionResetError)
        with pytest.raises(anyio.BrokenResourceError):
            await client.send(b"y")
        await client.aclose()
        await server.aclose()
        await listener.aclose()
        await assert_no_leaks(a, b)


async def test_send_backpressure_until_the_peer_receives() -> None:
    data = payload(3_000_000, seed=42)
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)
        client = await connect_tcp(a, B4, port)
        server = await listener.accept()
        sent = 0

        async def sender() -> None:
            nonlocal sent
            for i in range(0, len(data), 64 * 1024):
                await client.send(data[i:i + 64 * 1024])
                sent = i + 64 * 1024
            await client.send_eof()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            # nobody receives: the server endpoint's window closes and send() blocks
            ep = server.transport.get_extra_info("endpoint")
            await wait_until(lambda: ep.info()["rcv_wnd"] == 0, 5, "zero window")
            await anyio.sleep(0.05)
            stalled_at = sent
            assert stalled_at < len(data)
            await anyio.sleep(0.05)
            assert sent == stalled_at
            assert ep.unread() <= ep.rcv.capacity
            got = bytearray()
            with pytest.raises(anyio.EndOfStream):
                while True:
                    got += await server.receive(1 << 20)
        assert sha(got) == sha(data)
        await client.aclose()
        await server.aclose()
        await listener.aclose()
        await assert_no_leaks(a, b)


async def test_wildcard_listener_ipv6_and_serve_cancel() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, None, 0)
        addrs = listener.addresses
        assert [h for h, _ in addrs] == ["0.0.0.0", "::"]
        (port,) = {p for _, p in addrs}
        seen: list[tuple[int, object]] = []

        async def handler(stream: StackSocketStream) -> None:
            seen.append((stream.extra(SocketAttribute.family),
                         stream.extra(SocketAttribute.local_address)))
            await stream.send(b"hi")
            await stream.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            for host in (B6, B4):
                s = await connect_tcp(a, host, port)
                if host == B6:
                    assert s.extra(SocketAttribute.family) == socket.AF_INET6
                    assert s.extra(SocketAttribute.local_address)[0] == A6
                assert await s.receive() == b"hi"
                await s.aclose()
            tg.cancel_scope.cancel()
        assert seen == [(socket.AF_INET6, (B6, port)), (socket.AF_INET, (B4, port))]
        await listener.aclose()
        await assert_no_leaks(a, b)


async def test_listener_close_resets_unaccepted_connections() -> None:
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)
        clients = [await connect_tcp(a, B4, port) for _ in range(2)]
        assert len(tcp_of(b).endpoints) == 3
        async with anyio.create_task_group() as tg:
            errors: list[type[BaseException]] = []

            async def accept_forever() -> None:
                try:
                    while True:
                        s = await listener.accept()
                        await s.aclose()
                except anyio.ClosedResourceError as exc:
                    errors.append(type(exc))

            await listener.aclose()
            tg.start_soon(accept_forever)
        assert errors == [anyio.ClosedResourceError]
        for c in clients:
            with pytest.raises(anyio.BrokenResourceError):
                await c.receive()
            await c.aclose()
        await assert_no_leaks(a, b)


async def test_connect_failures_are_oserrors() -> None:
    async with stacks() as (a, b):
        with pytest.raises(ConnectionRefusedError):
            await connect_tcp(a, B4, 9)
        with pytest.raises(OSError):
            await connect_tcp(a, "198.19.9.9", 80)
        await assert_no_leaks(a, b)


async def test_anyio_stream_wrappers_work_on_top() -> None:
    """anyio's own BufferedByteReceiveStream and TLSStream layered over a stack stream."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("server.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with stacks() as (a, b):
        listener = await create_tcp_listener(b, B4, 0)
        port = listener.extra(SocketAttribute.local_port)

        async def handler(stream: StackSocketStream) -> None:
            tls = await TLSStream.wrap(stream, server_side=True, ssl_context=server_ctx,
                                       standard_compatible=False)
            buffered = BufferedByteReceiveStream(tls)
            line = await buffered.receive_until(b"\n", 1000)
            await tls.send(b"got " + line + b"\n")
            await tls.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler, tg)
            raw = await connect_tcp(a, B4, port)
            tls = await TLSStream.wrap(raw, hostname="server.test", ssl_context=client_ctx,
                                       standard_compatible=False)
            await tls.send(b"secret line\n")
            reply = BufferedByteReceiveStream(tls)
            assert await reply.receive_until(b"\n", 1000) == b"got secret line"
            await tls.aclose()
            tg.cancel_scope.cancel()
        await listener.aclose()
        await assert_no_leaks(a, b)
