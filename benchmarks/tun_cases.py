"""TUN cases: the stack against the kernel over a TUN device in a namespace the benchmark creates.

Layout (addresses are from the 198.18.0.0/15 benchmarking range):

* stack cases: namespace ``ns`` holds the TUN device with the kernel's address ``198.18.0.1``;
  the stack (this process) owns ``198.18.0.2`` on the other side of the device.  The kernel end
  of every transfer is a ``benchmarks._kpeer`` process (blocking sockets) inside ``ns``.
* kernel baseline: two namespaces joined by a veth pair (MTU 1500), ``198.19.0.1`` <->
  ``198.19.0.2``, with the same ``_kpeer`` peers, or this process's asyncio client moved into the
  first namespace for the connection-rate and echo cases.  For the bulk rows without offloads the
  veth's TSO, GSO and GRO are turned off; with offloads it keeps the kernel's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.common import (
    Ctx,
    Numbers,
    Params,
    Row,
    case,
    inet_checksum,
    measure,
    percentile,
    run_measure,
)
from benchmarks.netns import Peer, enter, namespaces, no_offloads, require_netns, veth
from benchmarks.pytcp_cases import pytcp_run
from benchmarks.workloads import KernelLoopback, Sink, conn_rate, echo_rtt, send_for

KERNEL, STACK = "198.18.0.1", "198.18.0.2"
VETH_A, VETH_B = "198.19.0.1", "198.19.0.2"
MB = 1e6
VETH = "kernel↔kernel over veth (MTU 1500), two namespaces"


class _StackClient:
    """A ``Net`` whose connections go out of ``stack``; servers live in the kernel."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    async def serve(self, handler: Any, *, backlog: int = 100) -> tuple[str, int]:
        raise NotImplementedError

    async def connect(self, host: str, port: int) -> Any:
        return await self.stack.open_connection(host, port, limit=1 << 18)


@contextlib.asynccontextmanager
async def _tun_stack(ns: str, offload: bool = False) -> Any:
    from aionetstack import Stack
    from aionetstack.link.tun import Tun

    dev = Tun.create("ansb0", peer_address=f"{KERNEL}/24", netns=ns, mtu=1500, offload=offload)
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK}/24"])
        yield stack


# -- measurements --------------------------------------------------------------------------------
@measure("tun.bulk")
async def _bulk(p: Params) -> Numbers:
    require_netns()
    budget = float(p["budget"])
    with namespaces(1) as (ns,):
        async with _tun_stack(ns, bool(p["offload"])) as stack:
            if p["direction"] == "k2s":
                sink = Sink()
                srv = await stack.start_server(sink, STACK, 5001, limit=1 << 18)
                peer = await Peer.start(ns, "source", STACK, "5001", str(budget),
                                        wait_ready=False)
                try:
                    await asyncio.wait_for(sink.done.wait(), budget * 4 + 30)
                    await peer.result()
                finally:
                    await peer.stop()
                srv.close()
                got, start, end = sink.results[0]
                return {"MBps": got / (end - start) / MB}
            peer = await Peer.start(ns, "sink", KERNEL, "5001")
            try:
                _, w = await stack.open_connection(KERNEL, 5001)
                await send_for(w, 1 << 40, budget)
                res = await peer.result(budget * 4 + 30)
            finally:
                await peer.stop()
            return {"MBps": res["bytes"] / res["secs"] / MB}


@measure("tun.kbulk")
async def _kbulk(p: Params) -> Numbers:
    require_netns()
    with namespaces(2) as (na, nb):
        veth(na, f"{VETH_A}/24", nb, f"{VETH_B}/24")
        if not p["offload"]:
            no_offloads(na, "bva")
            no_offloads(nb, "bvb")
        sink = await Peer.start(nb, "sink", VETH_B, "5001")
        src = await Peer.start(na, "source", VETH_B, "5001", str(p["budget"]), wait_ready=False)
        try:
            res = await sink.result()
            await src.result()
        finally:
            await sink.stop()
            await src.stop()
    return {"MBps": res["bytes"] / res["secs"] / MB}


