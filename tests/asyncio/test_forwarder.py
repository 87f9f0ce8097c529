"""Stack.tcp_forwarder / udp_forwarder: async handlers, streams and datagram flows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aionetstack import Stack, link
from aionetstack.asyncio.forward import DatagramFlow, ForwardedConnection, ForwardedDatagrams
from aionetstack.errors import ClosedForReceive


@contextlib.asynccontextmanager
async def client_and_gateway() -> AsyncIterator[tuple[Stack, Stack, Any]]:
    """A client stack routing everything to a transparent gateway stack (L3 pipe)."""
    c_end, g_end = link.pipe(seed=1)
    async with Stack() as cli, Stack() as gw:
        cnic = cli.add_nic(c_end, ["198.18.0.1/24", "fd00:18::1/64"])
        cli.add_route("0.0.0.0/0", nic=cnic)
        cli.add_route("::/0", nic=cnic)
        gnic = gw.add_nic(g_end, [])
        gw.add_route("0.0.0.0/0", nic=gnic)
        gw.add_route("::/0", nic=gnic)
        yield cli, gw, gnic


async def test_tcp_forwarder_streams_both_ways() -> None:
    seen: list[ForwardedConnection] = []

    async def handler(conn: ForwardedConnection) -> None:
        seen.append(conn)
        reader, writer = await conn.accept()
        assert writer.get_extra_info("sockname")[:2] == conn.local
        h = hashlib.sha256()
        while chunk := await reader.read(65536):
            h.update(chunk)
        writer.write(f"{conn.local[0]}:{conn.local[1]} ".encode() + h.hexdigest().encode())
        await writer.drain()
        writer.close()  # half-close seen by the client as EOF after the answer

    async with client_and_gateway() as (cli, gw, gnic):
        fwd = gw.tcp_forwarder(handler, nic=gnic)
        assert gnic.promiscuous and gnic.spoofing

        async def one(host: str, port: int) -> None:
            r, w = await cli.open_connection(host, port)
            data = os.urandom(200_000)
            w.write(data)
            w.write_eof()
            answer = await r.read()
            assert answer == f"{host}:{port} ".encode() + hashlib.sha256(data).hexdigest().encode()
            w.close()

        dests = [("198.19.0.1", 80), ("198.19.77.2", 8080), ("fd00:19::1", 443),
                 ("fd00:aa::5", 22)]
        await asyncio.wait_for(asyncio.gather(*(one(h, p) for h, p in dests)), 30)
        assert sorted(c.local for c in seen) == sorted(dests)
        assert all(c.remote[0] in ("198.18.0.1", "fd00:18::1") for c in seen)
        fwd.close()


async def test_tcp_forwarder_reject_and_failing_handler() -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))

    async def handler(conn: ForwardedConnection) -> None:
        if conn.local[1] == 1:
            conn.reject()
        elif conn.local[1] == 2:
            raise RuntimeError("handler bug")
        # port 3: return without deciding -> rejected

    async with client_and_gateway() as (cli, gw, gnic):
        gw.tcp_forwarder(handler, nic=gnic)
        for port in (1, 2, 3):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(cli.open_connection("198.19.0.9", port), 10)
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)


async def test_tcp_forwarder_destination_filter() -> None:
    async def handler(conn: ForwardedConnection) -> None:
        _, w = await conn.accept()
        w.close()

    async with client_and_gateway() as (cli, gw, gnic):
        gw.tcp_forwarder(handler, nic=gnic,
                         destination_filter=lambda addr, port: port == 80)
        r, w = await asyncio.wait_for(cli.open_connection("198.19.0.9", 80), 10)
        assert await r.read() == b""
        w.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(cli.open_connection("198.19.0.9", 81), 10)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


@pytest.mark.parametrize(("local", "dests"), [
    ("0.0.0.0", [("198.19.0.1", 53), ("198.19.0.2", 5353)]),
    ("::", [("fd00:19::1", 53), ("fd00:19::2", 5353)]),
])
async def test_udp_forwarder_full_cone(local: str, dests: list[tuple[str, int]]) -> None:
    flows: list[DatagramFlow] = []

    async def handler(req: ForwardedDatagrams) -> None:
        flow = req.accept()
        flows.append(flow)
        with contextlib.suppress(ClosedForReceive):
            while True:
                data, dst = await flow.recv()
                flow.send(data.upper(), source=dst)  # the reply comes from where it went

    async with client_and_gateway() as (cli, gw, gnic):
        gw.udp_forwarder(handler, nic=gnic, idle_timeout=0.5)
        tr, proto = await cli.create_datagram_endpoint(_Collect, local_addr=(local, 0))
        for i, d in enumerate(dests):
            tr.sendto(b"hello %d" % i, d)
        got = [await asyncio.wait_for(proto.queue.get(), 10) for _ in dests]
        assert sorted((d, a[:2]) for d, a in got) == sorted(
            (b"HELLO %d" % i, d) for i, d in enumerate(dests))
        assert len(flows) == 1  # one mapping for the one client port
        await asyncio.sleep(1.0)  # idle timeout ends the flow, the handler returns
        assert flows[0].closed
        tr.sendto(b"again", dests[0])
        assert (await asyncio.wait_for(proto.queue.get(), 10))[0] == b"AGAIN"
        assert len(flows) == 2
        tr.close()


async def test_udp_forwarder_reject() -> None:
    async def handler(req: ForwardedDatagrams) -> None:
        req.reject("port-unreachable")

    class Err(_Collect):
        def __init__(self) -> None:
            super().__init__()
            self.errors: asyncio.Queue[Exception] = asyncio.Queue()

        def error_received(self, exc: Exception) -> None:
            self.errors.put_nowait(exc)

    async with client_and_gateway() as (cli, gw, gnic):
        gw.udp_forwarder(handler, nic=gnic)
        tr, proto = await cli.create_datagram_endpoint(Err, remote_addr=("198.19.0.1", 53))
        tr.sendto(b"x")
        exc = await asyncio.wait_for(proto.errors.get(), 10)
        assert isinstance(exc, ConnectionRefusedError)
        tr.close()


async def test_stack_close_ends_flows_and_handlers() -> None:
    ended: list[BaseException] = []
    started = asyncio.Event()

    async def handler(req: ForwardedDatagrams) -> None:
        flow = req.accept()
        started.set()
        try:
            await flow.recv()
            await flow.recv()
        except ClosedForReceive as exc:
            ended.append(exc)

    async with client_and_gateway() as (cli, gw, gnic):
        fwd = gw.udp_forwarder(handler, nic=gnic)
        tr, _ = await cli.create_datagram_endpoint(_Collect, remote_addr=("198.19.0.1", 53))
        tr.sendto(b"x")
        await asyncio.wait_for(started.wait(), 10)
        gw.close()
        await asyncio.wait_for(asyncio.gather(*fwd.tasks), 10)
        assert len(ended) == 1 and gw.udp.forwarder is None and gw.tcp.forwarder is None
        tr.close()
