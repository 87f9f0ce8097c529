"""In-memory cases: two stacks on a ``link.pipe`` vs asyncio kernel streams over 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from typing import Any

from benchmarks.common import (
    Ctx,
    Numbers,
    Params,
    Row,
    case,
    measure,
    percentile,
    raise_nofile,
    rss_bytes,
    run_measure,
)
from benchmarks.workloads import (
    STACK_A,
    STACK_B,
    KernelLoopback,
    StackPipe,
    bulk,
    conn_rate,
    echo_handler,
    echo_rtt,
    open_net,
)

MB = 1e6
KERNEL = "asyncio streams, kernel 127.0.0.1"


# -- measurements (each runs in its own interpreter) ---------------------------------------------
@measure("mem.bulk")
async def _bulk(p: Params) -> Numbers:
    async with open_net(p["kind"], p.get("mtu", 1500), p.get("offload", False)) as net:
        bps = await bulk(net, p["nbytes"], p["budget"], p.get("flows", 1))
    return {"MBps": bps / MB}


@measure("mem.connrate")
async def _connrate(p: Params) -> Numbers:
    async with open_net(p["kind"]) as net:
        rate = await conn_rate(net, p["count"], p["budget"])
    return {"per_s": rate}


@measure("mem.rtt")
async def _rtt(p: Params) -> Numbers:
    async with open_net(p["kind"]) as net:
        rtts = await echo_rtt(net, p["count"], p.get("size", 64))
    return {"p50_us": percentile(rtts, 50) * 1e6, "p99_us": percentile(rtts, 99) * 1e6}


@measure("mem.conns")
async def _conns(p: Params) -> Numbers:
    """N established connections (both ends in this process); heap or RSS per endpoint.
    ``ports`` listeners share them (a destination has at most ~28,000 ephemeral ports)."""
    n = int(p["n"])
    nports = int(p.get("ports", 1))
    trace = bool(p["trace"])
    note = ""
    if p["kind"] == "kernel":
        limit = raise_nofile(2 * n + 200)
        if limit < 2 * n + 200:
            n = (limit - 200) // 2
            note = f"N reduced to {n} by RLIMIT_NOFILE={limit}"
    net: KernelLoopback | StackPipe = (
        KernelLoopback() if p["kind"] == "kernel"
        else StackPipe(max_connections=max(16384, n + 1024)))  # the default cap is 16,384
    accepted = 0
    all_in = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        if accepted >= n:
            all_in.set()
        await echo_handler(r, w)

    servers = [await net.serve(handler, backlog=1024) for _ in range(nports)]
    gc.collect()
    if trace:
        tracemalloc.start()
        base_heap = tracemalloc.get_traced_memory()[0]
    base_rss = rss_bytes()
    conns: list[Any] = []
    batch = 256
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        conns.extend(await asyncio.gather(
            *(net.connect(*servers[(i + j) % nports]) for j in range(min(batch, n - i)))))
    await asyncio.wait_for(all_in.wait(), 300)
    t_open = time.perf_counter() - t0
    await asyncio.sleep(0.05)  # let the last handshakes and handler tasks settle
    gc.collect()
    out: Numbers = {"n": n, "open_s": t_open, "note": note}
    if trace:
        out["heap_per_endpoint"] = (tracemalloc.get_traced_memory()[0] - base_heap) / (2 * n)
        tracemalloc.stop()
    else:
        out["rss_per_endpoint"] = (rss_bytes() - base_rss) / (2 * n)
        out["rss_mib"] = rss_bytes() / 2**20
        t1 = time.perf_counter()
        for _, w in conns:
            w.write(b"e")

        async def one(r: asyncio.StreamReader) -> None:
            await r.readexactly(1)

        await asyncio.wait_for(asyncio.gather(*(one(r) for r, _ in conns)), 300)
        out["echo_round_s"] = time.perf_counter() - t1
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.1)
    await net.close()
    return out


@measure("mem.cutmerge")
async def _cutmerge(p: Params) -> Numbers:
    """The frame work of the MTU 1500 pipe row and nothing else: a 64 KiB TCP segment cut into
    1448-byte frames (software GSO), through the pipe, merged back by the receiver's GRO.  No
    TCP, no application, no event loop turns: a floor under the row's throughput."""
    import struct

    from aionetstack import Stack, link
    from aionetstack.link.vnet import segment
    from aionetstack.wire.checksum import checksum

    a_end, b_end = link.pipe(mtu=1500, seed=1)
    b = Stack(seed=2)
    nic = b.add_nic(b_end, [f"{STACK_B}/24"])
    merged = [0]

    def count(frame: memoryview, trusted: bool = False) -> None:
        merged[0] += len(frame) - 52

    assert nic.gro is not None
    nic.gro.deliver = count  # what GRO passes on

    class _Idle:
        def link_deliver(self, frame: memoryview) -> None: ...

        def link_wakeup(self, at: float) -> None: ...

    a_end.attach(_Idle(), time.monotonic)
    payload = 1448 * 45
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 52 + payload, 1, 0x4000, 64, 6, 0,
                               bytes(map(int, STACK_A.split("."))),
                               bytes(map(int, STACK_B.split(".")))))
    ip[10:12] = checksum(ip).to_bytes(2, "big")
    tcp = struct.pack("!HHIIBBHHH4sII", 40000, 5001, 1, 1, 8 << 4, 0x18, 512, 0, 0,
                      b"\x01\x01\x08\x0a", 1, 2)
    frame = bytes(ip) + tcp + bytes(payload)
    budget = float(p["budget"])
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget:
        for _ in range(20):
            a_end.send_many(segment(frame, 0, 1448, False))
            b_end.poll()
        done += 20 * payload
    secs = time.perf_counter() - t0
    b.close()
    if merged[0] != done:
        raise RuntimeError(f"GRO delivered {merged[0]} payload bytes of {done}")
    return {"MBps": done / secs / MB}


