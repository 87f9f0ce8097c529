"""The optional PyTCP column: the same TUN jobs run by PyTCP (``pmd-pytcp``), the closest pure
Python peer, when it is installed (``pip install -e '.[pytcp]'``; GPL-3.0, used only here, in
its own worker process, never by the package).

Layout as for the stack's TUN cases (``tun_cases``): a fresh namespace holds the TUN device with
the kernel's address ``198.18.0.1``; PyTCP owns ``198.18.0.2`` on the other side; the kernel end
is a ``benchmarks._kpeer`` process (or ``ping``) in the namespace.  PyTCP opens its TUN device
itself (IFF_TUN with the 4-byte packet information header, its own format), so the worker moves
into the namespace first and configures the kernel side of the device there.  PyTCP runs on
this worker's asyncio loop and has no offloads: its rows are the ones without offloads.

Jobs (``params["job"]``): ``k2s`` / ``s2k`` bulk (MB/s), ``connrate`` (connect, 1-byte echo,
close; per second), ``rtt`` (64-byte echo round trip, p50/p99 µs), ``ping`` (kernel ping to
PyTCP, p50/p99 µs).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import (
    MeasureFailed,
    Numbers,
    Params,
    Skip,
    measure,
    percentile,
    pytcp_available,
    run_measure,
)
from benchmarks.netns import Peer, enter, namespaces, require_netns

KERNEL, PEER = "198.18.0.1", "198.18.0.2"
DEV = "ansb0"
MB = 1e6
SNDBUF = 1 << 18


def pytcp_run(job: str, **params: Any) -> Numbers | None:
    """Run PyTCP ``job`` in a worker, or None when PyTCP is not installed.  A PyTCP failure is
    reported and costs its column only, not the stack's and the kernel's figures of the case."""
    if not pytcp_available():
        return None
    try:
        return run_measure("tun.pytcp", job=job, **params)
    except (MeasureFailed, Skip) as exc:
        print(f"  PyTCP {job}: no figure ({exc})", file=sys.stderr)
        return None


def _modules() -> tuple[Any, Any, Any, Any]:
    """PyTCP's stack, socket, address and interface-layer modules (imported by name: PyTCP is
    optional, and typed only as ``Any`` here)."""
    if not pytcp_available():
        raise Skip("PyTCP is not installed (pip install -e '.[pytcp]')")
    return (importlib.import_module("pmd_pytcp.stack"),
            importlib.import_module("pmd_pytcp.socket"),
            importlib.import_module("pmd_net_addr"),
            importlib.import_module("pmd_pytcp.lib.interface_layer"))


class _PyTcp:
    """PyTCP brought up on a TUN device in namespace ``ns`` (this process moves into it)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.stack, self.sock, self.addr, self.layer = _modules()
        self.fd = -1

    async def __aenter__(self) -> _PyTcp:
        enter(self.ns)
        info = self.stack.initialize_interface__tun(DEV)
        self.fd = int(info["fd"])
        for args in (("addr", "add", f"{KERNEL}/24", "dev", DEV), ("link", "set", DEV, "up")):
            subprocess.run(["ip", *args], check=True, capture_output=True)
        self.stack.init(fd=self.fd, layer=self.layer.InterfaceLayer.L3, mtu=1500,
                        ip4_host=self.addr.Ip4IfAddr(f"{PEER}/24"), ip4_dhcp=False,
                        ip6_support=False)
        await self.stack.start()
        for _ in range(100):  # the address is usable once the stack has brought it up
            try:
                probe = self.socket()
                probe.bind((PEER, 0))
                probe.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stack.stop()
        finally:
            os.close(self.fd)

    def socket(self) -> Any:
        return self.sock.socket(self.sock.AF_INET, self.sock.SOCK_STREAM)

    async def connect(self, host: str, port: int) -> Any:
        s = self.socket()
        # Nagle off, as asyncio sets it for every TCP transport (and the stack's transports)
        s.setsockopt(self.sock.IPPROTO_TCP, self.sock.TCP_NODELAY, 1)
        await s.connect((host, port))
        return s


