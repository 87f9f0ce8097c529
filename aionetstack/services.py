"""Small standard services that run on a stack: echo, discard, chargen, HTTP status page.

* echo (RFC 862): TCP sends back every byte; UDP sends back every datagram.
* discard (RFC 863): reads and throws away; the TCP server closes after the client's FIN.
* chargen (RFC 864): TCP streams the 72-character rotating pattern until the client goes away
  (with flow control: writing pauses while the peer's window is full); UDP answers each datagram
  with a datagram of up to 512 characters of the pattern.
* http: HTTP/1.1 via h11 — ``GET /`` returns a status page (200), keep-alive honoured,
  anything else 404/405.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import h11

from aionetstack.asyncio.server import Server
from aionetstack.asyncio.stack import Stack

_PATTERN = bytes(range(33, 127))  # the 94 printable ASCII characters

log = logging.getLogger("aionetstack.services")  # INFO: one line per connection opened/closed


def chargen_line(n: int) -> bytes:
    """Line ``n`` of the RFC 864 pattern: 72 characters starting one further along, CRLF."""
    start = n % len(_PATTERN)
    doubled = _PATTERN + _PATTERN
    return doubled[start:start + 72] + b"\r\n"


def _peer(transport: asyncio.BaseTransport) -> str:
    host, port = transport.get_extra_info("peername")[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- TCP ------------------------------------------------------------------------------------
class _Logged(asyncio.Protocol):
    """Logs each connection when it opens and closes (``-v``), with the bytes received."""

    service = "tcp"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = _peer(transport)
        self.rx = 0
        port = transport.get_extra_info("sockname")[1]
        log.info("tcp %s: connection from %s to port %d", self.service, self.peer, port)

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("tcp %s: %s closed, %d bytes received%s", self.service, self.peer, self.rx,
                 f" ({exc})" if exc else "")


class _Echo(_Logged):
    service = "echo"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        self.t.write(data)
        if self.t.get_write_buffer_size() > 1 << 20:
            self.t.pause_reading()  # resumed by resume_writing: a slow reader throttles us

    def pause_writing(self) -> None:
        self.t.pause_reading()

    def resume_writing(self) -> None:
        self.t.resume_reading()

    def eof_received(self) -> bool:
        return False  # close after echoing everything (close() flushes)


class _Discard(_Logged):
    service = "discard"

    def eof_received(self) -> bool:
        return False  # RFC 863: the server closes after the client's FIN


class _Chargen(_Logged):
    service = "chargen"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        self.t = transport
        self.line = 0
        self.paused = False
        self.block = b"".join(chargen_line(i) for i in range(len(_PATTERN)))  # one full cycle
        self._fill()

    def _fill(self) -> None:
        while not self.paused and not self.t.is_closing():
            self.t.write(self.block)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)  # RFC 864: data from the client is thrown away

    def eof_received(self) -> bool:
        return False


class _Http(_Logged):
    service = "http"

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        self.t = transport
        self.conn = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._process()
        return False

    def _send(self, event: Any) -> None:
        out = self.conn.send(event)
        if out:
            self.t.write(out)

    def _process(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self._respond(400, b"bad request\n", "text/plain")
                self.t.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    try:
                        self.conn.start_next_cycle()  # keep-alive: the next request
                    except h11.LocalProtocolError:
                        self.t.close()
                        return
                    continue
                if (event is h11.PAUSED or self.conn.their_state is h11.CLOSED) and (
                        self.conn.our_state in (h11.MUST_CLOSE, h11.CLOSED)):
                    self.t.close()
                return
            if isinstance(event, h11.ConnectionClosed):
                self.t.close()
                return
            if isinstance(event, h11.Request):
                target = event.target.decode(errors="replace")
                log.info("http: %s %s %s", self.peer, event.method.decode(errors="replace"),
                         target)
                if event.method not in (b"GET", b"HEAD"):
                    self._respond(405, b"method not allowed\n", "text/plain")
                elif target in ("/", "/index.html"):
                    self._respond(200, self._status_page(), "text/html; charset=utf-8",
                                  head=event.method == b"HEAD")
                elif target == "/stats":
                    self._respond(200, json.dumps(self.stack.stats(), indent=1).encode(),
                                  "application/json", head=event.method == b"HEAD")
                else:
                    self._respond(404, b"not found\n", "text/plain")
            # Data and EndOfMessage of the request body are consumed and ignored

    def _respond(self, status: int, body: bytes, ctype: str, head: bool = False) -> None:
        if self.conn.our_state is not h11.SEND_RESPONSE:
            return
        headers = [("content-type", ctype), ("content-length", str(len(body))),
                   ("server", "aionetstack")]
        self._send(h11.Response(status_code=status, headers=headers))
        if not head:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _status_page(self) -> bytes:
        st = self.stack.stats()
        rows = "".join(f"<tr><td>{p}</td><td>{sum(v for k, v in c.items() if '.' not in k)}"
                       f"</td></tr>" for p, c in st.items() if p != "nics" and c)
        addrs = ", ".join(self.stack.local_addresses())
        return (f"<!doctype html><title>aionetstack</title><h1>aionetstack is serving</h1>"
                f"<p>addresses: {addrs}</p><table>{rows}</table>\n").encode()



# -- UDP ------------------------------------------------------------------------------------
class _UdpService(asyncio.DatagramProtocol):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.n = 0
        self.seen: set[object] = set()  # peers already logged (UDP has no connections)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.t = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if addr not in self.seen and len(self.seen) < 10_000 and log.isEnabledFor(logging.INFO):
            self.seen.add(addr)
            host, port = addr[:2]
            log.info("udp %s: first datagram from %s", self.kind,
                     f"[{host!s}]:{port}" if ":" in str(host) else f"{host!s}:{port}")
        if self.kind == "echo":
            self.t.sendto(data, addr)
        elif self.kind == "chargen":
            # RFC 864: answer each datagram with a datagram of 0-512 characters
            self.n += 1
            reply = b"".join(chargen_line(self.n + i) for i in range(7))[:512]
            self.t.sendto(reply, addr)
        # discard: nothing


def _udp_factory(kind: str) -> Callable[[], _UdpService]:
    return lambda: _UdpService(kind)


async def start_services(stack: Stack, *, echo: int | None = None, discard: int | None = None,
                         chargen: int | None = None, http: int | None = None,
                         ) -> list[Server | asyncio.DatagramTransport]:
    """Start the requested services on every address of ``stack``; returns what to close."""
    started: list[Server | asyncio.DatagramTransport] = []
    tcp: list[tuple[int | None, Any]] = [(echo, _Echo), (discard, _Discard),
                                         (chargen, _Chargen), (http, lambda: _Http(stack))]
    for port, factory in tcp:
        if port is not None:
            started.append(await stack.create_server(factory, None, port))
    for port, kind in ((echo, "echo"), (discard, "discard"), (chargen, "chargen")):
        if port is None:
            continue
        for host in ("0.0.0.0", "::"):
            tr, _ = await stack.create_datagram_endpoint(
                _udp_factory(kind), local_addr=(host, port))
            started.append(tr)
    return started
