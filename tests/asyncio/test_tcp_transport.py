"""``TcpTransport``: the ``asyncio.Transport`` contract over two in-memory stacks.

The reference is CPython's ``_SelectorSocketTransport`` (design.md, habit 5).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import sys
import weakref
from typing import Any

import pytest
from tcp_aio_helpers import (
    A4,
    A6,
    B4,
    B6,
    UNROUTABLE4,
    Factory,
    Net,
    Rec,
    assert_no_leaks,
    payload,
    sha,
    tcp_pair,
    wait_until,
)

from aionetstack.asyncio.transport import TcpTransport
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP


async def connect(net: Net, *, host: str = B4, cls: Any = Rec,
                  server_cls: Any = Rec) -> tuple[Any, Any, Any, Any]:
    """A connection a -> b; returns (client transport, client protocol, server proto, server)."""
    factory = Factory(server_cls)
    server = await net.b.create_server(factory, host, 0)
    port = server.addresses[0][1]
    tr, proto = await net.a.create_connection(cls, host, port)
    sproto = await factory.next()
    return tr, proto, sproto, server


async def shutdown(net: Net, *servers: Any) -> None:
    for s in servers:
        s.close()
        await s.wait_closed()
    await assert_no_leaks(net.a, net.b)


# -- connection set-up ------------------------------------------------------------------------

async def test_connection_made_is_called_soon_not_inline() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        ep = await net.a._connect_endpoint((bytes([198, 18, 0, 2]), server.addresses[0][1]),
                                           None)
        proto = Rec()
        tr = TcpTransport(net.a, ep, proto, asyncio.get_running_loop())
        assert proto.events == []  # not from inside the constructor
        await asyncio.sleep(0)
        assert proto.events == ["made"] and proto.transport is tr
        sproto = await factory.next()
        assert sproto.events == ["made"]
        tr.close()
        assert await sproto.lost is None and await proto.lost is None
        await shutdown(net, server)


async def test_completed_connect_and_accept_call_connection_made_without_a_loop_turn() -> None:
    """``create_connection`` returns with ``connection_made`` already called, and the server's
    protocol gets it from the accept callback itself (``start_now``): no extra loop iteration."""
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        callers: list[tuple[bool, str]] = []
        orig = Rec.connection_made

        def spy(self: Rec, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, TcpTransport)
            callers.append((transport._server is not None, sys._getframe(1).f_code.co_name))
            orig(self, transport)

        Rec.connection_made = spy  # type: ignore[method-assign]
        try:
            tr, proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
            assert isinstance(proto, Rec)
            assert proto.events == ["made"] and proto.transport is tr  # before returning
            sproto = await factory.next()
            assert sproto.events == ["made"]
        finally:
            Rec.connection_made = orig  # type: ignore[method-assign]
        # called by start_now (the connect, the accept callback), not by a call_soon handle
        assert sorted(callers) == [(False, "start_now"), (True, "start_now")]
        tr.close()
        assert await sproto.lost is None and await proto.lost is None
        await shutdown(net, server)


async def test_a_task_started_by_connection_made_runs_before_the_first_data() -> None:
    """The client's first bytes arrive with the handshake's ACK; still, as with CPython's
    selector transport, a task the server protocol starts in ``connection_made`` takes its first
    step before ``data_received`` (a stream handler may ``start_tls`` first)."""
    loop = asyncio.get_running_loop()
    order: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    class Server(Rec):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            tasks.append(loop.create_task(self.first_step()))

        async def first_step(self) -> None:
            order.append("task")

        def data_received(self, data: bytes) -> None:
            order.append("data")
            super().data_received(data)

    async with tcp_pair() as net:
        factory = Factory(Server)
        server = await net.b.create_server(factory, B4, 0)
        tr, _ = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        tr.write(b"first")  # leaves with the handshake's ACK
        sproto = await factory.next()
        assert await sproto.wait_bytes(5) == b"first"
        assert order == ["task", "data"]
        tr.close()
        assert await sproto.lost is None
        await shutdown(net, server)


async def test_connection_made_exception_goes_to_the_loop_handler() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx))
    boom = RuntimeError("boom")

    class Bad(Rec):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            raise boom

    try:
        async with tcp_pair() as net:
            factory = Factory()
            server = await net.b.create_server(factory, B4, 0)
            tr, _ = await net.a.create_connection(Bad, B4, server.addresses[0][1])
            assert [c["exception"] for c in contexts] == [boom]
            assert contexts[0]["transport"] is tr
            tr.close()
            sproto = await factory.next()
            assert await sproto.lost is None
            await shutdown(net, server)
    finally:
        loop.set_exception_handler(None)


async def test_create_connection_returns_connected_transport_and_protocol() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        assert isinstance(tr, asyncio.Transport) and isinstance(proto, Rec)
        assert proto.events == ["made"] and proto.transport is tr
        assert tr.get_protocol() is proto
        assert not tr.is_closing() and tr.is_reading()
        tr.write(b"hello")
        assert await sproto.wait_bytes(5) == b"hello"
        assert sproto.transport is not None
        sproto.transport.write(b"world")
        assert await proto.wait_bytes(5) == b"world"
        tr.close()
        await proto.lost
        await shutdown(net, server)


async def test_connect_to_closed_port_is_refused() -> None:
    async with tcp_pair() as net:
        with pytest.raises(ConnectionRefusedError) as ei:
            await net.a.create_connection(Rec, B4, 9)
        assert ei.value.errno == errno.ECONNREFUSED
        with pytest.raises(ConnectionRefusedError):
            await net.a.create_connection(Rec, B6, 9)
        await assert_no_leaks(net.a, net.b)


async def test_connect_to_unroutable_address_is_enetunreach() -> None:
    async with tcp_pair() as net:
        with pytest.raises(OSError) as ei:
            await net.a.create_connection(Rec, UNROUTABLE4, 80)
        assert ei.value.errno == errno.ENETUNREACH
        with pytest.raises(OSError) as ei6:
            await net.a.create_connection(Rec, "fd01::7", 80)
        assert ei6.value.errno == errno.ENETUNREACH
        await assert_no_leaks(net.a, net.b)


async def test_connect_to_silent_host_times_out() -> None:
    async with tcp_pair(loss=1.0) as net:
        with pytest.raises(TimeoutError):
            await net.a.create_connection(Rec, B4, 80)
        await assert_no_leaks(net.a, net.b)


async def test_create_connection_rejects_bad_arguments() -> None:
    async with tcp_pair() as net:
        with pytest.raises(ValueError):
            await net.a.create_connection(Rec, B4, 80, server_hostname="x")
        with pytest.raises(ValueError):
            await net.a.create_connection(Rec, B4, 80, sock=object())
        await assert_no_leaks(net.a, net.b)


async def test_local_addr_is_used() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, _proto = await net.a.create_connection(Rec, B4, server.addresses[0][1],
                                                  local_addr=(A4, 40123))
        sproto = await factory.next()
        assert tr.get_extra_info("sockname") == (A4, 40123)
        assert sproto.transport.get_extra_info("peername") == (A4, 40123)
        tr.close()
        await sproto.lost
        await shutdown(net, server)


# -- extra info -------------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "client", "kernel_len"), [(B4, A4, 2), (B6, A6, 4)])
async def test_extra_info(host: str, client: str, kernel_len: int) -> None:
    async with tcp_pair() as net:
        tr, _proto, sproto, server = await connect(net, host=host)
        port = server.addresses[0][1]
        peer = tr.get_extra_info("peername")
        sock = tr.get_extra_info("sockname")
        assert len(peer) == kernel_len and len(sock) == kernel_len
        assert peer[:2] == (host, port)
        assert sock[0] == client and isinstance(sock[1], int) and sock[1] > 0
        if kernel_len == 4:  # like the kernel: (host, port, flowinfo, scope_id)
            assert peer[2:] == (0, 0) and sock[2:] == (0, 0)
        st = sproto.transport
        assert st.get_extra_info("peername") == sock
        assert st.get_extra_info("sockname") == peer
        info = tr.get_extra_info("tcp_info")
        assert info["state"] == "ESTABLISHED"
        assert {"srtt", "rto", "cwnd", "snd_wnd", "rcv_wnd", "snd_mss"} <= info.keys()
        assert tr.get_extra_info("stack") is net.a
        assert st.get_extra_info("stack") is net.b
        assert tr.get_extra_info("ssl_object") is None
        assert tr.get_extra_info("no-such-key", "dflt") == "dflt"
        tr.close()
        await sproto.lost
        await shutdown(net, server)


# -- writing ----------------------------------------------------------------------------------

async def test_write_writelines_and_type_check() -> None:
    async with tcp_pair() as net:
        tr, _proto, sproto, server = await connect(net)
        tr.write(b"a")
        tr.write(bytearray(b"bc"))
        tr.write(memoryview(b"xdex")[1:3])
        tr.writelines([b"f", bytearray(b"g"), memoryview(b"h")])
        tr.write(b"")
        with pytest.raises(TypeError):
            tr.write("text")  # type: ignore[arg-type]
        assert await sproto.wait_bytes(8) == b"abcdefgh"
        tr.close()
        await sproto.lost
        await shutdown(net, server)


async def test_write_copies_a_reused_bytearray() -> None:
    async with tcp_pair() as net:
        tr, _proto, sproto, server = await connect(net)
        big = payload(2_000_000)
        buf = bytearray(big)
        tr.write(buf)  # more than the endpoint takes at once: the rest waits in the transport
        buf[:] = b"\x00" * len(buf)
        assert sha(await sproto.wait_bytes(len(big))) == sha(big)
        tr.close()
        await sproto.lost
        await shutdown(net, server)


async def test_write_eof_half_closes_and_write_after_it_raises() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net, server_cls=lambda: Rec(keep_open=True))
        assert tr.can_write_eof()
        tr.write(b"request")
        tr.write_eof()
        tr.write_eof()  # idempotent
        with pytest.raises(RuntimeError):
            tr.write(b"more")
        await asyncio.wait_for(sproto.eof, 2)
        assert bytes(sproto.data) == b"request"
        # the server's eof_received returned True: it can still answer on the half-open conn
        st = sproto.transport
        assert not st.is_closing()
        st.write(b"response")
        assert await proto.wait_bytes(8) == b"response"
        assert not proto.eof.done()
        st.close()
        await asyncio.wait_for(proto.eof, 2)
        # the client's eof_received returned False: the transport closes itself
        assert await proto.lost is None
        assert await sproto.lost is None
        assert proto.events == ["made", "data", "eof", "lost"]
        assert sproto.events == ["made", "data", "eof", "lost"]
        await shutdown(net, server)


async def test_eof_received_false_closes_the_transport() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        tr.write_eof()
        await asyncio.wait_for(sproto.eof, 2)
        assert sproto.transport.is_closing()
        assert await sproto.lost is None
        await asyncio.wait_for(proto.eof, 2)
        assert await proto.lost is None
        assert proto.lost_calls == 1 and sproto.lost_calls == 1
        await shutdown(net, server)


async def test_write_buffer_size_counts_what_the_endpoint_did_not_take() -> None:
    """Like CPython's, whose size is its own buffer and not the kernel's socket buffer: the
    endpoint's send buffer (sndbuf) takes what fits, the transport counts only the rest."""
    async with tcp_pair(delay=0.01) as net:
        tr, _proto, sproto, server = await connect(net)
        ep = tr.get_extra_info("endpoint")
        assert tr.get_write_buffer_size() == 0
        tr.write(payload(100_000, seed=1))
        # all of it fits in the endpoint's send buffer: none left to the transport
        assert tr.get_write_buffer_size() == 0 and ep.send_buffered() == 100_000
        data = payload(1_000_000, seed=2)
        tr.write(data)
        # nothing is acknowledged yet (one-way delay 10 ms): the endpoint is full
        assert ep.send_buffered() == ep.snd.capacity
        assert tr.get_write_buffer_size() == 100_000 + len(data) - ep.snd.capacity
        got = await sproto.wait_bytes(100_000 + len(data))
        assert sha(got) == sha(payload(100_000, seed=1) + data)
        assert tr.get_write_buffer_size() == 0
        await wait_until(lambda: ep.send_buffered() == 0, what="all acknowledged")
        tr.close()
        await sproto.lost
        await shutdown(net, server)


