"""Forwarders on an asyncio ``Stack``: an async handler per TCP connection / UDP flow.

    async def on_tcp(conn: ForwardedConnection) -> None:
        # conn.local is the original destination, conn.remote the client
        if not allowed(conn.local):
            conn.reject()                     # RST
            return
        reader, writer = await conn.accept()  # completes the handshake
        ...

    async def on_udp(req: ForwardedDatagrams) -> None:
        flow = req.accept()                   # a DatagramFlow
        data, dst = await flow.recv()         # dst: where the client sent it
        flow.send(b"answer", source=dst)      # to the client, from dst

    fwd = stack.tcp_forwarder(on_tcp, nic=nic)    # also puts nic in transparent mode
    ufwd = stack.udp_forwarder(on_udp, nic=nic)

Each new flow runs its handler as a task.  A handler that returns (or fails) without deciding
rejects the flow; a failure is reported to the loop's exception handler, never raised into
packet processing.  ``AsyncForwarder.close()`` stops forwarding and cancels the running
handlers.  The sans-IO objects are ``aionetstack.transport.tcp.forwarder`` and
``aionetstack.transport.udp_forwarder``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aionetstack.asyncio.wait import wait_events
from aionetstack.errors import ConnectionReset, StackClosed, WouldBlock
from aionetstack.stack.addr import AddressLike, to_str
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp.forwarder import TcpForwarder, TcpForwarderRequest
from aionetstack.transport.tcp.state import TcpState
from aionetstack.transport.udp_forwarder import UdpFlow, UdpForwarder, UdpForwarderRequest

if TYPE_CHECKING:
    from aionetstack.asyncio.stack import Stack
    from aionetstack.transport.tcp.endpoint import TcpEndpoint

HostPort = tuple[str, int]


def _fmt(addr: tuple[bytes, int]) -> HostPort:
    return (to_str(addr[0]), addr[1])


class ForwardedConnection:
    """A TCP connection attempt to ``local`` (the original destination) from ``remote``."""

    def __init__(self, stack: Stack, request: TcpForwarderRequest) -> None:
        self.stack = stack
        self.request = request
        self.local: HostPort = _fmt(request.local)
        self.remote: HostPort = _fmt(request.remote)

    def __repr__(self) -> str:
        return f"<ForwardedConnection {self.remote} -> {self.local}>"

    @property
    def decided(self) -> bool:
        return self.request.decided

    def reject(self, reply: str | None = "reset") -> None:
        """RST (default), an ICMP unreachable ("port-unreachable", "admin-prohibited",
        "host-unreachable") or ``None`` (drop silently)."""
        self.request.reject(reply)

    async def accept(self, *, limit: int = 2 ** 16,
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Complete the handshake; the client's streams.  Raises ``ConnectionResetError``
        (or ``TimeoutError``) when the client goes away during the handshake."""
        loop = self.stack.loop
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.accept_transport(lambda: protocol)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def accept_transport(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                               ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Complete the handshake; an ``asyncio.Transport`` bound to a new protocol."""
        ep = self.request.accept()
        try:
            await _established(self.stack, ep)
        except BaseException:
            ep.abort()
            raise
        return await self.stack._make_transport(ep, protocol_factory(), None, None, True,
                                                None, None)


async def _established(stack: Stack, ep: TcpEndpoint) -> None:
    loop = stack.loop
    while True:
        if ep.state is not TcpState.SYN_RECEIVED:
            if ep.error is not None:
                raise ep.error
            if ep.state is TcpState.CLOSED:
                raise ConnectionReset("the client went away during the handshake")
            return
        await wait_events(loop, ep.waiter, EVENT_OUT | EVENT_ERR | EVENT_HUP)


class DatagramFlow:
    """A UDP flow of one client source (``remote``) to any destinations (full cone)."""

    def __init__(self, stack: Stack, flow: UdpFlow) -> None:
        self.stack = stack
        self.flow = flow
        self.local: HostPort = _fmt(flow.local)
        self.remote: HostPort = _fmt(flow.remote)

    def __repr__(self) -> str:
        return f"<DatagramFlow {self.remote} -> {self.local}>"

    @property
    def closed(self) -> bool:
        return self.flow.closed

    async def recv(self) -> tuple[bytes, HostPort]:
        """The next datagram and the destination it was sent to.  Raises
        ``ClosedForReceive`` once the flow has ended (idle timeout, ``close``)."""
        loop = self.stack.loop
        flow = self.flow
        while True:
            try:
                data, dst = flow.recvfrom()
                return data, _fmt(dst)
            except WouldBlock:
                pass
            await wait_events(loop, flow.waiter, EVENT_IN | EVENT_HUP)

    def send(self, data: bytes | bytearray | memoryview,
             source: tuple[AddressLike, int] | None = None) -> None:
        """Send to the client from ``source`` (default: ``local``)."""
        self.flow.sendto(data, source)

    def close(self) -> None:
        self.flow.close()


class ForwardedDatagrams:
    """The first datagram of a new UDP flow from ``remote``, sent to ``local``."""

    def __init__(self, stack: Stack, request: UdpForwarderRequest) -> None:
        self.stack = stack
        self.request = request
        self.local: HostPort = _fmt(request.local)
        self.remote: HostPort = _fmt(request.remote)

    def __repr__(self) -> str:
        return f"<ForwardedDatagrams {self.remote} -> {self.local}>"

    @property
    def decided(self) -> bool:
        return self.request.decided

    def accept(self) -> DatagramFlow:
        return DatagramFlow(self.stack, self.request.accept())

    def reject(self, reply: str | None = "port-unreachable") -> None:
        self.request.reject(reply)


class AsyncForwarder:
    """What ``Stack.tcp_forwarder`` / ``udp_forwarder`` return: the sans-IO forwarder
    (``core``) and the handler tasks it runs."""

    def __init__(self, stack: Stack, core: TcpForwarder | UdpForwarder) -> None:
        self.stack = stack
        self.core = core
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, request: ForwardedConnection | ForwardedDatagrams,
               handler: Callable[[Any], Awaitable[None]]) -> None:
        task = self.stack.loop.create_task(self._run(request, handler))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, request: ForwardedConnection | ForwardedDatagrams,
                   handler: Callable[[Any], Awaitable[None]]) -> None:
        try:
            await handler(request)
        except (OSError, asyncio.CancelledError):
            pass  # the flow failed (reset, timeout) or we are shutting down
        except Exception as exc:
            self.stack.loop.call_exception_handler({
                "message": f"aionetstack: forwarder handler failed for {request!r}",
                "exception": exc})
        finally:
            if not request.decided:
                try:
                    request.reject()
                except (OSError, StackClosed):
                    pass

    def close(self) -> None:
        """Stop forwarding (undecided requests are refused) and cancel the handlers."""
        self.core.close()
        for t in list(self.tasks):
            t.cancel()


def tcp_forwarder(stack: Stack, handler: Callable[[ForwardedConnection], Awaitable[None]],
                  **options: Any) -> AsyncForwarder:
    holder: list[AsyncForwarder] = []

    def on_request(req: TcpForwarderRequest) -> None:
        holder[0]._spawn(ForwardedConnection(stack, req), handler)

    fwd = AsyncForwarder(stack, TcpForwarder(stack, on_request, **options))
    holder.append(fwd)
    return fwd


def udp_forwarder(stack: Stack, handler: Callable[[ForwardedDatagrams], Awaitable[None]],
                  **options: Any) -> AsyncForwarder:
    holder: list[AsyncForwarder] = []

    def on_request(req: UdpForwarderRequest) -> None:
        holder[0]._spawn(ForwardedDatagrams(stack, req), handler)

    fwd = AsyncForwarder(stack, UdpForwarder(stack, on_request, **options))
    holder.append(fwd)
    return fwd
