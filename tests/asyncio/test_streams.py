"""``open_connection``/``start_server`` with the standard library's StreamReader/StreamWriter."""

from __future__ import annotations

import asyncio

import pytest
from tcp_aio_helpers import B4, B6, assert_no_leaks, payload, sha, tcp_of, tcp_pair, wait_until

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def accept_into(queue: asyncio.Queue[Conn]) -> Conn:
    return await asyncio.wait_for(queue.get(), 3)


async def test_real_stream_objects_and_line_protocol() -> None:
    async with tcp_pair() as net:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            assert isinstance(r, asyncio.StreamReader) and isinstance(w, asyncio.StreamWriter)
            line = await r.readline()
            w.write(b"echo " + line)
            exact = await r.readexactly(5)
            w.write(exact[::-1] + b"\n")
            until = await r.readuntil(b"::")
            w.write(until + b"\r\n\r\n")
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readexactly(100)
            w.write(ei.value.partial)
            await w.drain()
            w.close()
            await w.wait_closed()

        server = await net.b.start_server(handle, B4, 0)
        reader, writer = await net.a.open_connection(B4, server.addresses[0][1])
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        assert writer.get_extra_info("peername") == (B4, server.addresses[0][1])
        writer.write(b"hello\nabcdeone::two")
        await writer.drain()
        assert await reader.readline() == b"echo hello\n"
        assert await reader.readexactly(6) == b"edcba\n"
        assert await reader.readuntil(b"\r\n\r\n") == b"one::\r\n\r\n"
        writer.write_eof()
        assert await reader.read() == b"two"
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_readline_limit_overrun() -> None:
    async with tcp_pair() as net:
        q: asyncio.Queue[Conn] = asyncio.Queue()
        server = await net.b.start_server(lambda r, w: q.put_nowait((r, w)), B4, 0, limit=64)
        _reader, writer = await net.a.open_connection(B4, server.addresses[0][1])
        sr, sw = await accept_into(q)
        writer.write(b"x" * 100 + b"\nshort\n")
        with pytest.raises(ValueError):
            await sr.readline()
        assert await sr.readline() == b"short\n"
        writer.close()
        await writer.wait_closed()
        assert await sr.read() == b""
        sw.close()
        await sw.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


@pytest.mark.parametrize("host", [B4, B6])
async def test_10mb_echo(host: str) -> None:
    data = payload(10 * 1024 * 1024, seed=21)
    async with tcp_pair() as net:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while chunk := await r.read(256 * 1024):
                w.write(chunk)
                await w.drain()
            w.close()
            await w.wait_closed()

        server = await net.b.start_server(echo, host, 0)
        reader, writer = await net.a.open_connection(host, server.addresses[0][1])
        peer = writer.get_extra_info("peername")
        assert peer[0] == host and len(peer) == (2 if host == B4 else 4)

        async def send() -> None:
            view = memoryview(data)
            for i in range(0, len(data), 1 << 20):
                writer.write(view[i:i + (1 << 20)])
                await writer.drain()
            writer.write_eof()

        task = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(), 30)
        await task
        assert len(got) == len(data) and sha(got) == sha(data)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_half_close_other_side_keeps_sending(closer: str) -> None:
    """``write_eof`` on one side; the other still sends (more than a window) until it closes."""
    tail = payload(600_000, seed=22)
    async with tcp_pair() as net:
        q: asyncio.Queue[Conn] = asyncio.Queue()
        server = await net.b.start_server(lambda r, w: q.put_nowait((r, w)), B4, 0)
        cr, cw = await net.a.open_connection(B4, server.addresses[0][1])
        sr, sw = await accept_into(q)
        (er, ew), (kr, kw) = ((cr, cw), (sr, sw)) if closer == "client" else ((sr, sw), (cr, cw))
        # er/ew: the side that half-closes; kr/kw: the side that keeps sending
        ew.write(b"last words")
        ew.write_eof()
        assert ew.can_write_eof()
        assert await kr.read() == b"last words"
        assert kr.at_eof()
        assert not kw.is_closing()
        receiving = asyncio.create_task(er.readexactly(len(tail)))
        for i in range(0, len(tail), 100_000):
            kw.write(tail[i:i + 100_000])
            await asyncio.wait_for(kw.drain(), 5)
        got = await asyncio.wait_for(receiving, 5)
        assert sha(got) == sha(tail)
        kw.write(b"bye")
        kw.close()
        await kw.wait_closed()
        assert await er.read() == b"bye"
        ew.close()
        await ew.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_stream_reset_surfaces_as_connection_reset() -> None:
    async with tcp_pair() as net:
        q: asyncio.Queue[Conn] = asyncio.Queue()
        server = await net.b.start_server(lambda r, w: q.put_nowait((r, w)), B4, 0)
        reader, writer = await net.a.open_connection(B4, server.addresses[0][1])
        _sr, sw = await accept_into(q)
        sw.transport.abort()
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        with pytest.raises(ConnectionResetError):
            writer.write(b"x")
            await writer.drain()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_open_connection_by_name_and_refused() -> None:
    async with tcp_pair() as net:
        net.a.add_host("server.test", B6, B4)
        q: asyncio.Queue[Conn] = asyncio.Queue()
        server = await net.b.start_server(lambda r, w: q.put_nowait((r, w)), [B4, B6], 0)
        port = server.addresses[0][1]
        _reader, writer = await net.a.open_connection("server.test", port)
        assert writer.get_extra_info("peername")[:2] == (B6, port)  # first address first
        _sr, sw = await accept_into(q)
        for w in (writer, sw):
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await net.a.open_connection("server.test", port)
        await assert_no_leaks(net.a, net.b)


