"""Network namespaces, veth pairs and kernel peers for the TUN and netem cases (root only)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from benchmarks.common import ROOT, Skip, is_root

CLONE_NEWNET = 0x40000000


def require_netns() -> None:
    if not is_root():
        raise Skip("needs root (network namespaces, TUN devices); run the benchmarks as root")
    if not os.path.exists("/dev/net/tun"):
        raise Skip("needs /dev/net/tun")
    if shutil.which("ip") is None:
        raise Skip("needs the ip command (iproute2)")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """``count`` fresh namespaces with loopback up; removed on exit."""
    tag = f"ansb{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    names: list[str] = []
    try:
        for i in range(count):
            name = f"{tag}-{i}"
            ip("netns", "add", name)
            names.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def veth(ns_a: str, addr_a: str, ns_b: str, addr_b: str, mtu: int = 1500) -> None:
    """A veth pair ``bva`` (in ns_a, addr_a) <-> ``bvb`` (in ns_b, addr_b), up."""
    ip("link", "add", "bva", "netns", ns_a, "mtu", str(mtu), "type", "veth",
       "peer", "name", "bvb", "netns", ns_b, "mtu", str(mtu))
    ip("-n", ns_a, "addr", "add", addr_a, "dev", "bva")
    ip("-n", ns_b, "addr", "add", addr_b, "dev", "bvb")
    ip("-n", ns_a, "link", "set", "bva", "up")
    ip("-n", ns_b, "link", "set", "bvb", "up")


def no_offloads(ns: str, *devs: str) -> None:
    """Turn TSO, GSO and GRO off on ``devs`` in namespace ``ns``."""
    subprocess.run(peer_argv(ns, "nooffload", *devs), cwd=ROOT, check=True,
                   capture_output=True, text=True)


def enter(ns: str) -> None:
    """Move this whole process (its calling thread) into namespace ``ns`` for good."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def peer_argv(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks._kpeer", *args]


class Peer:
    """A ``_kpeer`` process in a namespace, driven from asyncio."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, ns: str, *args: str, wait_ready: bool = True) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            *peer_argv(ns, *args), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        peer = cls(proc)
        if wait_ready:
            line = await peer._line(20.0)
            if line.strip() != "READY":
                raise RuntimeError(f"kernel peer {args} did not start: {line!r} "
                                   f"{await peer._stderr()}")
        return peer

    async def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        return raw.decode()

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            return (await asyncio.wait_for(self.proc.stderr.read(), 2)).decode()[-2000:]
        return ""

    async def result(self, timeout: float = 120.0) -> dict[str, Any]:
        while True:
            line = await self._line(timeout)
            if not line:
                raise RuntimeError(f"kernel peer exited without a result: {await self._stderr()}")
            if line.startswith("RESULT "):
                out: dict[str, Any] = json.loads(line[7:])
                await self.proc.wait()
                return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
