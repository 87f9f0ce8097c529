"""A small SOCKS5 client (RFC 1928) on the host's asyncio sockets, for ``aionetstack proxy``.

Supported: the "no authentication" method only (no username/password, no GSSAPI); CONNECT
(TCP) and UDP ASSOCIATE (UDP, datagrams must not be fragmented: FRAG is always 0 and fragments
received are dropped); destinations given as IPv4 or IPv6 addresses (ATYP 1 and 4; the proxy may
answer with a domain name, ATYP 3, for its relay address).  BIND is not supported.

A UDP association ends with its control connection (RFC 1928 §7): ``UdpAssociation`` watches
that TCP connection, and when the server closes or resets it the association's UDP socket is
closed, ``recvfrom()`` raises ``ClosedForReceive`` and ``sendto()`` raises ``ClosedForSend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from aionetstack.errors import (
    ClosedForReceive,
    ClosedForSend,
    ConnectionRefused,
    HostUnreachable,
    ProtocolError,
)

HostPort = tuple[str, int]

_REPLIES = {1: "general SOCKS server failure", 2: "connection not allowed by ruleset",
            3: "network unreachable", 4: "host unreachable", 5: "connection refused",
            6: "TTL expired", 7: "command not supported", 8: "address type not supported"}


def encode_address(host: str, port: int) -> bytes:
    """ATYP + address + port (RFC 1928 §4/§5)."""
    ip = ipaddress.ip_address(host)
    atyp = 1 if ip.version == 4 else 4
    return bytes([atyp]) + ip.packed + struct.pack("!H", port)


def decode_address(data: bytes, offset: int = 0) -> tuple[HostPort, int]:
    """(host, port) and the offset after them; raises ProtocolError on a bad encoding."""
    try:
        atyp = data[offset]
        if atyp == 1:
            end = offset + 5
            host = str(ipaddress.IPv4Address(data[offset + 1:end]))
        elif atyp == 4:
            end = offset + 17
            host = str(ipaddress.IPv6Address(data[offset + 1:end]))
        elif atyp == 3:
            n = data[offset + 1]
            end = offset + 2 + n
            host = data[offset + 2:end].decode("idna")
        else:
            raise ProtocolError(f"SOCKS5: unknown address type {atyp}")
        if len(data) < end + 2:
            raise ProtocolError("SOCKS5: truncated address")
        return (host, struct.unpack_from("!H", data, end)[0]), end + 2
    except (IndexError, ValueError, UnicodeError) as exc:
        raise ProtocolError(f"SOCKS5: bad address ({exc})") from None


async def _read_reply(reader: asyncio.StreamReader) -> HostPort:
    head = await reader.readexactly(4)
    if head[0] != 5:
        raise ProtocolError("SOCKS5: the server does not speak version 5")
    if head[1] != 0:
        why = _REPLIES.get(head[1], f"error {head[1]}")
        exc_type = ConnectionRefused if head[1] in (2, 5) else HostUnreachable
        raise exc_type(f"SOCKS5 server: {why}")
    atyp = head[3]
    if atyp == 1:
        rest = await reader.readexactly(6)
    elif atyp == 4:
        rest = await reader.readexactly(18)
    elif atyp == 3:
        n = await reader.readexactly(1)
        rest = n + await reader.readexactly(n[0] + 2)
    else:
        raise ProtocolError(f"SOCKS5: unknown address type {atyp}")
    return decode_address(bytes([atyp]) + rest)[0]


async def _handshake(server: HostPort, command: int, dst: HostPort,
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, HostPort]:
    reader, writer = await asyncio.open_connection(server[0], server[1])
    try:
        writer.write(b"\x05\x01\x00")  # version 5, one method: no authentication
        choice = await reader.readexactly(2)
        if choice[0] != 5 or choice[1] != 0:
            raise ProtocolError("SOCKS5 server refuses unauthenticated clients")
        writer.write(bytes([5, command, 0]) + encode_address(*dst))
        bound = await _read_reply(reader)
    except asyncio.IncompleteReadError:
        writer.close()
        raise ProtocolError("SOCKS5 server closed the connection") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer, bound


async def open_connection(server: HostPort, dst: HostPort,
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """CONNECT through the SOCKS5 server ``server`` to ``dst``; streams to the destination."""
    reader, writer, _ = await _handshake(server, 1, dst)
    return reader, writer


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, HostPort]] = deque()
        self.waiters: list[asyncio.Future[None]] = []
        self.on_lost: Callable[[Exception | None], None] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # RFC 1928 §7: RSV(2) FRAG(1) ADDR PORT DATA; fragments (FRAG != 0) are dropped
        if len(data) < 4 or data[2] != 0:
            return
        try:
            src, off = decode_address(data, 3)
        except ProtocolError:
            return
        if len(self.queue) < _MAX_QUEUED:
            self.queue.append((data[off:], src))
            self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost(exc)

    def wake(self) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters.clear()


_MAX_QUEUED = 1024  # datagrams received and not yet taken by recvfrom(); more are dropped


class UdpAssociation:
    """UDP ASSOCIATE: ``sendto(data, dst)`` and ``await recvfrom()`` through the relay.

    The association lasts as long as its control connection (RFC 1928 §7): a watcher task
    reads that connection, and when the server closes or resets it the association ends --
    the UDP socket is closed, ``recvfrom()`` (pending or later) raises ``ClosedForReceive``
    and ``sendto()`` raises ``ClosedForSend``, each saying why.  ``close()`` ends it from this
    side (idempotent; the control connection is closed, which tells the server).  ``closed``
    and ``await wait_closed()`` tell when it has ended, for either reason.
    """

    def __init__(self, reader: asyncio.StreamReader, control: asyncio.StreamWriter,
                 transport: asyncio.DatagramTransport, protocol: _UdpProtocol,
                 relay: HostPort) -> None:
        self._control = control
        self._transport = transport
        self._protocol = protocol
        self.relay = relay
        self._why: str | None = None  # set when the association has ended
        self._ended = asyncio.Event()
        protocol.on_lost = self._transport_lost
        self._watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._watch(reader))

    @classmethod
    async def open(cls, server: HostPort, family: int) -> UdpAssociation:
        any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
        reader, writer, relay = await _handshake(server, 3, (any_addr, 0))
        try:
            if ipaddress.ip_address(relay[0]).is_unspecified:
                relay = (server[0], relay[1])  # "the same address as the server"
        except ValueError:
            pass  # a name: used as it is
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(
                _UdpProtocol, remote_addr=relay)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, transport, protocol, relay)

    @property
    def closed(self) -> bool:
        """True once the association has ended (``close()`` or its control connection)."""
        return self._why is not None

    async def wait_closed(self) -> None:
        """Wait until the association has ended, for whatever reason."""
        await self._ended.wait()

    def sendto(self, data: bytes, dst: HostPort) -> None:
        """Send ``data`` to ``dst`` through the relay; ``ClosedForSend`` once ended."""
        if self._why is not None:
            raise ClosedForSend(self._why)
        self._transport.sendto(b"\x00\x00\x00" + encode_address(*dst) + data)

    async def recvfrom(self) -> tuple[bytes, HostPort]:
        """The next datagram and its source; ``ClosedForReceive`` once the association has
        ended (datagrams still queued then are dropped: the relay is gone)."""
        proto = self._protocol
        while True:
            if self._why is not None:
                raise ClosedForReceive(self._why)
            if proto.queue:
                return proto.queue.popleft()
            fut = asyncio.get_running_loop().create_future()
            proto.waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(ValueError):
                        proto.waiters.remove(fut)

    def close(self) -> None:
        """End the association (idempotent): the UDP socket and the control connection."""
        self._end("the UDP association is closed")

    # -- internals ---------------------------------------------------------------------------
    async def _watch(self, reader: asyncio.StreamReader) -> None:
        # RFC 1928 §7: "A UDP association terminates when the TCP connection that the UDP
        # ASSOCIATE request arrived on terminates."  The server has nothing more to say on
        # it after the reply; anything it sends is read and dropped.
        why = "the SOCKS5 server closed the UDP association's control connection"
        try:
            while await reader.read(4096):
                pass
        except asyncio.CancelledError:
            raise  # close(): already ended
        except Exception as exc:  # a reset, or any other failure of the connection
            why = f"the UDP association's control connection to the SOCKS5 server failed " \
                  f"({str(exc) or type(exc).__name__})"
        self._end(why)

    def _transport_lost(self, exc: Exception | None) -> None:
        if exc is not None:  # the UDP socket failed (not our own close())
            self._end(f"the UDP association's socket failed ({exc})")

    def _end(self, why: str) -> None:
        if self._why is not None:
            return
        self._why = why
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        self._transport.close()
        self._control.close()
        self._protocol.queue.clear()
        self._protocol.wake()
        self._ended.set()
