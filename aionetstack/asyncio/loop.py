"""Drop-in: run unmodified asyncio code over one or more stacks.

Under a drop-in, the event loop's own networking entry points go through the stacks:
``loop.create_connection``, ``loop.create_server``, ``loop.create_datagram_endpoint``,
``loop.getaddrinfo`` — and therefore ``asyncio.open_connection`` and ``asyncio.start_server``,
which call them.  Three ways to get one:

* ``async with stack.drop_in():`` patches the *running* loop until the block ends;
* ``patch_loop(loop, stacks)`` does the same by hand (``unpatch_loop`` undoes it);
* ``StackEventLoop(stacks)`` is a ``SelectorEventLoop`` subclass with the routing built in
  (``aionetstack.asyncio.loop.run(main(), stacks)`` runs a coroutine on one).

Routing with several stacks (e.g. a client stack and a server stack in one test process):
a server binds on the stack that owns its address (the first stack for a wildcard); a client
goes out through the first stack that routes the destination without owning it, else the one
that owns it.  Names resolve through each stack's ``hosts`` table (``Stack.add_host``).
Anything the stacks neither own nor route raises, unless ``fallthrough=True`` asks for the OS.

Modern clients such as aiohttp connect through ``aiohappyeyeballs``: an OS socket, then
``loop.sock_connect(sock, addr)``, then ``loop.create_connection(sock=sock)``.  For an address
the stacks route, ``sock_connect`` makes the connection on the stack instead and remembers it
under that socket object; ``create_connection(sock=...)`` then wraps the stack connection and
closes the unused OS socket.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from aionetstack.errors import NetstackError
from aionetstack.stack.addr import to_bytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aionetstack.asyncio.stack import Stack
    from aionetstack.transport.tcp.endpoint import TcpEndpoint

T = TypeVar("T")
_PATCHED = ("create_connection", "create_server", "create_datagram_endpoint", "getaddrinfo",
            "sock_connect")


class StackRouter:
    """Chooses the stack for each operation; falls through to ``os_loop`` methods if allowed."""

    def __init__(self, stacks: Stack | Iterable[Stack], fallthrough: bool = False) -> None:
        from aionetstack.asyncio.stack import Stack

        self.stacks: list[Stack] = [stacks] if isinstance(stacks, Stack) else list(stacks)
        if not self.stacks:
            raise ValueError("a drop-in needs at least one stack")
        self.fallthrough = fallthrough
        self._virtual: weakref.WeakKeyDictionary[socket.socket, TcpEndpoint] = (
            weakref.WeakKeyDictionary())
        self.os: dict[str, Callable[..., Any]] = {}

    # -- choosing ----------------------------------------------------------------------------
    def _names(self, host: str) -> list[bytes] | None:
        for s in self.stacks:
            if host in s.hosts:
                return list(s.hosts[host])
        try:
            return [to_bytes(host)]
        except NetstackError:
            return None

    def client_stack(self, dst: bytes) -> Stack | None:
        owner = None
        for s in self.stacks:
            if s.is_local(dst):
                owner = owner or s
                continue
            try:
                s.find_route(dst)
            except NetstackError:
                continue
            return s
        return owner

    def server_stack(self, host: str | None) -> Stack | None:
        if host in (None, "", "0.0.0.0", "::"):
            return self.stacks[0]
        assert host is not None
        names = self._names(host)
        if not names:
            return None
        for s in self.stacks:
            if any(s.is_local(a) for a in names):
                return s
        return None

    def _no_route(self, what: str) -> OSError:
        return OSError(101, f"no stack routes {what} and fallthrough to the OS is off")

    # -- the patched entry points --------------------------------------------------------------
    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        h = host.decode() if isinstance(host, bytes) else host
        names = self._names(h) if h not in (None, "localhost") else None
        stack = self.stacks[0]
        if names is None and h not in (None, "localhost"):
            if self.fallthrough:
                result: list[tuple[Any, ...]] = await self.os["getaddrinfo"](
                    host, port, family=family, type=type, proto=proto, flags=flags)
                return result
            raise socket.gaierror(socket.EAI_NONAME, f"{host!r} is not known to the stacks")
        addrs = stack.resolve(h, port, family)
        out = []
        for addr, p in addrs:
            fam = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
            text = socket.inet_ntop(fam, addr)
            sockaddr: tuple[Any, ...] = (text, p) if fam == socket.AF_INET else (text, p, 0, 0)
            for t in ([type] if type else [socket.SOCK_STREAM, socket.SOCK_DGRAM]):
                pr = proto or (socket.IPPROTO_TCP if t == socket.SOCK_STREAM else
                               socket.IPPROTO_UDP)
                out.append((fam, t, pr, "", sockaddr))
        return out

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str | None = None, port: int | None = None,
                                **kwargs: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        sock = kwargs.pop("sock", None)
        if sock is not None:
            ep = self._virtual.pop(sock, None)
            if ep is None:
                if self.fallthrough:
                    result: tuple[asyncio.Transport, asyncio.BaseProtocol] = (
                        await self.os["create_connection"](protocol_factory, host, port,
                                                           sock=sock, **kwargs))
                    return result
                raise self._no_route("a connection on an OS socket")
            sock.close()
            owner = ep.proto.stack
            protocol = protocol_factory()
            ssl = kwargs.get("ssl")
            server_hostname = kwargs.get("server_hostname")
            if ssl and server_hostname is None:
                server_hostname = host
            return await owner._make_transport(  # type: ignore[attr-defined,no-any-return]
                ep, protocol, ssl, server_hostname, False,
                kwargs.get("ssl_handshake_timeout"), kwargs.get("ssl_shutdown_timeout"))
        stack = self._stack_for_host(host, port, kwargs.get("family", 0))
        if stack is None:
            if self.fallthrough:
                res: tuple[asyncio.Transport, asyncio.BaseProtocol] = (
                    await self.os["create_connection"](protocol_factory, host, port, **kwargs))
                return res
            raise self._no_route(f"{host}:{port}")
        for k in ("happy_eyeballs_delay", "interleave"):
            kwargs.pop(k, None)
        return await stack.create_connection(protocol_factory, host, port, **kwargs)

    def _stack_for_host(self, host: str | None, port: Any, family: int) -> Stack | None:
        if host is None:
            return None
        names = self._names(host) if host != "localhost" else [b"\x7f\x00\x00\x01"]
        if not names:
            return None
        for a in names:
            s = self.client_stack(a)
            if s is not None:
                return s
        return None

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: Any = None, port: int | None = None,
                            **kwargs: Any) -> asyncio.AbstractServer:
        if kwargs.get("sock") is not None:
            if self.fallthrough:
                srv: asyncio.AbstractServer = await self.os["create_server"](
                    protocol_factory, host, port, **kwargs)
                return srv
            raise self._no_route("a server on an OS socket")
        first = host[0] if isinstance(host, list | tuple) and host else host
        stack = self.server_stack(first)
        if stack is None:
            if self.fallthrough:
                srv2: asyncio.AbstractServer = await self.os["create_server"](
                    protocol_factory, host, port, **kwargs)
                return srv2
            raise OSError(99, f"{host} is not an address of any stack in the drop-in")
        kwargs.pop("reuse_port", None)
        return await stack.create_server(protocol_factory, host, port, **kwargs)

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], Any],
                                       local_addr: tuple[str, int] | None = None,
                                       remote_addr: tuple[str, int] | None = None,
                                       **kwargs: Any) -> tuple[Any, Any]:
        stack = None
        if remote_addr is not None:
            stack = self._stack_for_host(remote_addr[0], remote_addr[1], 0)
        elif local_addr is not None:
            stack = self.server_stack(local_addr[0])
        else:
            stack = self.stacks[0]
        if stack is None or kwargs.get("sock") is not None:
            if self.fallthrough:
                return await self.os["create_datagram_endpoint"](  # type: ignore[no-any-return]
                    protocol_factory, local_addr, remote_addr, **kwargs)
            raise self._no_route(f"{remote_addr or local_addr}")
        allowed = {k: kwargs[k] for k in ("family", "reuse_port", "allow_broadcast")
                   if k in kwargs}
        return await stack.create_datagram_endpoint(protocol_factory, local_addr, remote_addr,
                                                    **allowed)

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        host = address[0]
        stack = self._stack_for_host(host, address[1], 0) if isinstance(host, str) else None
        if stack is None or sock.type != socket.SOCK_STREAM:
            if self.fallthrough:
                await self.os["sock_connect"](sock, address)
                return
            raise self._no_route(f"{address}")
        ep = await stack._connect_endpoint((to_bytes(host), int(address[1])), None)
        self._virtual[sock] = ep


def patch_loop(loop: asyncio.AbstractEventLoop, stacks: Stack | Iterable[Stack], *,
               fallthrough: bool = False) -> StackRouter:
    """Route ``loop``'s networking through ``stacks`` (instance attributes shadow methods)."""
    if getattr(loop, "_aionetstack_router", None) is not None:
        raise RuntimeError("this loop already has an aionetstack drop-in")
    router = StackRouter(stacks, fallthrough)
    for name in _PATCHED:
        router.os[name] = getattr(loop, name)
        setattr(loop, name, getattr(router, name))
    loop._aionetstack_router = router  # type: ignore[attr-defined]
    return router


