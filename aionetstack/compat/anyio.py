"""anyio streams over stack TCP connections (the asyncio backend).

``StackSocketStream`` is an ``anyio.abc.SocketStream`` built the way anyio builds its own
asyncio socket stream: a small ``asyncio.Protocol`` queues what the transport delivers, and the
transport reads *only while a ``receive`` is waiting* (``pause_reading`` otherwise).  Unread data
therefore stays in the endpoint's receive buffer, whose advertised TCP window closes when it
fills: the peer is flow-controlled end to end.  ``send`` writes and then waits while the transport
is over its high-water mark (``pause_writing``/``resume_writing``), so a fast sender cannot grow
memory either.

Errors follow anyio's conventions: ``anyio.EndOfStream`` once the peer's FIN has been read,
``anyio.ClosedResourceError`` for a stream this side closed (or ``send`` after ``send_eof``),
``anyio.BrokenResourceError`` (caused by the ``OSError``) after a reset or a timeout.

``StackListener`` accepts straight from the listening endpoints, so the TCP backlog -- not an
unbounded queue -- limits connections nobody has accepted yet.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from aionetstack.asyncio.transport import TcpTransport, format_addr
from aionetstack.errors import WouldBlock
from aionetstack.stack.waiter import EVENT_IN
from aionetstack.transport.tcp.state import TcpState

if TYPE_CHECKING:
    from aionetstack.asyncio.stack import Stack
    from aionetstack.transport.tcp.endpoint import TcpEndpoint

__all__ = ["StackListener", "StackSocketStream", "connect_tcp", "create_tcp_listener"]


def _ip_addr(addr: tuple[Any, ...]) -> tuple[str, int]:
    """anyio reports ``(host, port)`` for both families (``convert_ipv6_sockaddr``)."""
    return (str(addr[0]), int(addr[1]))


class _StreamProtocol(asyncio.Protocol):
    """Queues data for ``StackSocketStream``; mirrors anyio's asyncio ``StreamProtocol``."""

    def __init__(self) -> None:
        self.read_queue: deque[bytes] = deque()
        self.read_event = asyncio.Event()
        self.write_event = asyncio.Event()
        self.write_event.set()
        self.exception: Exception | None = None
        self.is_at_eof = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()  # read only while someone waits in receive()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.exception = anyio.BrokenResourceError()
            self.exception.__cause__ = exc
        self.read_event.set()
        self.write_event.set()

    def data_received(self, data: bytes) -> None:
        self.read_queue.append(data)
        self.read_event.set()

    def eof_received(self) -> bool:
        self.is_at_eof = True
        self.read_event.set()
        return True  # half-close: this side may still send

    def pause_writing(self) -> None:
        self.write_event.clear()

    def resume_writing(self) -> None:
        self.write_event.set()


