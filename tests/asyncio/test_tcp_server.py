"""``Server``: the ``asyncio.Server`` API over stack listeners, and leak-free cancellation."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest
from tcp_aio_helpers import (
    A4,
    B4,
    B6,
    Factory,
    Rec,
    assert_no_leaks,
    tcp_of,
    tcp_pair,
    wait_until,
)

from aionetstack.asyncio.server import Server
from aionetstack.transport.tcp.state import TcpState


async def test_server_basics_addresses_and_async_with() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        assert isinstance(server, asyncio.AbstractServer) and isinstance(server, Server)
        assert server.is_serving()
        assert server.get_loop() is asyncio.get_running_loop()
        (addr,) = server.addresses
        assert addr[0] == B4 and addr[1] > 0
        assert server.sockets == ()
        async with server as s:
            assert s is server
            tr, _proto = await net.a.create_connection(Rec, B4, addr[1])
            sp = await factory.next()
            tr.write(b"x")
            await sp.wait_bytes(1)
            tr.close()
            await sp.lost
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await net.a.create_connection(Rec, B4, addr[1])
        await assert_no_leaks(net.a, net.b)


async def test_port_zero_chooses_one_port_for_every_address() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, [B4, B6], 0)
        assert [a[0] for a in server.addresses] == [B4, B6]
        ports = {a[1] for a in server.addresses}
        assert len(ports) == 1
        (port,) = ports
        assert len(server.addresses[1]) == 4  # IPv6 4-tuple
        for host in (B4, B6):
            tr, _ = await net.a.create_connection(Rec, host, port)
            sp = await factory.next()
            assert sp.transport.get_extra_info("sockname")[:2] == (host, port)
            tr.close()
            await sp.lost
        # host None: every address of both families (the wildcards), still one port
        wild = await net.b.create_server(factory, None, 0)
        assert [a[0] for a in wild.addresses] == ["0.0.0.0", "::"]
        assert len({a[1] for a in wild.addresses}) == 1
        for s in (server, wild):
            s.close()
            await s.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_port_in_use() -> None:
    async with tcp_pair() as net:
        server = await net.b.create_server(Rec, B4, 0)
        port = server.addresses[0][1]
        with pytest.raises(OSError) as ei:
            await net.b.create_server(Rec, B4, port, reuse_address=False)
        assert ei.value.errno == errno.EADDRINUSE
        server.close()
        await server.wait_closed()
        again = await net.b.create_server(Rec, B4, port)  # the port is free after close
        again.close()
        await again.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_start_serving_later() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0, start_serving=False)
        assert not server.is_serving()
        port = server.addresses[0][1]
        # the listener is up: the handshake completes and the connection waits in the queue
        tr, _proto = await net.a.create_connection(Rec, B4, port)
        await asyncio.sleep(0.02)
        assert factory.made == []
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        sp = await factory.next()
        tr.write(b"queued")
        assert await sp.wait_bytes(6) == b"queued"
        tr.close()
        await sp.lost
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_close_resets_connections_in_the_accept_queue() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0, start_serving=False)
        port = server.addresses[0][1]
        clients = [await net.a.create_connection(Rec, B4, port) for _ in range(3)]
        assert len(tcp_of(net.b).endpoints) == 4  # the listener and three queued children
        server.close()
        assert not server.is_serving()
        for _tr, proto in clients:
            assert isinstance(await asyncio.wait_for(proto.lost, 2), ConnectionResetError)
        assert factory.made == []
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await net.a.create_connection(Rec, B4, port)
        await assert_no_leaks(net.a, net.b)


async def test_close_resets_half_open_connections() -> None:
    """A child still in SYN-RECEIVED when the server closes is reset, never leaked."""
    async with tcp_pair(delay=0.02) as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        port = server.addresses[0][1]
        connecting = asyncio.create_task(net.a.create_connection(Rec, B4, port))
        await wait_until(lambda: len(tcp_of(net.b).endpoints) == 2, what="SYN-RECEIVED child")
        states = sorted(ep.state.value for ep in tcp_of(net.b).endpoints)
        assert states == ["LISTEN", "SYN-RECEIVED"]
        server.close()
        assert len(tcp_of(net.b).endpoints) == 0
        try:
            _tr, proto = await asyncio.wait_for(connecting, 2)
        except ConnectionError:
            pass  # the reset overtook the handshake
        else:
            assert isinstance(await asyncio.wait_for(proto.lost, 2), ConnectionResetError)
        assert factory.made == []
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_backlog_overflow_is_retried_by_the_client() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0, backlog=1, start_serving=False)
        port = server.addresses[0][1]
        first = await net.a.create_connection(Rec, B4, port)
        second = asyncio.create_task(net.a.create_connection(Rec, B4, port))
        await asyncio.sleep(0.02)
        assert not second.done()  # its SYN was dropped: the queue is full
        await server.start_serving()
        tr2, _ = await asyncio.wait_for(second, 2)  # the retransmitted SYN gets through
        sps = [await factory.next(), await factory.next()]
        for tr in (first[0], tr2):
            tr.close()
        for sp in sps:
            await sp.lost
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_wait_closed_waits_for_accepted_connections() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, _proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        sp = await factory.next()
        server.close()
        server.close()  # idempotent
        waiter = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()  # an accepted connection is still open
        tr.write(b"still works")  # closing a server leaves accepted connections alone
        await sp.wait_bytes(11)
        tr.close()
        await asyncio.wait_for(waiter, 2)
        await server.wait_closed()  # returns at once now
        await assert_no_leaks(net.a, net.b)


@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
async def test_close_and_abort_clients(how: str) -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        conns = [await net.a.create_connection(Rec, B4, server.addresses[0][1])
                 for _ in range(2)]
        for _ in conns:
            await factory.next()
        server.close()
        getattr(server, how)()
        await asyncio.wait_for(server.wait_closed(), 2)
        for _tr, proto in conns:
            exc = await asyncio.wait_for(proto.lost, 2)
            if how == "abort_clients":
                assert isinstance(exc, ConnectionResetError)
            else:
                assert exc is None
        await assert_no_leaks(net.a, net.b)


async def test_serve_forever_and_cancel() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0, start_serving=False)
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        tr, _proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        sp = await factory.next()
        tr.close()
        await sp.lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # closed
        await assert_no_leaks(net.a, net.b)


async def test_protocol_factory_failure_aborts_the_connection() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _l, ctx: seen.append(ctx))
    try:
        async with tcp_pair() as net:
            def bad() -> asyncio.Protocol:
                raise ValueError("no protocol today")

            server = await net.b.create_server(bad, B4, 0)
            _tr, proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
            assert isinstance(await asyncio.wait_for(proto.lost, 2), ConnectionResetError)
            assert any(isinstance(c.get("exception"), ValueError) for c in seen)
            assert server.is_serving()
            server.close()
            await server.wait_closed()
            await assert_no_leaks(net.a, net.b)
    finally:
        loop.set_exception_handler(None)


async def test_timed_out_connect_aborts_the_endpoint_and_frees_its_port() -> None:
    async with tcp_pair(loss=1.0) as net:
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(net.a.create_connection(Rec, B4, 80), 0.01)
            assert len(tcp_of(net.a).endpoints) == 0
            assert len(net.a.ports) == 0
            assert not tcp_of(net.a).connections
        await assert_no_leaks(net.a, net.b)


async def test_cancelled_connect_aborts_the_endpoint_and_frees_its_port() -> None:
    async with tcp_pair(loss=1.0) as net:
        task = asyncio.create_task(
            net.a.create_connection(Rec, B4, 80, local_addr=(A4, 45000)))
        await wait_until(lambda: len(tcp_of(net.a).endpoints) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(tcp_of(net.a).endpoints) == 0 and len(net.a.ports) == 0
        # the explicit local port can be bound again at once
        ep = net.a.tcp_endpoint()
        ep.bind(A4, 45000)
        ep.close()
        await assert_no_leaks(net.a, net.b)


async def test_time_wait_expires_and_leaves_nothing_behind() -> None:
    async with tcp_pair() as net:
        tcp_of(net.a).msl = 0.1
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        sp = await factory.next()
        tr.close()  # the active closer goes through TIME-WAIT
        await sp.lost
        await proto.lost
        server.close()
        await server.wait_closed()
        # a compact record answers for the closed endpoint, which still reads TIME-WAIT
        ep = tr.get_extra_info("endpoint")
        assert ep.state is TcpState.TIME_WAIT
        assert len(tcp_of(net.a).endpoints) == 0 and len(tcp_of(net.a).time_wait) == 1
        assert len(net.a.timers) == 1  # only the 2*MSL timer
        assert len(net.a.ports) == 1  # the port stays reserved
        await asyncio.sleep(0.1)
        assert len(tcp_of(net.a).time_wait) == 1  # not before 2*MSL
        await assert_no_leaks(net.a, net.b)
        assert ep.state is TcpState.CLOSED and ep.error is None
