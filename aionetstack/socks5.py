"""A small SOCKS5 client (RFC 1928) on the host's asyncio sockets, for ``aionetstack proxy``.

Supported: the "no authentication" method only (no username/password, no GSSAPI); CONNECT
(TCP) and UDP ASSOCIATE (UDP, datagrams must not be fragmented: FRAG is always 0 and fragments
received are dropped); destinations given as IPv4 or IPv6 addresses (ATYP 1 and 4; the proxy may
answer with a domain name, ATYP 3, for its relay address).  BIND is not supported.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Any

from aionetstack.errors import ConnectionRefused, HostUnreachable, ProtocolError

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
        self.queue: asyncio.Queue[tuple[bytes, HostPort]] = asyncio.Queue(maxsize=1024)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # RFC 1928 §7: RSV(2) FRAG(1) ADDR PORT DATA; fragments (FRAG != 0) are dropped
        if len(data) < 4 or data[2] != 0:
            return
        try:
            src, off = decode_address(data, 3)
        except ProtocolError:
            return
        if not self.queue.full():
            self.queue.put_nowait((data[off:], src))


class UdpAssociation:
    """UDP ASSOCIATE: ``sendto(data, dst)`` and ``await recvfrom()`` through the relay; the
    association lasts as long as its control connection (``close()`` ends both)."""

    def __init__(self, control: asyncio.StreamWriter, transport: asyncio.DatagramTransport,
                 protocol: _UdpProtocol, relay: HostPort) -> None:
        self._control = control
        self._transport = transport
        self._protocol = protocol
        self.relay = relay

    @classmethod
    async def open(cls, server: HostPort, family: int) -> UdpAssociation:
        any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
        _, writer, relay = await _handshake(server, 3, (any_addr, 0))
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
        return cls(writer, transport, protocol, relay)

    def sendto(self, data: bytes, dst: HostPort) -> None:
        self._transport.sendto(b"\x00\x00\x00" + encode_address(*dst) + data)

    async def recvfrom(self) -> tuple[bytes, HostPort]:
        return await self._protocol.queue.get()

    def close(self) -> None:
        self._transport.close()
        self._control.close()
