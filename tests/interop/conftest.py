"""Kernel interop fixtures: every test gets its own network namespace, removed afterwards.

These tests need root and /dev/net/tun.  They skip without them, unless
AIONETSTACK_REQUIRE_PRIVILEGED=1 (as in CI), in which case they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver

REQUIRE = os.environ.get("AIONETSTACK_REQUIRE_PRIVILEGED") == "1"


def require(condition: bool, why: str) -> None:
    if not condition:
        if REQUIRE:
            pytest.fail(f"privileged test cannot run: {why} (AIONETSTACK_REQUIRE_PRIVILEGED=1)")
        pytest.skip(why)


def require_privileged() -> None:
    require(hasattr(os, "geteuid") and os.geteuid() == 0, "needs root")
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"needs the {name} command")
    assert path is not None
    return path


@pytest.fixture
def netns() -> Iterator[str]:
    require_privileged()
    from pyroute2 import netns as nsmod

    name = f"ans-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    nsmod.create(name)
    try:
        with in_netns(name):
            # loopback up inside the namespace, for tools that expect it
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")
                if lo:
                    ipr.link("set", index=lo[0], state="up")
        yield name
    finally:
        nsmod.remove(name)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    from pyroute2 import netns as nsmod

    nsmod.pushns(name)
    try:
        yield
    finally:
        nsmod.popns()


def ns_socket(name: str, family: int, type_: int) -> socket.socket:
    """A kernel socket that lives in namespace ``name`` (usable from this process)."""
    with in_netns(name):
        s = socket.socket(family, type_)
    s.setblocking(False)
    return s


async def run_cmd(*argv: str, timeout: float = 20.0) -> tuple[int, str]:
    """Run a command; (exit code, stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


class Collect(asyncio.DatagramProtocol):
    """Queues every datagram and every error a datagram endpoint receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


class PassThrough(Link):
    """A link wrapper for tests: everything goes to ``inner``; subclasses override ``send`` to
    watch or drop outbound frames.  ``send_gso`` is deliberately not forwarded: the base class
    cuts super-segments in software, so ``send`` sees every wire packet."""

    def __init__(self, inner: Link) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def caps(self) -> LinkCaps:
        return self.inner.caps

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self.inner.attach(receiver, clock)

    def poll(self) -> float | None:
        return self.inner.poll()

    def close(self) -> None:
        self.inner.close()

    def send(self, frame: Frame) -> None:
        self.inner.send(frame)
