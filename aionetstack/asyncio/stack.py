"""``Stack``: the sans-IO core bound to an asyncio event loop.

One ``loop.call_at`` handle per stack: the core's deadline heap reports a new earliest deadline
through ``Timers.on_earliest`` and the handle is re-armed only when that moves earlier; when it
fires, every due timer runs at ``max(deadline, loop.time())`` and the handle is armed for the
next deadline.  A handle armed earlier than the next deadline is kept (it fires early and
re-arms, the heap's own lazy rule) rather than cancelled and replaced on every move.  A deadline
that is already due (a link wake-up "now") gets a ``call_soon`` of its own and leaves the
``call_at`` handle alone.  While timers run (or a link's batch is read), and while the deferred
callbacks that follow run, pushes arm nothing: one re-arm follows them all.  So a timer due
"now" that a deferred callback sets (say a delayed ACK) fires *after* the wake-ups those callbacks
queued (a task about to answer, whose reply then carries the ACK).

Deferred callbacks: readiness callbacks of the stack's transports and servers (``defer``) that
arise while timers run, or while an fd link's reader delivers a batch of frames, are not each
sent through ``call_soon``; they are queued and run right after the timers (or the batch),
still outside the stack's packet processing but without an extra event-loop iteration per hop.
Callbacks deferred at any other time go through ``call_soon`` (and hold re-arming the same way).

The stack's clock is ``loop.time``; randomness is ``random.SystemRandom`` unless a ``seed`` asks
for a reproducible ``random.Random``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aionetstack.asyncio.datagram import DatagramTransport
from aionetstack.asyncio.server import Server
from aionetstack.asyncio.transport import TcpTransport, make_ssl_protocol
from aionetstack.asyncio.wait import wait_events
from aionetstack.errors import (
    HostUnreachable,
    InvalidArgument,
    StackClosed,
    TimedOut,
)
from aionetstack.link.base import Link
from aionetstack.link.fd import FdLink
from aionetstack.stack.addr import to_bytes, to_str
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp import TcpEndpoint

if TYPE_CHECKING:
    from aionetstack.asyncio.forward import (
        AsyncForwarder,
        ForwardedConnection,
        ForwardedDatagrams,
    )


class Stack(CoreStack):
    """A userspace TCP/IP stack driven by the running asyncio loop.

    ``async with Stack() as stack:`` binds it to the running loop and closes it on exit.
    """

    def __init__(self, *, seed: int | None = None, forwarding: bool = False,
                 **options: Any) -> None:
        rng: random.Random = random.Random(seed) if seed is not None else random.SystemRandom()
        super().__init__(clock=time.monotonic, rng=rng, forwarding=forwarding, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None  # call_at for ``_armed_at``
        self._armed_at: float | None = None
        self._soon: asyncio.Handle | None = None  # call_soon for a deadline already due
        self._firing = False  # timers are running: defer() queues instead of call_soon
        self._holding = False  # a batch and its deferred callbacks run: the re-arm follows
        self._deferred: list[Callable[[], object]] = []
        self.timers.on_earliest = self._on_earliest
        self._fd_links: list[FdLink] = []
        self.hosts: dict[str, list[bytes]] = {}

    # -- loop binding ------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._bind_loop()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = asyncio.get_running_loop()
            self._loop = loop
            # the loop's clock; BaseEventLoop.time() is time.monotonic(), called without the
            # extra Python frame (the stack reads its clock several times per packet)
            base_time = asyncio.BaseEventLoop.time
            self._clock = self.now = (
                time.monotonic if getattr(type(loop), "time", None) is base_time else loop.time)
            self._rearm()
            for fdl in self._fd_links:
                self._watch(fdl)
        return loop

    # -- fd-backed links (TUN/TAP, packet sockets) -------------------------------------------
    def add_nic(self, link: Link, addresses: Iterable[str] = (), **options: Any) -> NIC:
        nic = super().add_nic(link, addresses, **options)
        fdl = _find_fd_link(link)
        if fdl is not None:
            self._fd_links.append(fdl)
            if self._loop is not None:
                self._watch(fdl)
        return nic

    def _watch(self, fdl: FdLink) -> None:
        loop = self._loop
        assert loop is not None
        fd = fdl.fileno()
        loop.add_reader(fd, self._fd_readable, fdl)

        def writer(on: bool) -> None:
            if on:
                loop.add_writer(fd, fdl.write_ready)
            else:
                loop.remove_writer(fd)

        def unwatch() -> None:
            loop.remove_reader(fd)
            loop.remove_writer(fd)

        fdl.writer_hook = writer
        fdl.on_close = unwatch

    async def __aenter__(self) -> Stack:
        self._bind_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        super().close()  # resets every TCP connection: no transport or waiter is left hanging
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_at = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None

    # -- the one timer -------------------------------------------------------------------------
    def _on_earliest(self, at: float) -> None:
        if self._holding or self._loop is None or self.closed:
            return  # while a batch runs, the re-arm that follows it covers every push
        if at <= self._clock():
            if self._soon is None:
                self._soon = self._loop.call_soon(self._fire_soon)
        elif self._armed_at is None or at < self._armed_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        loop = self._loop
        assert loop is not None
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._armed_at = at
        self._handle = loop.call_at(at, self._fire, at)

    def _rearm(self) -> None:
        nxt = self.timers.next_deadline()
        if nxt is None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = None
            self._armed_at = None
            return
        loop = self._loop
        assert loop is not None
        if nxt <= self._clock():
            if self._soon is None:
                self._soon = loop.call_soon(self._fire_soon)
        elif self._armed_at is None or nxt < self._armed_at:
            # a handle armed earlier than ``nxt`` stays: it fires early and re-arms (the heap's
            # own lazy rule), instead of a cancel and a new handle every time a deadline moves
            self._arm(nxt)

    def defer(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` soon, outside packet processing (see the module docstring)."""
        if self._firing:
            self._deferred.append(callback)
        else:
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._run_held, callback)

    def _run_held(self, callback: Callable[[], object]) -> None:
        """Run a deferred callback like those after a batch: timers it makes due arm after it."""
        if self._holding:
            callback()
            return
        self._holding = True
        try:
            callback()
        finally:
            self._holding = False
            if not self.closed:
                self._rearm()

    def _fire(self, at: float) -> None:
        loop = self._loop
        assert loop is not None
        self._handle = None
        self._armed_at = None
        self._run(max(at, self._clock()))

    def _fire_soon(self) -> None:
        self._soon = None
        # what was due may have been cancelled since (typically an ACK due "now" that a reply
        # carried): then nothing runs, only the re-arm
        self._process_batch("aionetstack: exception while running stack timers",
                            self.timers.run_due, self._clock())

    def _run(self, now: float) -> None:
        self._process_batch("aionetstack: exception while running stack timers",
                            self.timers.run_due, now)

    def _fd_readable(self, fdl: FdLink) -> None:
        if not fdl.quiet:
            self._process_batch("aionetstack: exception while reading a link", fdl.read_ready)
            return
        # quiet link (request/response): the frame's reply is written before the read that
        # would only say EAGAIN, and the rest is read after the tasks it woke have had their
        # turn (their replies go out first too); several frames end quiet mode
        self._process_batch("aionetstack: exception while reading a link", fdl.read_one)
        if fdl.more and not fdl.closed:
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._fd_rest, fdl)

    def _fd_rest(self, fdl: FdLink) -> None:
        if not self.closed:
            self._process_batch("aionetstack: exception while reading a link", fdl.read_rest)

    def _process_batch(self, what: str, work: Callable[..., object], *args: Any) -> None:
        """Run ``work(*args)`` (timers, or a link's reads) with re-arming held back and deferred
        callbacks queued; then run the deferred callbacks and re-arm once."""
        loop = self._loop
        assert loop is not None
        self._firing = self._holding = True
        try:
            work(*args)
        except Exception as exc:  # never let a stack bug kill the event loop
            loop.call_exception_handler({"message": what, "exception": exc})
        finally:
            self._firing = False
        try:
            deferred = self._deferred
            if deferred:
                self._deferred = []
                for callback in deferred:
                    try:
                        callback()
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # like asyncio.Handle._run
                        loop.call_exception_handler({
                            "message": f"Exception in callback {callback!r}",
                            "exception": exc,
                        })
        finally:
            self._holding = False
        if not self.closed:
            self._rearm()

    # -- datagram endpoints ----------------------------------------------------------------------
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        family: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
    ) -> tuple[DatagramTransport, asyncio.DatagramProtocol]:
        """Like ``loop.create_datagram_endpoint``, over this stack (literal addresses only)."""
        loop = self._bind_loop()
        fam = _family(family, local_addr, remote_addr)
        ep = self.udp_endpoint(fam)
        try:
            ep.reuse_address = bool(reuse_port)
            ep.broadcast = bool(allow_broadcast)
            if local_addr is not None:
                host = local_addr[0]
                ep.bind(None if host in ("", None) else _host(host), local_addr[1])
            if remote_addr is not None:
                ep.connect(_host(remote_addr[0]), remote_addr[1])
            elif local_addr is None:
                ep.bind(None, 0)
        except BaseException:
            ep.close()
            raise
        protocol = protocol_factory()
        transport = DatagramTransport(self, ep, protocol, loop)
        return transport, protocol

    # -- ping ----------------------------------------------------------------------------------
    async def ping(self, address: str, *, timeout: float = 2.0, payload: bytes = b"",
                   size: int = 56, ttl: int | None = None) -> float:
        """Send one ICMP/ICMPv6 echo request; return the round-trip time in seconds.

        Raises ``TimeoutError`` (``errors.TimedOut``) without a reply in ``timeout`` seconds,
        ``HostUnreachable`` when address resolution fails or an ICMP error comes back.
        """
        loop = self._bind_loop()
        dst = _host(address)
        ep = self.icmp_echo_endpoint(4 if len(dst) == 4 else 6)
        waiter: asyncio.Future[None] | None = None
        expired = False

        def wake(_events: int) -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        def expire() -> None:
            nonlocal expired
            expired = True
            wake(0)

        entry = ep.waiter.register(wake, EVENT_IN | EVENT_ERR)
        timer: asyncio.TimerHandle | None = None
        try:
            data = payload or _ping_payload(size)
            seq = self.rng.getrandbits(16)
            sent = loop.time()
            ep.send(dst, seq, data, ttl=ttl)
            while True:
                while ep.readiness(EVENT_IN | EVENT_ERR):
                    src, rseq, rdata, arrived = ep.recv()  # raises a queued error
                    if rseq == seq and src == dst and rdata == data:
                        return max(arrived - sent, 0.0)
                if ep.closed:  # the stack closed under us: fail now, don't wait out the timeout
                    raise StackClosed("the stack was closed while waiting for an echo reply")
                if expired or timeout <= 0:
                    raise TimedOut(f"no echo reply from {address} within {timeout} s")
                # one plain future and one timer handle (not ``wait_for``: its extra future,
                # done-callback and loop iteration would sit between the reply and the caller)
                waiter = loop.create_future()
                if timer is None:
                    timer = loop.call_at(sent + timeout, expire)
                await waiter
        except HostUnreachable:
            raise
        finally:
            if timer is not None:
                timer.cancel()
            ep.waiter.unregister(entry)
            ep.close()


    # -- forwarders (transparent mode) -----------------------------------------------------------
    def tcp_forwarder(self, handler: Callable[[ForwardedConnection], Awaitable[None]], *,
                      nic: NIC | int | str | None = None, transparent: bool = True,
                      **options: Any) -> AsyncForwarder:
        """Run ``await handler(conn)`` for every TCP connection to any address and port that
        arrives on ``nic`` (any NIC when None) and matches no listener; see
        ``aionetstack.asyncio.forward``.  ``transparent`` puts ``nic`` in transparent mode
        (``set_transparent``).  Options: ``max_pending``, ``pending_timeout``,
        ``destination_filter`` (``TcpForwarder``)."""
        from aionetstack.asyncio.forward import tcp_forwarder

        return tcp_forwarder(self, handler, nic=self._forwarding_nic(nic, transparent),
                             **options)

    def udp_forwarder(self, handler: Callable[[ForwardedDatagrams], Awaitable[None]], *,
                      nic: NIC | int | str | None = None, transparent: bool = True,
                      **options: Any) -> AsyncForwarder:
        """Run ``await handler(req)`` for every new UDP flow (one per client source: full
        cone) to any address arriving on ``nic``; see ``aionetstack.asyncio.forward``.
        Options: ``max_pending``, ``max_flows``, ``idle_timeout``, ``pending_timeout``,
        ``destination_filter`` (``UdpForwarder``)."""
        from aionetstack.asyncio.forward import udp_forwarder

        return udp_forwarder(self, handler, nic=self._forwarding_nic(nic, transparent),
                             **options)

    def _forwarding_nic(self, nic: NIC | int | str | None, transparent: bool) -> NIC | None:
        self._bind_loop()
        n = self._nic(nic)
        if n is not None and transparent:
            self.set_transparent(n, echo=n.echo_any)
        return n

    # -- TCP -------------------------------------------------------------------------------------
    def tcp_endpoint(self, family: int = 4) -> TcpEndpoint:
        """A new, unbound TCP endpoint (the non-blocking core API)."""
        ep: TcpEndpoint = self.tcp.new_endpoint(family)
        return ep

    def resolve(self, host: str | None, port: int | str | None,
                family: int = 0) -> list[tuple[bytes, int]]:
        """Literal addresses, ``localhost`` and names added with ``add_host``."""
        if port is None:
            port = 0
        try:
            pnum = int(port)
        except ValueError:
            try:
                pnum = socket.getservbyname(str(port))
            except OSError:
                raise InvalidArgument(f"unknown service {port!r}") from None
        if not 0 <= pnum <= 65535:
            raise InvalidArgument(f"port out of range: {pnum}")
        want = 4 if family == socket.AF_INET else 6 if family == socket.AF_INET6 else 0
        if host is None or host == "":
            names: list[bytes] = [b"\x00" * 4] if want != 6 else [b"\x00" * 16]
            if want == 0:
                names.append(b"\x00" * 16)
        elif host in self.hosts:
            names = list(self.hosts[host])
        elif host == "localhost":
            names = [b"\x7f\x00\x00\x01", bytes(15) + b"\x01"]
        else:
            try:
                names = [to_bytes(host)]
            except InvalidArgument:
                raise socket.gaierror(socket.EAI_NONAME,
                                      f"{host!r} is not an address or a name known to this "
                                      f"stack (see Stack.add_host)") from None
        out = [(a, pnum) for a in names if want == 0 or (4 if len(a) == 4 else 6) == want]
        if not out:
            raise socket.gaierror(socket.EAI_ADDRFAMILY, f"no address of that family for {host}")
        return out

    def drop_in(self, *others: Stack, fallthrough: bool = False) -> Any:
        """``async with stack.drop_in():`` — unmodified asyncio code in the block uses the
        stack (and ``others``) for its connections, servers, datagrams and name lookups."""
        from aionetstack.asyncio.loop import drop_in

        return drop_in([self, *others], fallthrough=fallthrough)

    def add_host(self, name: str, *addresses: str) -> None:
        """Make ``name`` resolve to ``addresses`` on this stack (a tiny /etc/hosts)."""
        self.hosts.setdefault(name, []).extend(to_bytes(a) for a in addresses)

    async def _connect_endpoint(self, addr: tuple[bytes, int],
                                local_addr: tuple[str, int] | None) -> TcpEndpoint:
        loop = self._bind_loop()
        ep = self.tcp_endpoint(4 if len(addr[0]) == 4 else 6)
        try:
            if local_addr is not None:
                ep.bind(local_addr[0] or None, local_addr[1])
            ep.start_connect(addr[0], addr[1])
            while ep.connecting():
                await wait_events(loop, ep.waiter, EVENT_OUT | EVENT_ERR | EVENT_HUP)
            ep.connect_result()  # raises the failure
            return ep
        except BaseException:
            ep.abort()  # a cancelled or failed connect frees its port at once
            raise

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | str | None = None,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: Any = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """``loop.create_connection`` over this stack."""
        if sock is not None:
            raise ValueError("sock is not supported: a stack has no OS sockets")
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if ssl and server_hostname is None:
            if host is None:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        self._bind_loop()
        errors: list[OSError] = []
        ep = None
        for addr in self.resolve(host, port, family):
            try:
                ep = await self._connect_endpoint(addr, local_addr)
                break
            except OSError as exc:
                errors.append(exc)
        if ep is None:
            if len(errors) == 1 or not all_errors:
                raise errors[0]
            raise ExceptionGroup("create_connection failed", errors)
        protocol = protocol_factory()
        if not ssl:
            return self._plain_transport(ep, protocol)  # no coroutine to await
        return await self._make_transport(ep, protocol, ssl, server_hostname, False,
                                          ssl_handshake_timeout, ssl_shutdown_timeout)

    def _plain_transport(self, ep: TcpEndpoint, protocol: asyncio.BaseProtocol,
                         ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """The transport of a connected endpoint without TLS."""
        # the handshake is complete: connection_made now, without a call_soon round trip
        transport = TcpTransport(self, ep, protocol, self._bind_loop(), start_soon=False)
        transport.start_now()
        return transport, protocol

    async def _make_transport(self, ep: TcpEndpoint, protocol: asyncio.BaseProtocol,
                              ssl: ssl_module.SSLContext | bool | None,
                              server_hostname: str | None, server_side: bool,
                              handshake_timeout: float | None, shutdown_timeout: float | None,
                              ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        loop = self._bind_loop()
        if ssl:
            waiter: asyncio.Future[None] = loop.create_future()
            ctx = ssl if isinstance(ssl, ssl_module.SSLContext) else (
                ssl_module.create_default_context())
            ssl_protocol = make_ssl_protocol(
                loop, protocol, ctx, waiter, server_side=server_side,
                server_hostname=server_hostname, handshake_timeout=handshake_timeout,
                shutdown_timeout=shutdown_timeout)
            transport = TcpTransport(self, ep, ssl_protocol, loop)
            try:
                await waiter
            except BaseException:
                transport.abort()
                raise
            app_transport: asyncio.Transport = ssl_protocol._app_transport
            return app_transport, protocol
        return self._plain_transport(ep, protocol)

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | list[str] | None = None,
        port: int | str | None = None,
        *,
        family: int = 0,
        flags: int = 0,
        sock: Any = None,
        backlog: int = 100,
        ssl: ssl_module.SSLContext | None = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server:
        """``loop.create_server`` over this stack (host None/"" = every address)."""
        if sock is not None:
            raise ValueError("sock is not supported: a stack has no OS sockets")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl argument must be an SSLContext or None, got {ssl!r}")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        self._bind_loop()
        hosts: list[str | None] = list(host) if isinstance(host, list) else [host]
        addrs: list[tuple[bytes, int]] = []
        for h in hosts:
            addrs.extend(self.resolve(h, port, family))
        listeners: list[TcpEndpoint] = []
        try:
            chosen_port = 0
            for addr, p in addrs:
                ep = self.tcp_endpoint(4 if len(addr) == 4 else 6)
                listeners.append(ep)  # closed below if binding or listening fails
                ep.reuse_address = True if reuse_address is None else bool(reuse_address)
                local = ep.bind(addr if any(addr) else None, p or chosen_port)
                chosen_port = chosen_port or local[1]  # port 0: one port for every address
                ep.listen(backlog)
        except BaseException:
            for ep in listeners:
                ep.close()
            raise
        server = Server(self, listeners, protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server

    async def open_connection(self, host: str | None = None, port: int | str | None = None,
                              *, limit: int = 2 ** 16, **kwds: Any,
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_connection`` over this stack."""
        loop = self._bind_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, **kwds)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def start_server(self, client_connected_cb: Callable[..., Any],
                           host: str | list[str] | None = None,
                           port: int | str | None = None, *, limit: int = 2 ** 16,
                           **kwds: Any) -> Server:
        """``asyncio.start_server`` over this stack."""
        loop = self._bind_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(factory, host, port, **kwds)


def _find_fd_link(link: Link | None) -> FdLink | None:
    for _ in range(8):  # through wrappers such as pcap
        if link is None or isinstance(link, FdLink):
            return link
        link = getattr(link, "inner", None)
    return None


def _host(host: str) -> bytes:
    if host == "localhost":
        return b"\x7f\x00\x00\x01"
    return to_bytes(host)


def _family(family: int, *addrs: tuple[str, int] | None) -> int:
    if family == socket.AF_INET:
        return 4
    if family == socket.AF_INET6:
        return 6
    if family not in (0, socket.AF_UNSPEC):
        raise InvalidArgument(f"unsupported address family {family}")
    for a in addrs:
        if a is not None and a[0]:
            return 4 if len(_host(a[0])) == 4 else 6
    return 4


__all__ = ["Stack", "to_str"]


_PING_PATTERN = bytes(range(256))


def _ping_payload(size: int) -> bytes:
    """The default echo payload: bytes 0, 1, 2, ... (mod 256), ``size`` of them."""
    if size <= 256:
        return _PING_PATTERN[:max(size, 0)]
    return (_PING_PATTERN * (size // 256 + 1))[:size]
