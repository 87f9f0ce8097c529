"""Goodput under loss with a 20 ms RTT, vs buffer size, in virtual time.

The stack side runs two ``CoreStack``s on a ``VirtualNetwork`` (manual clock): a pipe with 10 ms
one-way delay and ``loss`` per frame in both directions (data and ACKs), no rate limit, so the
window (the buffer size) and the loss recovery bound the goodput.  Goodput is application bytes
delivered per *virtual* second, from the first byte written to EOF at the receiver.

The kernel baseline does the same job for real (wall-clock time): two namespaces, each with a
plain TUN device, joined by a userspace relay in the worker that delays every packet 10 ms and
drops ``loss`` of them in both directions (``sch_netem`` is missing on many container kernels);
SO_SNDBUF/SO_RCVBUF are set to the buffer size (Linux doubles the value for bookkeeping and stops
autotuning), and a ``_kpeer`` source sends for a fixed time.  The kernel runs CUBIC, as the stack
does (``KERNEL_CC``): under random loss the congestion control decides the goodput, and the
machine's default may be BBR, which ignores random loss (one BBR run per row is kept in
``params["kernel_bbr_MBps"]`` for reference).  It needs root; without it the rows carry no kernel
figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

from benchmarks._kpeer import KERNEL_CC
from benchmarks.common import Ctx, Numbers, Params, Row, Skip, case, is_root, measure, run_measure
from benchmarks.netns import Peer, namespaces

RTT = 0.020
BUFS = (65536, 262144, 1 << 20)
LOSSES = (0.01, 0.05)


@measure("virt.goodput")
def _goodput(p: Params) -> Numbers:
    from aionetstack.errors import ConnectStarted, WouldBlock
    from aionetstack.link.pipe import pipe
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import TcpEndpoint, TcpState, install_tcp

    buf = int(p["buf"])
    size = int(p["nbytes"])
    net = VirtualNetwork(seed=int(p.get("seed", 1)))
    a, b = net.stack(), net.stack()
    ea, eb = pipe(delay=RTT / 2, loss=float(p["loss"]), seed=int(p.get("seed", 1)))
    a.add_nic(ea, ["198.18.0.1/24"])
    b.add_nic(eb, ["198.18.0.2/24"])
    ta, tb = install_tcp(a), install_tcp(b)
    for t in (ta, tb):
        t.rcvbuf = buf
        t.sndbuf = buf
    lst = tb.new_endpoint(4)
    lst.bind(None, 80)
    lst.listen(16)
    cli = ta.new_endpoint(4)
    try:
        cli.connect("198.18.0.2", 80)
    except ConnectStarted:
        pass
    accepted: list[TcpEndpoint] = []

    def ready() -> bool:
        if not accepted and lst.listen_queue and lst.listen_queue.accept_queue:
            accepted.append(lst.accept())
        return bool(accepted) and cli.state is TcpState.ESTABLISHED

    if not net.run(until=ready, timeout=60):
        raise RuntimeError("handshake did not complete")
    srv = accepted[0]
    data = memoryview(bytes(size))
    sent = 0
    got = 0
    eof = False
    t_virtual = net.now
    t_real = time.perf_counter()

    def step() -> bool:
        nonlocal sent, got, eof
        while sent < size:
            try:
                sent += cli.write(data[sent:sent + 65536])
            except WouldBlock:
                break
        if sent == size and cli.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            cli.shutdown_write()
        while not eof:
            try:
                chunk = srv.read()
            except WouldBlock:
                break
            if not chunk:
                eof = True
                break
            got += len(chunk)
        return eof

    if not net.run(until=step, timeout=3600):
        raise RuntimeError(f"transfer did not finish: {got} of {size} bytes")
    vsecs = net.now - t_virtual
    stats = a.stats()["tcp"]
    return {"MBps": got / vsecs / 1e6, "virtual_s": vsecs,
            "real_s": time.perf_counter() - t_real,
            "retransmitted": stats.get("retransmitted", 0)}


class _LossyRelay:
    """Moves IP packets between two plain TUN devices with a fixed one-way delay and random
    loss, in both directions (a userspace netem: ``sch_netem`` is often not available)."""

    def __init__(self, fd_a: int, fd_b: int, delay: float, loss: float, seed: int) -> None:
        self.fds = (fd_a, fd_b)
        self.delay = delay
        self.loss = loss
        self.rng = random.Random(seed)
        self.forwarded = 0
        self.dropped = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i, fd in enumerate(self.fds):
            loop.add_reader(fd, self._readable, fd, self.fds[1 - i])

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self.fds:
            loop.remove_reader(fd)

    def _readable(self, src: int, dst: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            try:
                pkt = os.read(src, 65536)
            except BlockingIOError:
                return
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self.forwarded += 1
            loop.call_later(self.delay, self._write, dst, pkt)

    @staticmethod
    def _write(fd: int, pkt: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, pkt)


@measure("virt.kgoodput")
async def _kgoodput(p: Params) -> Numbers:
    from aionetstack.link.tun import Tun

    if not is_root() or not os.path.exists("/dev/net/tun"):
        raise Skip("the kernel baseline needs root and /dev/net/tun")
    buf = int(p["buf"])
    with namespaces(2) as (na, nb):
        ta = Tun.create("bta", peer_address="198.19.0.1/24", netns=na, offload=False)
        tb = Tun.create("btb", peer_address="198.19.0.2/24", netns=nb, offload=False)
        relay = _LossyRelay(ta.fileno(), tb.fileno(), RTT / 2, float(p["loss"]),
                            int(p.get("seed", 1)))
        relay.start()
        cc = str(p.get("cc", KERNEL_CC))
        sink = await Peer.start(nb, "sink", "198.19.0.2", "5001", "--rcvbuf", str(buf),
                                "--cc", cc)
        src = await Peer.start(na, "source", "198.19.0.2", "5001", str(p["seconds"]),
                               "--sndbuf", str(buf), "--cc", cc, wait_ready=False)
        try:
            res = await sink.result()
            await src.result()
        finally:
            await sink.stop()
            await src.stop()
            relay.stop()
            ta.close()
            tb.close()
    return {"MBps": res["bytes"] / res["secs"] / 1e6, "dropped": relay.dropped,
            "forwarded": relay.forwarded}


@case("goodput_loss")
def goodput_loss(ctx: Ctx) -> list[Row]:
    """Goodput under 1% and 5% loss, 20 ms RTT, vs buffer size (stack in virtual time)."""
    nbytes = ctx.pick(2 << 20, 8 << 20)
    seconds = ctx.pick(1.0, 3.0)
    rows = []
    kernel_note = ""
    for loss in LOSSES:
        for buf in BUFS:
            st: list[float] = []
            ke: list[float] = []
            real: list[float] = []
            bbr: list[float] = []
            for run in range(ctx.runs):
                r = run_measure("virt.goodput", loss=loss, buf=buf, nbytes=nbytes, seed=run + 1)
                st.append(r["MBps"])
                real.append(r["real_s"])
                if kernel_note:
                    continue
                try:
                    ke.append(run_measure("virt.kgoodput", loss=loss, buf=buf,
                                          seconds=seconds)["MBps"])
                    if run == 0:  # for reference, the loss-blind BBR on the same path
                        bbr.append(run_measure("virt.kgoodput", loss=loss, buf=buf,
                                               seconds=seconds, cc="bbr")["MBps"])
                except Skip as exc:
                    kernel_note = f"no kernel baseline: {exc}"
            params = {"loss": loss, "rtt_s": RTT, "buf": buf, "nbytes": nbytes,
                      "kernel_seconds": seconds, "stack_real_s": real, "kernel_cc": KERNEL_CC,
                      "kernel_bbr_MBps": bbr[0] if bbr else None}
            rows.append(Row("goodput_loss", f"goodput, {loss:.0%} loss, 20 ms RTT, "
                            f"buf {buf // 1024} KiB", "MB/s", "higher", params, st, ke,
                            f"kernel↔kernel ({KERNEL_CC}) via TUN relay, same delay/loss "
                            "(real time)",
                            note=kernel_note))
    return rows