async def test_set_write_buffer_limits_pause_and_resume_writing() -> None:
    async with tcp_pair(delay=0.005) as net:
        tr, proto, sproto, server = await connect(net)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        tr.set_write_buffer_limits(high=4000)
        assert tr.get_write_buffer_limits() == (1000, 4000)
        tr.set_write_buffer_limits(low=500)
        assert tr.get_write_buffer_limits() == (500, 2000)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=10, low=20)
        tr.set_write_buffer_limits(high=4000, low=1000)
        # a small send buffer, so that the transport's own buffer fills
        tr.get_extra_info("endpoint").set_buffer_sizes(sndbuf=500)
        tr.write(b"x" * 3000)
        assert proto.pauses == 0 and tr.get_write_buffer_size() == 2500
        tr.write(b"y" * 2000)  # 4500 > high: paused at once
        assert proto.pauses == 1
        tr.write(b"z" * 1000)
        assert proto.pauses == 1  # not again while paused
        await wait_until(lambda: proto.resumes == 1, what="resume_writing")
        assert tr.get_write_buffer_size() <= 1000
        assert proto.events[1:] == ["pause", "resume"]
        await sproto.wait_bytes(6000)
        # lowering the limits below the current size pauses at once
        tr.write(b"w" * 1000)
        assert tr.get_write_buffer_size() >= 500
        tr.set_write_buffer_limits(high=50, low=0)
        assert proto.pauses == 2
        await wait_until(lambda: proto.resumes == 2, what="second resume_writing")
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await sproto.lost
        await shutdown(net, server)


