"""Flow control end to end: a paused reader closes the TCP window, the writer's transport
pauses its protocol, memory stays bounded on both sides, and everything arrives afterwards."""

from __future__ import annotations

import asyncio

from tcp_aio_helpers import B4, Factory, Rec, assert_no_leaks, payload, sha, tcp_pair, wait_until

from aionetstack.stack.waiter import EVENT_OUT

TOTAL = 3_000_000
CHUNK = 32 * 1024


class Pump(Rec):
    """Writes ``data`` in chunks, only while the transport does not ask it to pause."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.src = data
        self.off = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.max_transport_buffer = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        self.can_write.clear()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.can_write.set()

    async def run(self) -> None:
        assert self.transport is not None
        while self.off < len(self.src):
            await self.can_write.wait()
            chunk = self.src[self.off:self.off + CHUNK]
            self.transport.write(chunk)
            self.off += len(chunk)
            self.max_transport_buffer = max(self.max_transport_buffer,
                                            self.transport._buffer_size)  # type: ignore
            await asyncio.sleep(0)
        self.transport.write_eof()


async def test_paused_reader_closes_the_window_and_pauses_the_writer() -> None:
    data = payload(TOTAL, seed=11)
    async with tcp_pair(delay=0.001) as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, pump = await net.a.create_connection(lambda: Pump(data), B4, server.addresses[0][1])
        assert isinstance(pump, Pump)
        reader = await factory.next()
        rtr = reader.transport
        rtr.pause_reading()
        task = asyncio.create_task(pump.run())

        r_ep = rtr.get_extra_info("endpoint")
        w_ep = tr.get_extra_info("endpoint")
        await wait_until(lambda: rtr.get_extra_info("tcp_info")["rcv_wnd"] == 0, 5,
                         "the reader's window closing")
        await wait_until(lambda: pump.pauses >= 1, 2, "pause_writing")
        # stay in the zero-window state for a while (several persist probes) and watch memory
        for _ in range(30):
            await asyncio.sleep(0.01)
            assert r_ep.unread() <= r_ep.rcv.capacity
            assert w_ep.send_buffered() <= w_ep.snd.capacity
            assert rtr.get_extra_info("tcp_info")["rcv_wnd"] == 0
            assert tr.get_extra_info("tcp_info")["snd_wnd"] == 0
            assert len(reader.data) == 0  # a paused transport hands nothing over
        assert not pump.can_write.is_set()
        assert pump.off < TOTAL
        low, high = tr.get_write_buffer_limits()
        assert pump.max_transport_buffer <= high + CHUNK
        assert tr.get_write_buffer_size() > low  # so the writer stays paused
        assert w_ep.send_buffered() > 0  # data waits on the closed window
        assert not tr.is_closing() and tr.get_extra_info("tcp_info")["state"] == "ESTABLISHED"

        rtr.resume_reading()
        await asyncio.wait_for(reader.eof, 10)
        await task
        assert sha(reader.data) == sha(data)
        assert pump.resumes >= 1
        assert pump.events.count("pause") == pump.events.count("resume")
        assert await reader.lost is None
        rtr.close()
        assert await pump.lost is None
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_pause_writing_with_a_slow_link() -> None:
    """A rate-limited wire: the writer is flow-controlled by acknowledgements alone."""
    data = payload(400_000, seed=12)
    async with tcp_pair(rate=4_000_000, delay=0.002) as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, pump = await net.a.create_connection(lambda: Pump(data), B4, server.addresses[0][1])
        assert isinstance(pump, Pump)
        tr.set_write_buffer_limits(high=20_000)
        reader = await factory.next()
        await pump.run()
        await asyncio.wait_for(reader.eof, 10)
        assert sha(reader.data) == sha(data)
        assert pump.pauses >= 1 and pump.resumes == pump.pauses
        assert pump.max_transport_buffer <= 20_000 + CHUNK
        assert await pump.lost is None
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_stream_reader_backpressure_bounds_memory() -> None:
    """StreamReader pauses the transport past 2*limit; the window closes; drain() blocks."""
    data = payload(2_000_000, seed=13)
    async with tcp_pair() as net:
        conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await conns.put((r, w))

        server = await net.b.start_server(on_conn, B4, 0, limit=16 * 1024)
        reader, writer = await net.a.open_connection(B4, server.addresses[0][1])
        sr, sw = await conns.get()
        rtr = sw.transport

        async def send() -> None:
            for i in range(0, len(data), 50_000):
                writer.write(data[i:i + 50_000])
                await writer.drain()
            writer.write_eof()

        task = asyncio.create_task(send())
        await wait_until(lambda: rtr.get_extra_info("tcp_info")["rcv_wnd"] == 0, 5,
                         "the window closing behind an unread StreamReader")
        await asyncio.sleep(0.05)
        assert not task.done()
        assert len(sr._buffer) <= 2 * 16 * 1024 + 256 * 1024  # type: ignore[attr-defined]
        assert not rtr.is_reading()
        got = await asyncio.wait_for(sr.read(-1), 10)
        await task
        assert sha(got) == sha(data)
        sw.close()
        await sw.wait_closed()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_write_eof_releases_a_paused_writer() -> None:
    """``drain()`` after ``write_eof()`` returns once the FIN is queued (CPython: once the
    buffer reached the kernel), and everything still arrives."""
    data = payload(1_000_000, seed=14)
    async with tcp_pair(delay=0.002) as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, proto = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        assert isinstance(proto, Rec)
        reader = await factory.next()
        tr.write(data)
        assert proto.pauses == 1
        tr.write_eof()
        await wait_until(lambda: proto.resumes == 1, 3, "resume_writing after write_eof")
        await asyncio.wait_for(reader.eof, 5)
        assert sha(reader.data) == sha(data)
        await wait_until(lambda: tr.get_write_buffer_size() == 0, 3, "everything acknowledged")
        assert await reader.lost is None
        assert await proto.lost is None
        server.close()
        await server.wait_closed()
        await assert_no_leaks(net.a, net.b)


async def test_engine_notifies_acks_after_shutdown_write() -> None:
    async with tcp_pair(delay=0.002) as net:
        server = await net.b.create_server(Factory(lambda: Rec(keep_open=True)), B4, 0)
        ep = await net.a._connect_endpoint((bytes([198, 18, 0, 2]), server.addresses[0][1]),
                                           None)
        events: list[int] = []
        ep.waiter.register(events.append, EVENT_OUT)
        assert ep.write(b"x" * 100_000) == 100_000
        ep.shutdown_write()
        await wait_until(lambda: ep.send_buffered() == 0, 3, "all acknowledged")
        try:
            assert any(e & EVENT_OUT for e in events)
        finally:
            ep.abort()
            server.close()
            server.abort_clients()
            await server.wait_closed()


async def test_acks_do_not_wake_a_transport_with_nothing_waiting() -> None:
    """EVENT_OUT matters to a transport only while its own buffer holds what the endpoint's
    send buffer did not take: the ACKs for writes the endpoint took whole wake nothing, and
    the interest comes back (and works) once the send buffer fills."""
    async with tcp_pair() as net:
        factory = Factory()
        server = await net.b.create_server(factory, B4, 0)
        tr, _ = await net.a.create_connection(Rec, B4, server.addresses[0][1])
        reader = await factory.next()
        runs: list[int] = []
        process = tr._process  # type: ignore[attr-defined]

        def counted() -> None:
            runs.append(1)
            process()

        tr._process = counted  # type: ignore[attr-defined]
        w_ep = tr.get_extra_info("endpoint")
        for i in range(10):
            tr.write(b"m%d" % i)
            await wait_until(lambda: not w_ep.snd.outstanding(), 2, "the ACK")
        assert runs == []  # ten ACKs, no wake-up of the writer's transport
        assert tr.get_write_buffer_size() == 0
        reader.transport.pause_reading()
        big = payload(2_000_000, seed=13)
        tr.write(big)  # more than the send buffer and the peer's window take
        assert tr.get_write_buffer_size() > 0
        reader.transport.resume_reading()
        await wait_until(lambda: len(reader.data) == 10 * 2 + len(big), 10, "the data")
        assert tr.get_write_buffer_size() == 0 and runs  # flushed on EVENT_OUT
        assert bytes(reader.data)[20:] == big
        tr.close()
        server.close()
        await server.wait_closed()