async def _with_echo(p: Params, job: str) -> Numbers:
    """Run ``job`` (connrate or rtt) against a kernel echo peer: over TUN from the stack, or
    kernel-to-kernel over veth with this process moved into the client namespace."""
    require_netns()
    if p["kind"] == "stack":
        with namespaces(1) as (ns,):
            async with _tun_stack(ns) as stack:
                peer = await Peer.start(ns, "echo", KERNEL, "7007")
                try:
                    return await _job(_StackClient(stack), job, p, KERNEL)
                finally:
                    await peer.stop()
    with namespaces(2) as (na, nb):
        veth(na, f"{VETH_A}/24", nb, f"{VETH_B}/24")
        peer = await Peer.start(nb, "echo", VETH_B, "7007")
        try:
            enter(na)
            return await _job(KernelLoopback(), job, p, VETH_B)
        finally:
            await peer.stop()


async def _job(net: Any, job: str, p: Params, host: str) -> Numbers:
    if job == "connrate":
        return {"per_s": await conn_rate(net, p["count"], p["budget"], host, 7007)}
    rtts = await echo_rtt(net, p["count"], 64, host, 7007)
    return {"p50_us": percentile(rtts, 50) * 1e6, "p99_us": percentile(rtts, 99) * 1e6}


@measure("tun.connrate")
async def _connrate(p: Params) -> Numbers:
    if p["kind"] == "floor":
        require_netns()
        with namespaces(1) as (ns,):
            return {"per_s": await _floor_connrate(ns, p["count"], p["budget"])}
    return await _with_echo(p, "connrate")


@contextlib.contextmanager
def _bare_tun(ns: str, on_packet: Callable[[int, bytes], None]) -> Iterator[int]:
    """The floor rows' device: a TUN fd in ``ns`` (the kernel's address on its side) read by one
    ``add_reader`` callback that hands each packet to ``on_packet(fd, packet)``; yields the fd."""
    import os

    from aionetstack.link.tun import Tun

    dev = Tun.create("ansb0", peer_address=f"{KERNEL}/24", netns=ns, mtu=1500, offload=False)
    fd = dev.fileno()
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                return
            on_packet(fd, pkt)

    loop.add_reader(fd, readable)
    try:
        yield fd
    finally:
        loop.remove_reader(fd)
        dev.close()


