"""Kernel interop fixtures: every test gets its own network namespace, removed afterwards.

These tests need root and /dev/net/tun.  They skip without them, unless
AIONETSTACK_REQUIRE_PRIVILEGED=1 (as in CI), in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
