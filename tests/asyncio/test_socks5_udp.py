"""``aionetstack.socks5.UdpAssociation`` against a minimal in-test SOCKS5 server on loopback.

The server speaks only what RFC 1928 needs for "no authentication" + UDP ASSOCIATE: one relay
socket per association on 127.0.0.1, which forwards the client's datagrams to their DST and
wraps the answers in the §7 header.  The test can close (or reset) the control connection from
the server side and sees when the client closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from aionetstack.errors import ClosedForReceive, ClosedForSend, NetstackError
from aionetstack.socks5 import UdpAssociation

LOOP4 = "127.0.0.1"


def _dec(data: bytes, off: int) -> tuple[tuple[str, int], int]:
    assert data[off] == 1, "the test server only relays IPv4"
    host = socket.inet_ntoa(data[off + 1:off + 5])
    return (host, struct.unpack_from("!H", data, off + 5)[0]), off + 7


def _enc(host: str, port: int) -> bytes:
    return b"\x01" + socket.inet_aton(host) + struct.pack("!H", port)


@dataclass
class Session:
    """One UDP ASSOCIATE as the server sees it."""

    writer: asyncio.StreamWriter
    relay: Any  # the relay's DatagramTransport
    eof: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Socks5Server:
    port: int = 0
    sessions: list[Session] = field(default_factory=list)
    new_session: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def socks5_server() -> AsyncIterator[Socks5Server]:
    loop = asyncio.get_running_loop()
    srv = Socks5Server()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readexactly(2)
        methods = await r.readexactly(head[1])
        assert head[0] == 5 and 0 in methods
        w.write(b"\x05\x00")  # RFC 1928 §3: no authentication
        req = await r.readexactly(4)
        assert req[:3] == b"\x05\x03\x00" and req[3] == 1  # UDP ASSOCIATE, IPv4
        await r.readexactly(6)
        client: list[tuple[str, int]] = []

        class Relay(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t: Any = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                client[:] = [addr]
                if data[2] != 0:
                    return
                dst, off = _dec(data, 3)
                out.sendto(data[off:], dst)

        class Out(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if client and not rtr.is_closing():
                    rtr.sendto(b"\x00\x00\x00" + _enc(addr[0], addr[1]) + data, client[0])

        rtr, _ = await loop.create_datagram_endpoint(Relay, local_addr=(LOOP4, 0))
        out, _ = await loop.create_datagram_endpoint(Out, local_addr=(LOOP4, 0))
        session = Session(w, rtr)
        srv.sessions.append(session)
        # the relay's address as 0.0.0.0: "the same address as the server" for the client
        w.write(b"\x05\x00\x00" + _enc("0.0.0.0", rtr.get_extra_info("sockname")[1]))
        srv.new_session.set()
        with contextlib.suppress(OSError):
            while await r.read(4096):
                pass
        session.eof.set()  # the association lives as long as the control connection
        rtr.close()
        out.close()
        w.close()

    server = await asyncio.start_server(handle, LOOP4, 0)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()
        for s in srv.sessions:
            s.writer.close()
            s.relay.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def udp_echo() -> AsyncIterator[tuple[str, int]]:
    """A UDP echo target on loopback that answers ``echo:<data>``."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(b"echo:" + data, addr)

    tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=(LOOP4, 0))
    try:
        yield tr.get_extra_info("sockname")[:2]
    finally:
        tr.close()


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Socks5Server, tuple[str, int]]]:
    async with socks5_server() as srv, udp_echo() as echo:
        yield srv, echo