# -- cases ---------------------------------------------------------------------------------------
def _alternate(ctx: Ctx, name: str, **params: Any) -> tuple[list[Numbers], list[Numbers]]:
    """``ctx.runs`` runs of measurement ``name`` for the stack and the kernel, interleaved."""
    stack: list[Numbers] = []
    kernel: list[Numbers] = []
    for _ in range(ctx.runs):
        stack.append(run_measure(name, kind="stack", **params))
        kernel.append(run_measure(name, kind="kernel", **params))
    return stack, kernel


@case("bulk_mem")
def bulk_mem(ctx: Ctx) -> list[Row]:
    """Single-flow bulk throughput, two stacks on an in-memory pipe (MTU 1500 and 65535, and
    MTU 1500 with segmentation offload: 64 KiB super-segments cross the pipe whole)."""
    budget = ctx.pick(0.5, 2.0)
    rows = []
    for mtu, offload in ((1500, False), (65535, False), (1500, True)):
        params = {"mtu": mtu, "offload": offload, "nbytes": 1 << 31, "budget": budget}
        st, ke = _alternate(ctx, "mem.bulk", **params)
        label = f"bulk 1 flow, pipe MTU {mtu}" + (" + TSO" if offload else "")
        rows.append(Row("bulk_mem", label, "MB/s", "higher", params,
                        [r["MBps"] for r in st], [r["MBps"] for r in ke], KERNEL))
        if (mtu, offload) == (1500, False):
            floor = [run_measure("mem.cutmerge", budget=budget)["MBps"]
                     for _ in range(ctx.runs)]
            rows.append(Row("bulk_mem", "pipe MTU 1500: GSO cut + pipe + GRO alone (ceiling)",
                            "MB/s", "higher", {"budget": budget}, floor,
                            [r["MBps"] for r in ke], KERNEL,
                            note="no TCP, no application: the frame work of the row above"))
    return rows


@case("flows_mem")
def flows_mem(ctx: Ctx) -> list[Row]:
    """Aggregate throughput with 1, 10, 100 (and 1,000 in full mode) concurrent flows."""
    budget = ctx.pick(0.5, 2.0)
    rows = []
    for flows in ctx.pick((1, 10, 100), (1, 10, 100, 1000)):
        params = {"mtu": 1500, "nbytes": 1 << 31, "budget": budget, "flows": flows}
        st, ke = _alternate(ctx, "mem.bulk", **params)
        label = f"{flows} flow{'s' if flows > 1 else ''}"
        rows.append(Row("flows_mem", f"aggregate, {label}, pipe MTU 1500", "MB/s",
                        "higher", params, [r["MBps"] for r in st], [r["MBps"] for r in ke],
                        KERNEL))
    return rows