def unpatch_loop(loop: asyncio.AbstractEventLoop) -> None:
    router = getattr(loop, "_aionetstack_router", None)
    if router is None:
        return
    for name in _PATCHED:
        try:
            delattr(loop, name)
        except AttributeError:
            pass
    loop._aionetstack_router = None  # type: ignore[attr-defined]


@asynccontextmanager
async def drop_in(stacks: Stack | Sequence[Stack], *,
                  fallthrough: bool = False) -> AsyncIterator[StackRouter]:
    """``async with drop_in([a, b]):`` — the running loop goes through the stacks inside."""
    loop = asyncio.get_running_loop()
    router = patch_loop(loop, stacks, fallthrough=fallthrough)
    try:
        yield router
    finally:
        unpatch_loop(loop)


class StackEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose networking goes through ``stacks``.

    The stacks are given later with ``attach`` when they are created inside the loop.
    """

    def __init__(self, stacks: Stack | Iterable[Stack] = (), *,
                 fallthrough: bool = False) -> None:
        super().__init__()
        self._aionetstack_router = None
        self._pending = (stacks, fallthrough)
        if stacks:
            self.attach(stacks, fallthrough=fallthrough)

    def attach(self, stacks: Stack | Iterable[Stack], *, fallthrough: bool = False) -> None:
        patch_loop(self, stacks, fallthrough=fallthrough)


def run(main: Coroutine[Any, Any, T], stacks: Stack | Iterable[Stack] = (), *,
        fallthrough: bool = False) -> T:
    """``asyncio.run`` on a ``StackEventLoop``."""
    loop = StackEventLoop(stacks, fallthrough=fallthrough)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