# -- reading ----------------------------------------------------------------------------------

async def test_pause_and_resume_reading() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.pause_reading()  # idempotent
        sproto.transport.write(b"while paused")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        tr.resume_reading()
        tr.resume_reading()
        assert tr.is_reading()
        assert await proto.wait_bytes(12) == b"while paused"
        # EOF is held back while paused as well
        tr.pause_reading()
        sproto.transport.write(b"!")
        sproto.transport.write_eof()
        await asyncio.sleep(0.05)
        assert not proto.eof.done() and proto.data == b"while paused"
        tr.resume_reading()
        await asyncio.wait_for(proto.eof, 2)
        assert proto.data == b"while paused!"
        assert await proto.lost is None
        assert not tr.is_reading()  # closing
        await sproto.lost
        await shutdown(net, server)


async def test_set_protocol_switches_the_receiver() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        sproto.transport.write(b"one")
        await proto.wait_bytes(3)
        other = Rec()
        tr.set_protocol(other)
        assert tr.get_protocol() is other
        sproto.transport.write(b"two")
        await wait_until(lambda: other.data == b"two", what="data at the new protocol")
        assert proto.data == b"one"
        sproto.transport.close()
        assert await other.lost is None
        assert not proto.lost.done()
        await shutdown(net, server)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, size: int = 1000) -> None:
        loop = asyncio.get_running_loop()
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizehints: list[int] = []
        self.transport: asyncio.Transport | None = None
        self.made: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made.set_result(None)

    def get_buffer(self, sizehint: int) -> bytearray:
        self.sizehints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]

    def eof_received(self) -> bool:
        self.eof.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_buffered_protocol() -> None:
    async with tcp_pair() as net:
        factory = Factory(Buffered)
        server = await net.b.create_server(factory, B4, 0)
        tr, proto = await net.a.create_connection(Buffered, B4, server.addresses[0][1])
        sproto = await factory.next()
        data = payload(300_000, seed=3)
        tr.write(data)
        tr.write_eof()
        await asyncio.wait_for(sproto.eof, 5)
        assert sha(sproto.data) == sha(data)
        assert all(h > 0 for h in sproto.sizehints)
        assert await sproto.lost is None
        await asyncio.wait_for(proto.eof, 2)
        assert await proto.lost is None
        await shutdown(net, server)