class StackSocketStream(anyio.abc.SocketStream):
    """An ``anyio.abc.SocketStream`` over one stack TCP connection."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._receive_guard = anyio.ResourceGuard("reading from")
        self._send_guard = anyio.ResourceGuard("writing to")
        self._closed = False
        self._eof_sent = False

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    @property
    def _raw_socket(self) -> socket.socket:
        raise anyio.TypedAttributeLookupError("a stack connection has no OS socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        tr = self._transport
        local = _ip_addr(tr.get_extra_info("sockname"))
        remote = _ip_addr(tr.get_extra_info("peername"))
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        return {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: local,
            SocketAttribute.local_port: lambda: local[1],
            SocketAttribute.remote_address: lambda: remote,
            SocketAttribute.remote_port: lambda: remote[1],
        }

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        with self._receive_guard:
            proto = self._protocol
            if not proto.read_event.is_set() and not proto.is_at_eof:
                # also when the transport is already closing: connection_lost (which sets the
                # event) is still to come and says whether this is EOF or a broken connection
                self._transport.resume_reading()  # a no-op on a closing transport
                try:
                    await proto.read_event.wait()
                finally:
                    self._transport.pause_reading()
            else:
                await anyio.lowlevel.checkpoint()
            if not proto.read_queue:
                if self._closed:
                    raise anyio.ClosedResourceError
                if proto.exception is not None:
                    raise proto.exception  # BrokenResourceError, caused by the OSError
                raise anyio.EndOfStream
            chunk = proto.read_queue.popleft()
            if len(chunk) > max_bytes:
                chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
                proto.read_queue.appendleft(rest)
            if not proto.read_queue and not proto.is_at_eof and proto.exception is None \
                    and not self._closed:
                proto.read_event.clear()
        return chunk

    async def send(self, item: bytes) -> None:
        with self._send_guard:
            await anyio.lowlevel.checkpoint()
            if self._closed or self._eof_sent:
                raise anyio.ClosedResourceError
            if self._protocol.exception is not None:
                raise self._protocol.exception
            if self._transport.is_closing():
                raise anyio.BrokenResourceError
            self._transport.write(item)
            await self._protocol.write_event.wait()
            if self._protocol.exception is not None:
                raise self._protocol.exception

    async def send_eof(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._eof_sent:
            return
        self._eof_sent = True
        if not self._transport.is_closing():
            self._transport.write_eof()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._protocol.read_event.set()  # wake a receive() blocked in another task
        self._protocol.write_event.set()
        if not self._transport.is_closing():
            self._transport.close()  # graceful: what was sent is still delivered
        await anyio.lowlevel.checkpoint()


class StackListener(anyio.abc.Listener[StackSocketStream]):
    """Accepts TCP connections on one or more listening stack endpoints (one port)."""

    def __init__(self, stack: Stack, endpoints: list[TcpEndpoint]) -> None:
        self._stack = stack
        self._endpoints = endpoints
        self._closed = False
        self._wakeups: set[asyncio.Future[None]] = set()
        self._accept_guard = anyio.ResourceGuard("accepting connections from")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        ep = self._endpoints[0]
        assert ep.local is not None
        local = _ip_addr(format_addr(ep.local, ep.family))
        family = socket.AF_INET6 if ep.family == 6 else socket.AF_INET
        return {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: local,
            SocketAttribute.local_port: lambda: local[1],
        }

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [_ip_addr(format_addr(ep.local, ep.family))
                for ep in self._endpoints if ep.local is not None]

    def _take(self) -> TcpEndpoint | None:
        for ep in self._endpoints:
            if ep.state is not TcpState.LISTEN:
                continue
            try:
                return ep.accept()
            except WouldBlock:
                continue
        return None

    async def accept(self) -> StackSocketStream:
        with self._accept_guard:
            await anyio.lowlevel.checkpoint()
            loop = self._stack.loop
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                child = self._take()
                if child is not None:
                    break
                if not any(ep.state is TcpState.LISTEN for ep in self._endpoints):
                    raise anyio.BrokenResourceError("the listening endpoints are gone")
                fut: asyncio.Future[None] = loop.create_future()

                def wake(_events: int, fut: asyncio.Future[None] = fut) -> None:
                    if not fut.done():
                        fut.set_result(None)

                entries = [(ep, ep.waiter.register(wake, EVENT_IN)) for ep in self._endpoints]
                self._wakeups.add(fut)
                try:
                    await fut
                finally:
                    self._wakeups.discard(fut)
                    for ep, entry in entries:
                        ep.waiter.unregister(entry)
            protocol = _StreamProtocol()
            made: asyncio.Future[None] = loop.create_future()
            transport = TcpTransport(self._stack, child, protocol, loop, made)
            try:
                await made
            except BaseException:
                transport.abort()
                raise
            return StackSocketStream(transport, protocol)

    async def serve(self, handler: Callable[[StackSocketStream], Any],
                    task_group: anyio.abc.TaskGroup | None = None) -> None:
        async with AsyncExitStack() as exits:
            if task_group is None:
                task_group = await exits.enter_async_context(anyio.create_task_group())
            while True:
                stream = await self.accept()
                task_group.start_soon(handler, stream)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ep in self._endpoints:
            ep.close()  # resets connections still in the accept queue
        for fut in list(self._wakeups):
            if not fut.done():
                fut.set_result(None)
        await anyio.lowlevel.checkpoint()


async def connect_tcp(stack: Stack, host: str, port: int, *,
                      local_host: str | None = None) -> StackSocketStream:
    """Like ``anyio.connect_tcp``, over ``stack`` (raises ``OSError`` on failure)."""
    local_addr = (local_host, 0) if local_host is not None else None
    transport, protocol = await stack.create_connection(_StreamProtocol, host, port,
                                                        local_addr=local_addr)
    assert isinstance(transport, asyncio.Transport) and isinstance(protocol, _StreamProtocol)
    return StackSocketStream(transport, protocol)


async def create_tcp_listener(stack: Stack, local_host: str | None = None,
                              local_port: int = 0, *, backlog: int = 65536,
                              reuse_address: bool = True) -> StackListener:
    """Like ``anyio.create_tcp_listener``: ``local_host`` None listens on every address of both
    families; port 0 picks one port for all of them."""
    _ = stack.loop  # bind the running loop
    endpoints: list[TcpEndpoint] = []
    try:
        port = local_port
        for addr, _ in stack.resolve(local_host, local_port):
            ep = stack.tcp_endpoint(4 if len(addr) == 4 else 6)
            endpoints.append(ep)
            ep.reuse_address = reuse_address
            bound = ep.bind(addr if any(addr) else None, port)
            port = port or bound[1]
            ep.listen(min(backlog, 65535))
    except BaseException:
        for ep in endpoints:
            ep.close()
        raise
    return StackListener(stack, endpoints)