@pytest.mark.parametrize("host", [B4, B6])
async def test_echo_over_an_ethernet_pipe(host: str) -> None:
    """L2 pipe: the first SYN waits for ARP / NDP resolution."""
    data = payload(300_000, seed=23)
    async with tcp_pair(l2=True) as net:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while chunk := await r.read(65536):
                w.write(chunk)
                await w.drain()
            w.close()

        server = await net.b.start_server(echo, host, 0)
        reader, writer = await net.a.open_connection(host, server.addresses[0][1])
        sender = asyncio.create_task(_send_all(writer, data))
        got = await asyncio.wait_for(reader.read(), 10)
        await sender
        assert sha(got) == sha(data)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        # neighbour entries keep their own timers on an L2 link: check TCP state only
        await wait_until(lambda: not any(tcp_of(s).endpoints or tcp_of(s).time_wait
                                         for s in (net.a, net.b)))
        assert len(net.a.ports) == 0 and len(net.b.ports) == 0


async def _send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    writer.write_eof()


async def test_request_reply_close_sends_no_pure_ack_but_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Connect, a 1-byte request echoed back, close: the handshake's ACK rides on the request,
    the window update after the server's read on the reply, the ACK of each FIN on the FIN the
    application sends at once -- seven segments, the only pure ACK the last one (ACKs due "now"
    go at the end of the turn, after the application's immediate answer)."""
    from aionetstack.link.pipe import PipeEnd
    from aionetstack.wire.tcp import ACK, FIN, SYN

    sent: list[tuple[str, int, int]] = []
    orig = PipeEnd.send

    def spy(self: PipeEnd, frame: bytes | bytearray | memoryview) -> None:
        b = bytes(frame)
        ihl = (b[0] & 15) * 4
        doff = (b[ihl + 12] >> 4) * 4
        sent.append((self.name[-1], b[ihl + 13] & (SYN | ACK | FIN), len(b) - ihl - doff))
        orig(self, frame)

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(100):
            w.write(data)
        w.close()

    async with tcp_pair() as net:
        server = await net.b.start_server(echo, B4, 0)
        monkeypatch.setattr(PipeEnd, "send", spy)
        for _ in range(2):
            sent.clear()
            r, w = await net.a.open_connection(B4, server.addresses[0][1])
            w.write(b"x")
            assert await r.readexactly(1) == b"x"
            w.close()
            await w.wait_closed()
            await wait_until(lambda: len(sent) >= 7 and sent[-1][1] == ACK)
            assert sent == [("a", SYN, 0), ("b", SYN | ACK, 0), ("a", ACK, 1), ("b", ACK, 1),
                            ("a", ACK | FIN, 0), ("b", ACK | FIN, 0), ("a", ACK, 0)]
        monkeypatch.undo()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)