async def test_switch_between_plain_and_buffered_protocols() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        b = Buffered(7)
        tr.set_protocol(b)
        sproto.transport.write(b"0123456789abcdef")
        await wait_until(lambda: b.data == b"0123456789abcdef", what="buffered data")
        tr.set_protocol(proto)
        sproto.transport.write(b"plain")
        assert await proto.wait_bytes(5) == b"plain"
        tr.close()
        await sproto.lost
        await shutdown(net, server)


# -- closing ----------------------------------------------------------------------------------

async def test_close_flushes_pending_data_and_is_idempotent() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        data = payload(1_500_000, seed=5)  # far more than the endpoint's send buffer
        tr.write(data)
        ep = tr.get_extra_info("endpoint")
        assert tr.get_write_buffer_size() == len(data) - ep.send_buffered() > 0
        tr.close()
        assert tr.is_closing() and not tr.is_reading()
        tr.close()
        await asyncio.sleep(0)
        tr.close()
        assert not proto.lost.done()  # still flushing
        await asyncio.wait_for(sproto.eof, 5)
        assert sha(sproto.data) == sha(data)
        assert await proto.lost is None
        assert await sproto.lost is None
        await asyncio.sleep(0.01)
        assert proto.lost_calls == 1 and sproto.lost_calls == 1
        await shutdown(net, server)


