"""httpcore / httpx over a stack.

``StackNetworkBackend(stack)`` is an ``httpcore.AsyncNetworkBackend``: ``connect_tcp`` opens a
stack TCP connection (``stack.open_connection``: the standard library's StreamReader/Writer over
the stack transport) and returns a ``StackNetworkStream``.  ``start_tls`` upgrades it in place
through ``StreamWriter.start_tls`` -- the event loop's ``start_tls`` with the stdlib
``SSLProtocol`` on top of the stack transport.  Errors are mapped the way httpcore's own backends
map them: ``ConnectError``/``ReadError``/``WriteError`` for ``OSError``s, the matching
``*Timeout`` when the caller's timeout expired (a TCP retransmission timeout stays an error).

``httpx_transport(stack, **kw)`` returns an ``httpx.AsyncHTTPTransport`` whose connection pool
uses that backend, for ``httpx.AsyncClient(transport=httpx_transport(stack))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from aionetstack.asyncio.stack import Stack

__all__ = ["StackNetworkBackend", "StackNetworkStream", "httpx_transport"]


@contextlib.contextmanager
def _mapped(timeout_exc: type[Exception], error_exc: type[Exception],
            cm: asyncio.Timeout | None) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        if cm is not None and cm.expired():
            raise timeout_exc(str(exc) or "timed out") from exc
        raise error_exc(str(exc)) from exc
    except (OSError, ssl.SSLError, EOFError) as exc:
        raise error_exc(str(exc)) from exc


class StackNetworkStream(httpcore.AsyncNetworkStream):
    """One stack TCP connection (optionally TLS) as httpcore sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        cm = asyncio.timeout(timeout)
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError, cm):
            async with cm:
                return await self._reader.read(max_bytes)
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        cm = asyncio.timeout(timeout)
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError, cm):
            async with cm:
                if self._writer.transport.is_closing():
                    raise ConnectionResetError("the connection is closed")
                self._writer.write(buffer)
                await self._writer.drain()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await self._writer.wait_closed()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> StackNetworkStream:
        cm = asyncio.timeout(timeout)
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError, cm):
                async with cm:
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            self._writer.transport.abort()
            self._closed = True
            raise
        return self

    def _is_readable(self) -> bool:
        """True when an idle connection has something pending: data, EOF or an error -- for a
        pooled keep-alive connection that means the server closed it."""
        r = self._reader
        return bool(getattr(r, "_buffer", b"") or getattr(r, "_eof", False)
                    or r.exception() is not None or self._writer.transport.is_closing())

    def get_extra_info(self, info: str) -> Any:
        w = self._writer
        if info == "ssl_object":
            return w.get_extra_info("ssl_object")
        if info == "client_addr":
            sock = w.get_extra_info("sockname")
            return (sock[0], sock[1]) if sock else None
        if info == "server_addr":
            peer = w.get_extra_info("peername")
            return (peer[0], peer[1]) if peer else None
        if info == "socket":
            return None  # a stack connection has no OS socket
        if info == "is_readable":
            return self._is_readable()
        return w.get_extra_info(info)


class StackNetworkBackend(httpcore.AsyncNetworkBackend):
    """An ``httpcore.AsyncNetworkBackend`` whose TCP connections go through ``stack``."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> StackNetworkStream:
        """``socket_options`` are accepted and ignored: there is no OS socket to apply them to."""
        local_addr = (local_address, 0) if local_address else None
        cm = asyncio.timeout(timeout)
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError, cm):
            async with cm:
                reader, writer = await self.stack.open_connection(host, port,
                                                                  local_addr=local_addr)
        return StackNetworkStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> StackNetworkStream:
        raise httpcore.ConnectError("a stack has no UNIX sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def httpx_transport(stack: Stack, *, verify: ssl.SSLContext | str | bool = True,
                    cert: Any = None, trust_env: bool = True, http1: bool = True,
                    http2: bool = False, limits: httpx.Limits | None = None,
                    local_address: str | None = None, retries: int = 0,
                    ) -> httpx.AsyncHTTPTransport:
    """An ``httpx.AsyncHTTPTransport`` (same keyword arguments, minus proxies and UNIX sockets)
    whose connections run over ``stack``."""
    limits = limits if limits is not None else httpx.Limits(max_connections=100,
                                                            max_keepalive_connections=20)
    transport = httpx.AsyncHTTPTransport(verify=verify, cert=cert, trust_env=trust_env,
                                         http1=http1, http2=http2, limits=limits,
                                         local_address=local_address, retries=retries)
    ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=http1,
        http2=http2,
        local_address=local_address,
        retries=retries,
        network_backend=StackNetworkBackend(stack),
    )
    return transport