@pytest.fixture(autouse=True)
async def _no_loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail on anything asyncio reports through the exception handler ("Task was destroyed
    but it is pending", "Task exception was never retrieved", ...)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    await asyncio.sleep(0.01)  # let closing transports and cancelled tasks finish
    gc.collect()  # a pending task dropped now would be reported here
    assert not errors, errors


async def _roundtrip(assoc: UdpAssociation, echo: tuple[str, int], payload: bytes) -> None:
    for _ in range(5):  # UDP on loopback hardly loses anything, but retry anyway
        assoc.sendto(payload, echo)
        try:
            data, src = await asyncio.wait_for(assoc.recvfrom(), 2)
        except TimeoutError:
            continue
        assert (data, src) == (b"echo:" + payload, echo)
        return
    raise AssertionError("no echo through the association")


async def _open(srv: Socks5Server) -> tuple[UdpAssociation, Session]:
    srv.new_session.clear()
    assoc = await asyncio.wait_for(UdpAssociation.open((LOOP4, srv.port), socket.AF_INET), 5)
    await asyncio.wait_for(srv.new_session.wait(), 5)
    return assoc, srv.sessions[-1]


# -- tests -----------------------------------------------------------------------------------
async def test_datagrams_relay_both_ways(setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    assoc, _ = await _open(srv)
    assert assoc.relay[0] == LOOP4  # 0.0.0.0 in the reply: the server's own address
    assert not assoc.closed
    for i in range(3):
        await _roundtrip(assoc, echo, b"ping %d" % i)
    assoc.close()


async def test_server_closing_control_connection_ends_association(
        setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    assoc, session = await _open(srv)
    await _roundtrip(assoc, echo, b"before")
    pending = asyncio.ensure_future(assoc.recvfrom())
    await asyncio.sleep(0.05)
    assert not pending.done()
    session.writer.close()  # RFC 1928 §7: the association terminates with the connection
    with pytest.raises(ClosedForReceive) as exc_info:
        await asyncio.wait_for(pending, 3)
    assert "SOCKS5 server closed" in str(exc_info.value)
    assert "control connection" in str(exc_info.value)
    assert isinstance(exc_info.value, NetstackError)
    assert assoc.closed
    await asyncio.wait_for(assoc.wait_closed(), 1)
    assert assoc._transport.is_closing()  # the UDP socket is closed
    with pytest.raises(ClosedForReceive):  # later calls too, at once
        await asyncio.wait_for(assoc.recvfrom(), 1)
    with pytest.raises(ClosedForSend, match="control connection"):
        assoc.sendto(b"into the void", echo)
    assoc.close()
    assoc.close()  # idempotent


async def test_server_reset_of_control_connection_ends_association(
        setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    assoc, session = await _open(srv)
    await _roundtrip(assoc, echo, b"before")
    sock = session.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.writer.transport.abort()  # a RST
    with pytest.raises(ClosedForReceive, match="control connection"):
        await asyncio.wait_for(assoc.recvfrom(), 3)
    assert assoc.closed
    with pytest.raises(ClosedForSend):
        assoc.sendto(b"x", echo)


async def test_data_on_control_connection_is_ignored(
        setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    assoc, session = await _open(srv)
    session.writer.write(b"unexpected bytes after the reply")
    await asyncio.sleep(0.05)
    assert not assoc.closed
    await _roundtrip(assoc, echo, b"still alive")
    assoc.close()


async def test_close_twice_and_server_sees_eof(
        setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    assoc, session = await _open(srv)
    await _roundtrip(assoc, echo, b"hello")
    pending = asyncio.ensure_future(assoc.recvfrom())
    await asyncio.sleep(0)
    assoc.close()
    assoc.close()
    assert assoc.closed
    await asyncio.wait_for(assoc.wait_closed(), 1)
    with pytest.raises(ClosedForReceive, match="closed"):
        await asyncio.wait_for(pending, 1)
    with pytest.raises(ClosedForSend):
        assoc.sendto(b"x", echo)
    await asyncio.wait_for(session.eof.wait(), 3)  # the control connection ended


async def test_fresh_association_after_the_old_one_ended(
        setup: tuple[Socks5Server, tuple[str, int]]) -> None:
    srv, echo = setup
    old, session = await _open(srv)
    session.writer.close()
    await asyncio.wait_for(old.wait_closed(), 3)
    new, _ = await _open(srv)
    await _roundtrip(new, echo, b"again")
    assert len(srv.sessions) == 2
    new.close()