async def test_resume_reading_after_close_delivers_nothing() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        tr.write(payload(1_500_000))  # close() must flush this first: the transport lingers
        tr.pause_reading()
        sproto.transport.write(b"late")
        ep = tr.get_extra_info("endpoint")
        await wait_until(lambda: ep.unread() == 4)
        tr.close()
        tr.resume_reading()
        tr.pause_reading()
        tr.resume_reading()
        assert not tr.is_reading()
        assert await proto.lost is None
        assert proto.data == b""
        assert [e for e in proto.events if e not in ("pause", "resume")] == ["made", "lost"]
        # the endpoint closed with unread data: the peer is reset (RFC 9293 §3.10.4)
        assert isinstance(await sproto.lost, ConnectionResetError)
        await shutdown(net, server)


async def test_write_eof_after_buffered_data_sends_fin_last() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net, server_cls=lambda: Rec(keep_open=True))
        data = payload(1_200_000, seed=8)
        tr.write(data[:700_000])
        tr.writelines([data[700_000:900_000], data[900_000:]])
        tr.write_eof()  # queued behind the transport's buffer
        await asyncio.wait_for(sproto.eof, 5)
        assert sha(sproto.data) == sha(data)
        assert tr.get_extra_info("tcp_info")["state"] in ("FIN-WAIT-1", "FIN-WAIT-2")
        sproto.transport.write(b"reply after eof")
        assert await proto.wait_bytes(15) == b"reply after eof"
        sproto.transport.close()
        assert await proto.lost is None and await sproto.lost is None
        await shutdown(net, server)


async def test_close_with_unread_data_resets_the_peer() -> None:
    """RFC 9293 §3.10.4 / RFC 2525 §2.17: closing with unread data sends RST (Linux too)."""
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        tr.pause_reading()
        sproto.transport.write(b"never read")
        await wait_until(lambda: tr.get_extra_info("endpoint").unread() == 10)
        tr.close()
        assert await proto.lost is None
        assert isinstance(await sproto.lost, ConnectionResetError)
        await shutdown(net, server)


async def test_abort_resets_the_peer_and_drops_buffers() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        tr.write(payload(1_000_000))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        tr.abort()
        tr.close()
        assert await proto.lost is None
        assert isinstance(await sproto.lost, ConnectionResetError)
        await asyncio.sleep(0.01)
        assert proto.lost_calls == 1 and sproto.lost_calls == 1
        assert len(sproto.data) < 1_000_000
        await shutdown(net, server)


async def test_peer_reset_reports_connection_reset_once() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        sproto.transport.abort()
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET
        assert tr.is_closing()
        tr.write(b"after reset")  # silently dropped, like CPython after connection loss
        tr.close()
        tr.abort()
        await asyncio.sleep(0.01)
        assert proto.lost_calls == 1 and proto.events == ["made", "lost"]
        await shutdown(net, server)


