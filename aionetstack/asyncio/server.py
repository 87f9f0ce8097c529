"""``Server``: the ``asyncio.Server`` API over stack TCP listeners.

``close()`` stops accepting (listening endpoints close; connections still in their handshake or
in the accept queue are reset, never leaked); ``wait_closed()`` returns once the server is
closed and every connection it accepted has gone (Python 3.12 semantics).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aionetstack.asyncio.transport import TcpTransport, format_addr, make_ssl_protocol
from aionetstack.errors import WouldBlock
from aionetstack.stack.waiter import EVENT_IN
from aionetstack.transport.tcp.state import TcpState

if TYPE_CHECKING:
    from aionetstack.asyncio.stack import Stack
    from aionetstack.transport.tcp.endpoint import TcpEndpoint


class Server(asyncio.AbstractServer):
    def __init__(self, stack: Stack, listeners: list[TcpEndpoint],
                 protocol_factory: Callable[[], asyncio.BaseProtocol],
                 ssl: ssl_module.SSLContext | None, backlog: int,
                 ssl_handshake_timeout: float | None = None,
                 ssl_shutdown_timeout: float | None = None) -> None:
        self._stack = stack
        self._loop = stack.loop
        self._listeners = listeners
        self._factory = protocol_factory
        self._ssl = ssl
        self._backlog = backlog
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._closed = False
        self._transports: set[TcpTransport] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever: asyncio.Future[None] | None = None
        self._entries: list[Any] = []
        self._accept_scheduled = False

    def __repr__(self) -> str:
        return f"<aionetstack Server {self.addresses}>"

    @property
    def addresses(self) -> list[tuple[Any, ...]]:
        return [format_addr(ep.local, ep.family) for ep in self._listeners if ep.local]

    @property
    def sockets(self) -> tuple[Any, ...]:
        return ()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    # -- accepting --------------------------------------------------------------------------
    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)

    def _start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for ep in self._listeners:
            self._entries.append((ep, ep.waiter.register(self._on_ready, EVENT_IN)))
        self._on_ready(EVENT_IN)

    def _on_ready(self, _events: int) -> None:
        if not self._accept_scheduled and self._serving:
            self._accept_scheduled = True
            self._stack.defer(self._accept_all)

    def _accept_all(self) -> None:
        self._accept_scheduled = False
        if not self._serving:
            return
        for ep in self._listeners:
            # not a listener closed under us (stack closed); readiness first: no WouldBlock
            while ep.state is TcpState.LISTEN and ep.readiness(EVENT_IN):
                try:
                    child = ep.accept()
                except WouldBlock:
                    break
                except OSError as exc:
                    self._loop.call_exception_handler({
                        "message": "aionetstack: accept failed", "exception": exc,
                        "server": self})
                    break
                try:
                    protocol = self._factory()
                except Exception as exc:
                    child.abort()
                    self._loop.call_exception_handler({
                        "message": "protocol factory failed", "exception": exc,
                        "server": self})
                    continue
                if self._ssl is not None:
                    ssl_proto = make_ssl_protocol(
                        self._loop, protocol, self._ssl, None, server_side=True,
                        server_hostname=None, handshake_timeout=self._ssl_handshake_timeout,
                        shutdown_timeout=self._ssl_shutdown_timeout)
                    protocol = ssl_proto
                # a deferred callback, outside packet processing: connection_made at once
                TcpTransport(self._stack, child, protocol, self._loop, server=self,
                             start_soon=False).start_now()

    def _attach(self, transport: TcpTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)
        self._wake_if_done()

    def _wake_if_done(self) -> None:
        if self._closed and not self._transports:
            for w in self._waiters:
                if not w.done():
                    w.set_result(None)
            self._waiters.clear()

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for ep, entry in self._entries:
            ep.waiter.unregister(entry)
        self._entries.clear()
        for ep in self._listeners:
            ep.close()  # resets connections still queued for accept
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._loop.call_soon(self._wake_if_done)

    def close_clients(self) -> None:
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._transports):
            t.abort()

    async def wait_closed(self) -> None:
        if self._closed and not self._transports:
            return
        fut = self._loop.create_future()
        self._waiters.append(fut)
        await fut

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()