@case("connrate_mem")
def connrate_mem(ctx: Ctx) -> list[Row]:
    """Connection rate (connect, 1-byte echo, close; sequential) in memory."""
    params = {"count": ctx.pick(300, 3000), "budget": ctx.pick(0.5, 2.0)}
    st, ke = _alternate(ctx, "mem.connrate", **params)
    return [Row("connrate_mem", "connect+echo+close, pipe", "conn/s", "higher", params,
                [r["per_s"] for r in st], [r["per_s"] for r in ke], KERNEL)]


@case("rtt_mem")
def rtt_mem(ctx: Ctx) -> list[Row]:
    """64-byte echo round trip p50/p99 on one connection, in memory."""
    params = {"count": ctx.pick(500, 5000), "size": 64}
    st, ke = _alternate(ctx, "mem.rtt", **params)
    return [Row("rtt_mem", f"echo RTT {q}, 64 B, pipe", "us", "lower", params,
                [r[f"{q}_us"] for r in st], [r[f"{q}_us"] for r in ke], KERNEL)
            for q in ("p50", "p99")]


@case("conns_mem")
def conns_mem(ctx: Ctx) -> list[Row]:
    """N concurrent established connections: heap and RSS per endpoint, open time, echo round."""
    n = ctx.pick(1000, 10000)
    runs = 1 if ctx.quick else min(ctx.runs, 2)
    sizes: dict[str, tuple[list[Numbers], list[Numbers]]] = {"rss": ([], []), "heap": ([], [])}
    for _ in range(runs):
        for trace, key in ((False, "rss"), (True, "heap")):
            sizes[key][0].append(run_measure("mem.conns", kind="stack", n=n, trace=trace))
            sizes[key][1].append(run_measure("mem.conns", kind="kernel", n=n, trace=trace))
    rss_st, rss_ke = sizes["rss"]
    heap_st, heap_ke = sizes["heap"]
    kn = rss_ke[0]["n"]
    note = rss_ke[0].get("note", "")
    params = {"n": n, "kernel_n": kn}

    def rows(st: list[Numbers], ke: list[Numbers], key: str, figure: str, unit: str,
             scale: float = 1.0) -> Row:
        return Row("conns_mem", figure, unit, "lower", params,
                   [r[key] * scale for r in st], [r[key] * scale for r in ke], KERNEL,
                   note=note)

    return [
        rows(heap_st, heap_ke, "heap_per_endpoint", f"heap per endpoint, {n} conns "
             "(tracemalloc)", "KiB", 1 / 1024),
        rows(rss_st, rss_ke, "rss_per_endpoint", f"RSS per endpoint, {n} conns", "KiB",
             1 / 1024),
        rows(rss_st, rss_ke, "open_s", f"time to open {n} conns", "s"),
        rows(rss_st, rss_ke, "echo_round_s", f"1-byte echo across {n} conns", "s"),
    ]


@case("conns_100k")
def conns_100k(ctx: Ctx) -> list[Row]:
    """100,000 established connections in one process (both ends: 200,000 endpoints, over four
    listeners): RSS per endpoint and in all, open and echo time per connection.  The kernel
    runs as many as RLIMIT_NOFILE allows (two sockets per connection; its note says)."""
    n = ctx.pick(3000, 100000)
    st = run_measure("mem.conns", timeout=900, kind="stack", n=n, trace=False, ports=4)
    ke = run_measure("mem.conns", timeout=900, kind="kernel", n=n, trace=False, ports=4)
    kn = int(ke["n"])
    params = {"n": n, "kernel_n": kn, "listeners": 4}
    note = "; ".join(x for x in (str(ke.get("note", "")),
                                 "kernel RSS is user space only (socket buffers are the "
                                 "kernel's)") if x)

    def row(figure: str, unit: str, stack: float, kernel: float) -> Row:
        return Row("conns_100k", figure, unit, "lower", params, [stack], [kernel], KERNEL,
                   note=note)

    return [
        row(f"RSS per endpoint, {n} conns", "KiB", st["rss_per_endpoint"] / 1024,
            ke["rss_per_endpoint"] / 1024),
        row(f"process RSS holding {n} conns (kernel: {kn})", "MiB", st["rss_mib"],
            ke["rss_mib"]),
        row(f"time to open {n} conns, per conn", "µs", st["open_s"] / n * 1e6,
            ke["open_s"] / kn * 1e6),
        row(f"1-byte echo across {n} conns, per conn", "µs", st["echo_round_s"] / n * 1e6,
            ke["echo_round_s"] / kn * 1e6),
    ]
