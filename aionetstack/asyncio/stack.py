"""``Stack``: the sans-IO core bound to an asyncio event loop.

One ``loop.call_at`` handle per stack: the core's deadline heap reports a new earliest deadline
through ``Timers.on_earliest`` and the handle is re-armed only when that moves earlier; when it
fires, every due timer runs at ``max(deadline, loop.time())`` and the handle is armed for the
next deadline.  The stack's clock is ``loop.time``; randomness is ``random.SystemRandom`` unless a
``seed`` asks for a reproducible ``random.Random``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from aionetstack.asyncio.datagram import DatagramTransport
from aionetstack.errors import HostUnreachable, InvalidArgument, StackClosed, TimedOut
from aionetstack.link.base import Link
from aionetstack.link.fd import FdLink
from aionetstack.stack.addr import to_bytes, to_str
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.stack.waiter import EVENT_ERR, EVENT_IN


class Stack(CoreStack):
    """A userspace TCP/IP stack driven by the running asyncio loop.

    ``async with Stack() as stack:`` binds it to the running loop and closes it on exit.
    """

    def __init__(self, *, seed: int | None = None, forwarding: bool = False,
                 **options: Any) -> None:
        rng: random.Random = random.Random(seed) if seed is not None else random.SystemRandom()
        super().__init__(clock=time.monotonic, rng=rng, forwarding=forwarding, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self.timers.on_earliest = self._on_earliest
        self._fd_links: list[FdLink] = []

    # -- loop binding ------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._bind_loop()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._clock = loop.time
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
        loop.add_reader(fd, fdl.read_ready)

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
        super().close()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_at = None

    # -- the one timer -------------------------------------------------------------------------
    def _on_earliest(self, at: float) -> None:
        if self._loop is None or self.closed:
            return
        if self._armed_at is None or at < self._armed_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._fire, at)

    def _rearm(self) -> None:
        nxt = self.timers.next_deadline()
        if nxt is None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = None
            self._armed_at = None
        elif nxt != self._armed_at:
            self._arm(nxt)

    def _fire(self, at: float) -> None:
        assert self._loop is not None
        self._handle = None
        self._armed_at = None
        try:
            self.timers.run_due(max(at, self._loop.time()))
        except Exception as exc:  # never let a stack bug kill the event loop
            self._loop.call_exception_handler({
                "message": "aionetstack: exception while running stack timers",
                "exception": exc,
            })
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

        def wake(_events: int) -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        entry = ep.waiter.register(wake, EVENT_IN | EVENT_ERR)
        try:
            data = payload or bytes((i & 0xFF) for i in range(size))
            seq = self.rng.getrandbits(16)
            sent = loop.time()
            ep.send(dst, seq, data, ttl=ttl)
            deadline = sent + timeout
            while True:
                while ep.readiness(EVENT_IN | EVENT_ERR):
                    src, rseq, rdata, arrived = ep.recv()  # raises a queued error
                    if rseq == seq and src == dst and rdata == data:
                        return max(arrived - sent, 0.0)
                if ep.closed:  # the stack closed under us: fail now, don't wait out the timeout
                    raise StackClosed("the stack was closed while waiting for an echo reply")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimedOut(f"no echo reply from {address} within {timeout} s")
                waiter = loop.create_future()
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    raise TimedOut(f"no echo reply from {address} within {timeout} s") from None
        except HostUnreachable:
            raise
        finally:
            ep.waiter.unregister(entry)
            ep.close()


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
    import socket

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