def _segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
             payload: bytes = b"") -> bytes:
    """An IPv4 TCP segment without options (window 65535), checksums filled in."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, 65535, 0, 0) + payload
    tcp_sum = inet_checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + tcp_sum.to_bytes(2, "big") + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return ip[:10] + inet_checksum(ip).to_bytes(2, "big") + ip[12:] + tcp


async def _floor_connrate(ns: str, count: int, budget: float) -> float:
    """The connection-rate job (connect, 1-byte echo, close; sequential) done by the least an
    asyncio program can do on the TUN fd: one ``add_reader`` callback that reads each segment
    and writes the next one of a fixed script (SYN; on the SYN-ACK, ACK with the byte; on the
    echo, FIN; on the peer's FIN, the last ACK and the next SYN).  No TCP state beyond two
    sequence numbers, no tasks, no streams: the floor (VM wake-ups, the event loop, the
    system calls, the kernel's side of every segment) under any asyncio-driven stack."""
    import os
    import socket
    import time

    src, dst = socket.inet_aton(STACK), socket.inet_aton(KERNEL)
    syn_, ack_, fin_, psh = 0x02, 0x10, 0x01, 0x08
    iss = 1000
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"port": 20000, "n": -1, "got_data": False}  # n = -1: the warm-up connection
    t0 = [0.0]

    def next_syn(fd: int) -> None:
        state["n"] += 1
        if state["n"] == 1:
            t0[0] = time.perf_counter()
        if state["n"] > count or (state["n"] > 1 and time.perf_counter() - t0[0] >= budget):
            if not done.done():
                done.set_result(state["n"] - 1)
            return
        state["port"] += 1
        state["got_data"] = False
        os.write(fd, _segment(src, dst, state["port"], 7007, iss, 0, syn_))

    def on_packet(fd: int, pkt: bytes) -> None:
        if len(pkt) < 40 or pkt[9] != 6:
            return
        ihl = (pkt[0] & 15) * 4
        sport, dport, seq, _ack, off, flags = struct.unpack_from("!HHIIBB", pkt, ihl)
        if dport != state["port"] or sport != 7007:
            return  # a late segment of an earlier connection
        nbytes = int.from_bytes(pkt[2:4], "big") - ihl - (off >> 4) * 4
        port = state["port"]
        if flags & syn_:  # SYN-ACK: ACK it with the byte to echo
            os.write(fd, _segment(src, dst, port, 7007, iss + 1, seq + 1, ack_ | psh, b"e"))
        elif nbytes and not state["got_data"]:  # the echo: close
            state["got_data"] = True
            os.write(fd, _segment(src, dst, port, 7007, iss + 2, seq + nbytes, ack_ | fin_))
        elif flags & fin_:  # the peer's FIN: the last ACK, then the next connection
            os.write(fd, _segment(src, dst, port, 7007, iss + 3, seq + nbytes + 1, ack_))
            next_syn(fd)

    with _bare_tun(ns, on_packet) as fd:
        peer = await Peer.start(ns, "echo", KERNEL, "7007")  # once the address exists
        try:
            next_syn(fd)
            n = await asyncio.wait_for(done, budget * 10 + 30)
            return float(n) / (time.perf_counter() - t0[0])
        finally:
            await peer.stop()


@measure("tun.rtt")
async def _rtt(p: Params) -> Numbers:
    return await _with_echo(p, "rtt")


async def _kernel_ping(ns: str, dst: str, count: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.002", "-W", "1",
        dst, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    rtts = [float(m) / 1e3 for m in re.findall(r"time=([\d.]+) ms", text)]
    if not rtts:
        raise RuntimeError(f"ping {dst} in {ns} got no replies:\n{text[-500:]}")
    return rtts


def _pct(rtts: list[float], prefix: str) -> Numbers:
    return {f"{prefix}_p50_us": percentile(rtts, 50) * 1e6,
            f"{prefix}_p99_us": percentile(rtts, 99) * 1e6}


def _echo_reply(pkt: bytes) -> bytes | None:
    """The ICMP echo reply to an IPv4 echo request (no options), else None."""
    if len(pkt) < 28 or pkt[0] != 0x45 or pkt[9] != 1 or pkt[20] != 8:
        return None
    out = bytearray(pkt)
    out[12:16], out[16:20] = pkt[16:20], pkt[12:16]
    out[20] = 0  # echo reply: the checksum rises by 0x0800 (RFC 1624 incremental update)
    c = int.from_bytes(pkt[22:24], "big") + 0x0800
    out[22:24] = ((c & 0xFFFF) + (c >> 16)).to_bytes(2, "big")
    return bytes(out)


async def _floor_ping(ns: str, count: int) -> list[float]:
    """Kernel ping against the least an asyncio program can do on the TUN fd: ``add_reader``,
    one ``os.read``, swap the addresses, one ``os.write``.  No stack: what this takes is the
    floor (VM wake-ups, the event loop, two syscalls) under any asyncio-driven stack."""
    import os

    def on_packet(fd: int, pkt: bytes) -> None:
        reply = _echo_reply(pkt)
        if reply is not None:
            os.write(fd, reply)

    with _bare_tun(ns, on_packet):
        return await _kernel_ping(ns, STACK, count)


async def _split_ping(ns: str, count: int) -> Numbers:
    """Kernel ping to the stack, timed inside the stack's read callback (``perf_counter`` at the
    frames' hand-over to the NIC and around the link's send): the reads (one, in the link's
    quiet mode: the read that says EAGAIN comes after the callback), the Python path from the
    frame to the reply's ``os.write`` (IP, ICMP, route, IP output), the write itself, and the
    rest (re-arm)."""
    import time

    pc = time.perf_counter
    parts: dict[str, list[float]] = {"reads": [], "to_write": [], "write": [], "after": [],
                                     "callback": []}
    async with _tun_stack(ns) as stack:
        fdl = stack._fd_links[0]
        marks: list[float] = []
        nic, send = fdl._receiver, fdl.send

        class TimedReceiver:
            """Between the link and its NIC: marks the end of the reads (the frames' hand-over,
            one frame or a batch)."""

            def link_deliver(self, frame: memoryview, trusted: bool = False) -> None:
                marks.append(pc())
                nic.link_deliver(frame, trusted)

            def link_deliver_batch(self, frames: list[memoryview]) -> None:
                marks.append(pc())
                nic.link_deliver_batch(frames)

            def link_wakeup(self, at: float) -> None:
                nic.link_wakeup(at)

        def timed_send(frame: Any) -> None:  # the link's send: the reply's os.write
            marks.append(pc())
            send(frame)
            marks.append(pc())

        def readable() -> None:
            marks.clear()
            t0 = pc()
            stack._fd_readable(fdl)
            t1 = pc()
            if len(marks) == 3:  # one batch, one reply
                r, w0, w1 = marks
                for k, v in (("reads", r - t0), ("to_write", w0 - r), ("write", w1 - w0),
                             ("after", t1 - w1), ("callback", t1 - t0)):
                    parts[k].append(v)

        fdl._receiver = TimedReceiver()
        fdl.send = timed_send
        loop = asyncio.get_running_loop()
        loop.remove_reader(fdl.fileno())
        loop.add_reader(fdl.fileno(), readable)
        await _kernel_ping(ns, STACK, count)
    if not parts["callback"]:
        raise RuntimeError("no ping was answered in a single read callback")
    return {f"{k}_p50_us": percentile(v, 50) * 1e6 for k, v in parts.items()}


@measure("tun.ping")
async def _ping(p: Params) -> Numbers:
    require_netns()
    count = int(p["count"])
    if p["kind"] == "split":
        with namespaces(1) as (ns,):
            return await _split_ping(ns, count)
    if p["kind"] == "floor":
        with namespaces(1) as (ns,):
            return _pct(await _floor_ping(ns, count), "floor")
    if p["kind"] == "stack":
        with namespaces(1) as (ns,):
            async with _tun_stack(ns) as stack:
                await stack.ping(KERNEL, timeout=2)  # warm-up
                out: list[float] = []
                for _ in range(count):
                    out.append(await stack.ping(KERNEL, timeout=2))
                    await asyncio.sleep(0.001)
                k2s = await _kernel_ping(ns, STACK, count)
        return {**_pct(out, "s2k"), **_pct(k2s, "k2s")}
    with namespaces(2) as (na, nb):
        veth(na, f"{VETH_A}/24", nb, f"{VETH_B}/24")
        rtts = await _kernel_ping(na, VETH_B, count)
    return _pct(rtts, "veth")


# -- cases ---------------------------------------------------------------------------------------
@case("tun_bulk")
def tun_bulk(ctx: Ctx) -> list[Row]:
    """Bulk throughput over TUN (MTU 1500), kernel→stack and stack→kernel, offloads off/on."""
    require_netns()
    budget = ctx.pick(0.5, 2.0)
    combos = [(off, d) for off in (False, True) for d in ("k2s", "s2k")]
    stack: dict[tuple[bool, str], list[float]] = {c: [] for c in combos}
    kernel: dict[bool, list[float]] = {False: [], True: []}
    pytcp: dict[str, list[float]] = {"k2s": [], "s2k": []}  # no offloads: those rows only
    for _ in range(ctx.runs):
        for off in (False, True):
            kernel[off].append(run_measure("tun.kbulk", budget=budget, offload=off)["MBps"])
        for off, d in combos:
            stack[(off, d)].append(run_measure("tun.bulk", offload=off, direction=d,
                                               budget=budget)["MBps"])
        for d in ("k2s", "s2k"):
            if (r := pytcp_run(d, budget=budget)) is not None:
                pytcp[d].append(r["MBps"])
    rows = []
    for off, d in combos:
        label = "kernel→stack" if d == "k2s" else "stack→kernel"
        rows.append(Row("tun_bulk", f"TUN {label}, MTU 1500, offload {'on' if off else 'off'}",
                        "MB/s", "higher", {"offload": off, "direction": d, "budget": budget},
                        stack[(off, d)], list(kernel[off]),
                        f"{VETH}, TSO/GSO/GRO {'on' if off else 'off'}",
                        pytcp_runs=[] if off else pytcp[d]))
    return rows


@case("tun_connrate")
def tun_connrate(ctx: Ctx) -> list[Row]:
    """Connection rate over TUN: stack client → kernel echo server (sequential)."""
    require_netns()
    params = {"count": ctx.pick(300, 3000), "budget": ctx.pick(0.5, 2.0)}
    st = []
    ke = []
    fl = []
    py = []
    for _ in range(ctx.runs):
        st.append(run_measure("tun.connrate", kind="stack", **params)["per_s"])
        ke.append(run_measure("tun.connrate", kind="kernel", **params)["per_s"])
        fl.append(run_measure("tun.connrate", kind="floor", **params)["per_s"])
        if (r := pytcp_run("connrate", **params)) is not None:
            py.append(r["per_s"])
    kernel = "asyncio client → kernel echo over veth"
    return [Row("tun_connrate", "connect+echo+close, TUN", "conn/s", "higher", params, st, ke,
                kernel, pytcp_runs=py),
            Row("tun_connrate", "connect+echo+close, TUN: bare asyncio client (floor)", "conn/s",
                "higher", params, fl, list(ke), kernel,
                note="no stack, no tasks or streams: a scripted segment per read, add_reader")]


@case("tun_rtt")
def tun_rtt(ctx: Ctx) -> list[Row]:
    """64-byte echo round trip p50/p99 over TUN (stack client, kernel echo server)."""
    require_netns()
    params = {"count": ctx.pick(500, 5000)}
    st = []
    ke = []
    py = []
    for _ in range(ctx.runs):
        st.append(run_measure("tun.rtt", kind="stack", **params))
        ke.append(run_measure("tun.rtt", kind="kernel", **params))
        if (r := pytcp_run("rtt", **params)) is not None:
            py.append(r)
    return [Row("tun_rtt", f"echo RTT {q}, 64 B, TUN", "us", "lower", params,
                [r[f"{q}_us"] for r in st], [r[f"{q}_us"] for r in ke],
                "asyncio client → kernel echo over veth", pytcp_runs=[r[f"{q}_us"] for r in py])
            for q in ("p50", "p99")]


@case("tun_ping")
def tun_ping(ctx: Ctx) -> list[Row]:
    """Ping RTT over TUN: stack.ping() to the kernel, and kernel ping to the stack."""
    require_netns()
    params = {"count": ctx.pick(100, 1000)}
    st = []
    ke = []
    fl = []
    sp = []
    py = []
    for _ in range(ctx.runs):
        st.append(run_measure("tun.ping", kind="stack", **params))
        ke.append(run_measure("tun.ping", kind="kernel", **params))
        fl.append(run_measure("tun.ping", kind="floor", **params))
        sp.append(run_measure("tun.ping", kind="split", **params))
        if (r := pytcp_run("ping", **params)) is not None:
            py.append(r)
    rows = []
    for d, label in (("s2k", "stack.ping → kernel"), ("k2s", "kernel ping → stack"),
                     ("floor", "kernel ping → bare asyncio responder (floor)")):
        for q in ("p50", "p99"):
            rows.append(Row("tun_ping", f"ping {q}, {label}, TUN", "us", "lower", params,
                            [r[f"{d}_{q}_us"] for r in (fl if d == "floor" else st)],
                            [r[f"veth_{q}_us"] for r in ke], "kernel ping over veth",
                            pytcp_runs=[r[f"{q}_us"] for r in py] if d == "k2s" else [],
                            note="no stack: add_reader, os.read, os.write"
                            if d == "floor" else ""))
    for k, label in (("callback", "all of it"), ("reads", "the link's reads"),
                     ("to_write", "frames to the reply's write: IP, ICMP, route, IP output"),
                     ("write", "the write (the kernel takes the reply)"),
                     ("after", "after the write (timer re-arm)")):
        rows.append(Row("tun_ping", f"kernel ping → stack, p50 inside the read callback: {label}",
                        "us", "lower", params, [r[f"{k}_p50_us"] for r in sp],
                        note="timed with perf_counter in a separate run"))
    return rows