@pytest.mark.parametrize("action", ["write", "write_eof"])
async def test_write_racing_a_reset_still_reports_connection_lost(action: str) -> None:
    """A write between the RST's arrival and the transport noticing it (here: from another
    waiter of the same endpoint, as a relay would) must not swallow ``connection_lost``."""
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        ep = tr.get_extra_info("endpoint")

        def relay(_events: int) -> None:
            if ep.error is not None:
                if action == "write":
                    tr.write(b"relayed")
                else:
                    tr.write_eof()

        ep.waiter.register(relay, EVENT_ERR | EVENT_HUP)
        sproto.transport.abort()
        exc = await asyncio.wait_for(proto.lost, 2)
        assert isinstance(exc, ConnectionResetError)
        assert proto.lost_calls == 1
        await shutdown(net, server)


async def test_peer_vanishing_mid_connection_times_out() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        tr.write(b"ping")
        await sproto.wait_bytes(4)
        net.a_end.close()  # the wire is cut: 100 % loss in both directions
        tr.write(b"into the void")
        exc = await asyncio.wait_for(proto.lost, 5)
        assert isinstance(exc, TimeoutError) and exc.errno == errno.ETIMEDOUT
        assert proto.lost_calls == 1
        sproto.transport.abort()
        await sproto.lost
        await shutdown(net, server)


async def test_closing_a_stack_fails_its_transports() -> None:
    async with tcp_pair() as net:
        tr, proto, sproto, server = await connect(net)
        net.b.close()  # aborts every connection of b: nothing is left waiting
        exc_b = await asyncio.wait_for(sproto.lost, 2)
        assert isinstance(exc_b, ConnectionAbortedError)
        assert server.sockets == ()
        # b's RST died with its link (closing a pipe drops frames in flight): a times out
        tr.write(b"anyone?")
        exc = await asyncio.wait_for(proto.lost, 5)
        assert isinstance(exc, TimeoutError)
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_many_connections_no_leaks() -> None:
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        port = server.addresses[0][1]
        pairs = []
        for i in range(20):
            tr, proto = await net.a.create_connection(Rec, B4, port)
            tr.write(b"%d" % i)
            pairs.append((tr, proto))
        for _ in range(20):
            sp = await factory.next()
            await sp.wait_bytes(1)
            sp.transport.write(bytes(sp.data))
        for i, (tr, proto) in enumerate(pairs):
            assert await proto.wait_bytes(len(b"%d" % i)) == b"%d" % i
            (tr.close if i % 2 else tr.abort)()
        for sp in factory.made:
            await asyncio.wait_for(sp.lost, 2)
        await shutdown(net, server)


class _Quiet(asyncio.Protocol):
    """A protocol that keeps no reference to its transport."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


async def test_closed_connections_are_freed_without_the_cycle_collector() -> None:
    """Once both ends are closed and the user lets go, reference counting frees the transports
    and endpoints (no transport <-> waiter entry or endpoint <-> timer cycle waits for the
    garbage collector; the closing endpoint's TIME-WAIT is a compact record)."""
    async with tcp_pair() as net:
        factory = Factory(_Quiet)
        server = await net.b.create_server(factory, B4, 0)
        was = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            tr, proto = await net.a.create_connection(_Quiet, B4, server.addresses[0][1])
            sp = await factory.next()
            assert isinstance(proto, _Quiet)
            ep = tr.get_extra_info("endpoint")
            (srv_tr,) = server._transports
            srv_ep = srv_tr.get_extra_info("endpoint")
            refs = [weakref.ref(x) for x in (tr, srv_tr)]
            eps = [ep, srv_ep]  # compiled: no weak references, their holders are counted
            tr.close()
            await proto.lost
            srv_tr.close()
            await sp.lost
            await wait_until(lambda: eps[1].state.value == "CLOSED")
            del tr, ep, srv_tr, srv_ep
            await asyncio.sleep(0.01)
            assert [r() for r in refs] == [None] * 2
            # ``eps`` alone holds each endpoint (plus ``x`` and getrefcount's argument)
            assert [sys.getrefcount(x) for x in eps] == [3, 3]
        finally:
            if was:
                gc.enable()
        server.close()
        await assert_no_leaks(net.a, net.b)
