"""The embedded demo: two stacks in one process joined by an in-memory link."""

from __future__ import annotations

import asyncio
import hashlib
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from aionetstack import Stack, link


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.transport.sendto(data, addr)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: dict[bytes, int] = {}
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.received[data] = self.received.get(data, 0) + 1
        self.event.set()


async def _udp_run(label: str, count: int, seed: int, progress: Progress,
                   pcap_path: str | None = None, **impair: float) -> dict[str, object]:
    a_end, b_end = link.pipe(l2=True, seed=seed, **impair)  # type: ignore[arg-type]
    a_link = link.pcap(a_end, pcap_path) if pcap_path else a_end
    async with Stack(seed=seed) as a, Stack(seed=seed + 1) as b:
        a.add_nic(a_link, ["198.18.0.1/24", "fd00::1/64"])
        b.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        rtts = []
        for addr in ("198.18.0.2", "fd00::2"):
            for _ in range(3):
                try:
                    rtts.append(await a.ping(addr, timeout=1.0))
                    break
                except TimeoutError:
                    continue
        await b.create_datagram_endpoint(_Echo, local_addr=("0.0.0.0", 7))
        tr, pr = await a.create_datagram_endpoint(_Collector, remote_addr=("198.18.0.2", 7))
        assert isinstance(pr, _Collector)
        sent = {}
        task = progress.add_task(label, total=count)
        t0 = time.perf_counter()
        for i in range(count):
            payload = hashlib.sha256(i.to_bytes(4, "big")).digest() * 8
            sent[payload] = i
            tr.sendto(payload)
            if i % 50 == 49:
                await asyncio.sleep(0.002)
            progress.update(task, completed=i + 1)
        await asyncio.sleep(0.2 + 2 * impair.get("delay", 0.0))
        elapsed = time.perf_counter() - t0
        intact = sum(1 for p in pr.received if p in sent)
        foreign = sum(1 for p in pr.received if p not in sent)
        both = (a.stats(), b.stats())  # damage is caught by whichever stack receives it
        tr.close()
        return {
            "run": label,
            "ping": " / ".join(f"{r * 1e3:.2f} ms" for r in rtts),
            "sent": count,
            "echoed": intact,
            "corrupt-delivered": foreign,
            "rate": f"{count / elapsed:,.0f} dgram/s",
            "dropped-bad-checksum": sum(st[proto].get("malformed.bad-checksum", 0)
                                        for st in both
                                        for proto in ("ipv4", "ipv6", "udp", "icmpv4", "icmpv6")),
        }


async def run_demo(datagrams: int = 2000, seed: int = 1, pcap_path: str | None = None) -> int:
    console = Console()
    console.print("[bold]aionetstack demo[/]: two userspace stacks joined by an in-memory "
                  "Ethernet link (198.18.0.0/24, fd00::/64)")
    rows = []
    with Progress(console=console, transient=True) as progress:
        rows.append(await _udp_run("clean link", datagrams, seed, progress, pcap_path))
        rows.append(await _udp_run("10% loss, 5% reorder, 1% corrupt, 5 ms", datagrams, seed,
                                   progress, loss=0.1, reorder=0.05, corrupt=0.01, delay=0.005))
    table = Table(title="UDP echo between two stacks")
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    bad = sum(int(r["corrupt-delivered"]) for r in rows)  # type: ignore[call-overload]
    if bad:
        console.print(f"[red]{bad} corrupted datagrams were delivered[/]")
        return 1
    console.print("every delivered datagram was byte-identical to one that was sent")
    if pcap_path:
        console.print(f"capture written to {pcap_path}")
    return 0
