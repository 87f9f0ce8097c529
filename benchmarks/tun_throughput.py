"""Single-flow TCP throughput between aionetstack and the Linux kernel over a TUN device.

    sudo python benchmarks/tun_throughput.py [--size-mb 50] [--mtu 1500] [--repeat 1]

Creates a network namespace with a TUN device (kernel side 198.18.0.1/24, stack 198.18.0.2/24),
then for offloads off and on moves ``--size-mb`` MB kernel→stack (a kernel socket sends to a
discard server on the stack) and stack→kernel (a stack connection sends to a kernel socket that
reads), and prints MB/s (MB = 10^6 bytes; time from the first byte written to the last byte
read).  The kernel side runs on a thread with blocking sockets, like an outside peer, with CUBIC
as the stack does (``_kpeer.KERNEL_CC``).  The namespace is removed at the end.  Nothing is
asserted: this measures, it does not test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aionetstack import Stack, link
from benchmarks._kpeer import KERNEL_CC, set_cc

KERNEL, STACK = "198.18.0.1", "198.18.0.2"
PORT = 5001
CHUNK = 1 << 20


@contextmanager
def netns(name: str) -> Iterator[str]:
    from pyroute2 import netns as nsmod

    nsmod.create(name)
    try:
        yield name
    finally:
        nsmod.remove(name)


def ns_socket(ns: str, family: int = socket.AF_INET) -> socket.socket:
    from pyroute2 import netns as nsmod

    nsmod.pushns(ns)
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    finally:
        nsmod.popns()
    set_cc(s, KERNEL_CC)  # the stack's algorithm, as in every kernel baseline (see _kpeer)
    return s


async def kernel_to_stack(stack: Stack, ns: str, size: int) -> float:
    """Seconds to move ``size`` bytes from a kernel socket to a stack discard server."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[float, int]] = loop.create_future()

    async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while data := await reader.read(1 << 18):
            n += len(data)
        if not done.done():
            done.set_result((time.perf_counter(), n))
        writer.close()

    server = await stack.start_server(discard, STACK, PORT)
    started: list[float] = []

    def client() -> None:
        s = ns_socket(ns)
        try:
            s.connect((STACK, PORT))
            buf = memoryview(os.urandom(CHUNK))
            started.append(time.perf_counter())
            left = size
            while left:
                n = min(left, CHUNK)
                s.sendall(buf[:n])
                left -= n
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # until the stack closes
        finally:
            s.close()

    thread = asyncio.create_task(asyncio.to_thread(client))
    end, received = await asyncio.wait_for(done, 600)
    await thread
    assert received == size, (received, size)
    server.close()
    return end - started[0]


async def stack_to_kernel(stack: Stack, ns: str, size: int) -> float:
    """Seconds to move ``size`` bytes from a stack connection to a kernel socket."""
    lsock = ns_socket(ns)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((KERNEL, PORT))
    lsock.listen(1)
    received: list[int] = []
    finished: list[float] = []

    def server() -> None:
        conn, _ = lsock.accept()
        n = 0
        with conn:
            while data := conn.recv(1 << 20):
                n += len(data)
        finished.append(time.perf_counter())
        received.append(n)

    thread = asyncio.create_task(asyncio.to_thread(server))
    try:
        _reader, writer = await stack.open_connection(KERNEL, PORT)
        buf = os.urandom(CHUNK)
        start = time.perf_counter()
        left = size
        while left:
            n = min(left, CHUNK)
            writer.write(buf[:n])
            await writer.drain()
            left -= n
        writer.write_eof()
        await asyncio.wait_for(thread, 600)
        writer.close()
    finally:
        lsock.close()
    assert received == [size], (received, size)
    return finished[0] - start


async def measure(ns: str, offload: bool, mtu: int, size: int) -> tuple[float, float]:
    dev = link.Tun.create("ansb0", peer_address=f"{KERNEL}/24", netns=ns, mtu=mtu,
                          offload=offload)
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK}/24"])
        k2s = await kernel_to_stack(stack, ns, size)
        await asyncio.sleep(0.1)
        s2k = await stack_to_kernel(stack, ns, size)
    await asyncio.sleep(0.1)
    return k2s, s2k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50.0)
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and /dev/net/tun)")
    size = int(args.size_mb * 1_000_000)
    print(f"python {sys.version.split()[0]}, kernel {os.uname().release}, MTU {args.mtu}, "
          f"{size / 1e6:g} MB per transfer")
    with netns(f"ans-bench-{os.getpid()}") as ns:
        for offload in (False, True):
            for _ in range(args.repeat):
                k2s, s2k = asyncio.run(measure(ns, offload, args.mtu, size))
                label = "offload on " if offload else "offload off"
                print(f"TUN {label}: kernel->stack {size / k2s / 1e6:7.1f} MB/s ({k2s:.2f} s)"
                      f"   stack->kernel {size / s2k / 1e6:7.1f} MB/s ({s2k:.2f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