async def _recv_exactly(s: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        d = await s.recv(n - len(out))
        if not d:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += d
    return out


async def _k2s(p: _PyTcp, budget: float) -> Numbers:
    ls = p.socket()
    ls.bind((PEER, 5001))
    ls.listen()
    peer = await Peer.start(p.ns, "source", PEER, "5001", str(budget), wait_ready=False)
    try:
        c, _ = await asyncio.wait_for(ls.accept(), 30)
        t0 = time.perf_counter()
        got = 0
        while True:
            d = await c.recv(1 << 18)
            if not d:
                break
            got += len(d)
        secs = time.perf_counter() - t0
        c.close()
        await peer.result(budget * 4 + 30)
    finally:
        await peer.stop()
        ls.close()
    return {"MBps": got / secs / MB}


async def _s2k(p: _PyTcp, budget: float) -> Numbers:
    peer = await Peer.start(p.ns, "sink", KERNEL, "5001")
    try:
        s = await p.connect(KERNEL, 5001)
        chunk = bytes(1 << 16)
        # PyTCP's send() queues everything at once and never waits: a blocking send is
        # emulated with a 256 KiB send buffer (its session's TX buffer, read directly)
        txbuf = s.tcp_session._tx.buffer
        end = time.perf_counter() + budget
        while time.perf_counter() < end:
            await s.send(chunk)
            while len(txbuf) > SNDBUF:
                await asyncio.sleep(0)
        s.close()
        res = await peer.result(budget * 4 + 30)
    finally:
        await peer.stop()
    return {"MBps": res["bytes"] / res["secs"] / MB}


async def _connrate(p: _PyTcp, count: int, budget: float) -> Numbers:
    async def once() -> None:
        s = await p.connect(KERNEL, 7007)
        await s.send(b"x")
        await _recv_exactly(s, 1)
        s.close()

    await once()  # warm-up
    t0 = time.perf_counter()
    deadline = t0 + budget
    n = 0
    while n < count:
        await once()
        n += 1
        if time.perf_counter() >= deadline:
            break
    return {"per_s": n / (time.perf_counter() - t0)}


async def _rtt(p: _PyTcp, count: int) -> Numbers:
    s = await p.connect(KERNEL, 7007)
    msg = b"m" * 64
    for _ in range(20):  # warm-up
        await s.send(msg)
        await _recv_exactly(s, 64)
    rtts = []
    pc = time.perf_counter
    for _ in range(count):
        t = pc()
        await s.send(msg)
        await _recv_exactly(s, 64)
        rtts.append(pc() - t)
    s.close()
    return {"p50_us": percentile(rtts, 50) * 1e6, "p99_us": percentile(rtts, 99) * 1e6}


@measure("tun.pytcp")
async def _pytcp(params: Params) -> Numbers:
    require_netns()
    _modules()  # Skip before any namespace is made
    job = params["job"]
    with namespaces(1) as (ns,):
        async with _PyTcp(ns) as p:
            if job == "k2s":
                return await _k2s(p, float(params["budget"]))
            if job == "s2k":
                return await _s2k(p, float(params["budget"]))
            if job in ("connrate", "rtt"):
                peer = await Peer.start(ns, "echo", KERNEL, "7007")
                try:
                    if job == "rtt":
                        return await _rtt(p, int(params["count"]))
                    return await _connrate(p, int(params["count"]), float(params["budget"]))
                finally:
                    await peer.stop()
            if job == "ping":
                from benchmarks.tun_cases import _kernel_ping

                rtts = await _kernel_ping(ns, PEER, int(params["count"]))
                return {"p50_us": percentile(rtts, 50) * 1e6,
                        "p99_us": percentile(rtts, 99) * 1e6}
    raise ValueError(f"unknown PyTCP job {job!r}")
