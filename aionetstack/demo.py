"""The embedded demo: two stacks in one process joined by an in-memory Ethernet link.

Phases (each with a progress bar, then one summary table):

1. ping — ICMP and ICMPv6 echo between the stacks (ARP and NDP resolve the peer first);
2. tcp echo — request/response round trips over one TCP connection (IPv6), each checked;
3. bulk, clean link — one TCP connection carries ``size`` bytes; the receiver's SHA-256 of what
   arrived is compared with the sender's;
4. bulk, impaired link — the same over a fresh pipe with loss, reordering, corruption and delay
   (``IMPAIRED``); a quarter of ``size``, as a lossy 10 ms path runs at about 1 MB/s.

The table shows per phase: throughput, TCP segments sent (both directions), retransmissions, the
sender's smoothed RTT (``transport.get_extra_info("tcp_info")["srtt"]``) and the integrity check.
The exit code is 1 if any check failed (a digest mismatch, a wrong echo, no ping reply, a
timeout).  ``pcap_path`` records the clean link (phases 1-3).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aionetstack import Stack, link

log = logging.getLogger("aionetstack.demo")

A4, B4, A6, B6 = "198.18.0.1", "198.18.0.2", "fd00::1", "fd00::2"
ECHO_PORT, BULK_PORT = 7, 5001
IMPAIRED: dict[str, float] = {"loss": 0.01, "reorder": 0.02, "corrupt": 0.001, "delay": 0.005}
IMPAIRED_LABEL = "1% loss, 2% reorder, 0.1% corrupt, 5 ms one-way delay"
DEFAULT_SIZE = 16_000_000
QUICK_SIZE = 2_000_000
_CHUNK = 1 << 18  # the sender writes (and hashes) the pseudo-random data in pieces this big
PHASE_TIMEOUT = 120.0  # a phase that takes longer has failed (a stalled connection) ...
MIN_RATE = 100_000  # ... unless its bulk transfer is so big that it needs longer at this B/s


@dataclasses.dataclass
class Row:
    phase: str
    data: str
    seconds: float = 0.0
    nbytes: int = 0  # payload bytes moved (both directions for echo); 0: no throughput figure
    segments: int | None = None
    retransmits: int | None = None
    rtt: float | None = None  # seconds
    ok: bool = False
    check: str = "FAILED"
    problem: str = ""  # why the check failed, printed under the table

    @property
    def throughput(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.nbytes and self.seconds else 0.0


@dataclasses.dataclass
class Options:
    size: int = DEFAULT_SIZE
    echoes: int = 200
    echo_size: int = 1000
    pings: int = 5
    seed: int = 1
    pcap_path: str | None = None

    @property
    def impaired_size(self) -> int:
        return max(self.size // 4, 1)


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _tcp_counts(*stacks: Stack) -> tuple[int, int]:
    """(segments sent, segments retransmitted) summed over ``stacks``."""
    segs = retr = 0
    for s in stacks:
        tcp = s.stats()["tcp"]
        segs += tcp.get("sent", 0)
        retr += tcp.get("retransmitted", 0)
    return segs, retr


def _srtt(writer: asyncio.StreamWriter) -> float | None:
    """The connection's smoothed RTT, from its TCP_INFO-style snapshot."""
    info: dict[str, Any] | None = writer.get_extra_info("tcp_info")
    srtt: float | None = info.get("srtt") if info else None
    return srtt


# -- phases -----------------------------------------------------------------------------------

async def _ping(a: Stack, opts: Options, progress: Progress) -> Row:
    row = Row("ping", f"{2 * opts.pings}x56 B")
    task = progress.add_task("ping", total=2 * opts.pings, detail="")
    rtts: list[float] = []
    t0 = time.perf_counter()
    for addr in (B4, B6):
        for _ in range(opts.pings):
            try:
                rtts.append(await a.ping(addr, timeout=2.0))
            except TimeoutError:
                pass
            progress.advance(task)
    row.seconds = time.perf_counter() - t0
    if rtts:
        row.rtt = sum(rtts) / len(rtts)
    row.ok = len(rtts) == 2 * opts.pings
    row.check = f"{'OK' if row.ok else 'FAILED'} {len(rtts)}/{2 * opts.pings}"
    if not row.ok:
        row.problem = f"{2 * opts.pings - len(rtts)} echo requests got no reply"
    return row


# The servers are plain protocols, not stream handlers: a handler task cancelled by Ctrl-C makes
# Python 3.11's StreamReaderProtocol print a traceback.
class _Server(asyncio.Protocol):
    name = "server"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.received = 0
        log.info("%s: connection from %s", self.name, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("%s: connection from %s closed after %d bytes%s", self.name, self.peer,
                 self.received, f" ({exc})" if exc else "")


class _Echo(_Server):
    name = "echo"

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.t.write(data)




async def _tcp_echo(a: Stack, b: Stack, opts: Options, progress: Progress) -> Row:
    row = Row("tcp echo", f"{opts.echoes}x{_fmt_bytes(opts.echo_size)}")
    task = progress.add_task("tcp echo", total=opts.echoes, detail="")
    server = await b.create_server(_Echo, B6, ECHO_PORT)
    rng = random.Random(opts.seed)
    before = _tcp_counts(a, b)
    t0 = time.perf_counter()
    reader, writer = await a.open_connection(B6, ECHO_PORT)
    good = 0
    for _ in range(opts.echoes):
        msg = rng.randbytes(opts.echo_size)
        writer.write(msg)
        if await reader.readexactly(len(msg)) == msg:
            good += 1
        progress.advance(task)
    row.seconds = time.perf_counter() - t0
    row.rtt = _srtt(writer)
    writer.close()
    await writer.wait_closed()
    server.close()
    after = _tcp_counts(a, b)
    row.nbytes = 2 * opts.echoes * opts.echo_size
    row.segments, row.retransmits = after[0] - before[0], after[1] - before[1]
    row.ok = good == opts.echoes
    row.check = f"{'OK' if row.ok else 'FAILED'} {good}/{opts.echoes}"
    if not row.ok:
        row.problem = f"{opts.echoes - good} echoes came back different"
    return row


class _Sink(_Server):
    """The bulk receiver: hashes everything that arrives, then answers with length + digest."""

    name = "bulk"

    def __init__(self, on_data: Callable[[int], None]) -> None:
        self.on_data = on_data
        self.hash = hashlib.sha256()

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.received += len(data)
        self.on_data(len(data))

    def eof_received(self) -> bool:
        self.t.write(self.received.to_bytes(8, "big") + self.hash.digest())
        return False  # close once the reply is out


async def _bulk(a: Stack, b: Stack, phase: str, nbytes: int, opts: Options,
                progress: Progress) -> Row:
    row = Row(phase, _fmt_bytes(nbytes))
    task = progress.add_task(phase, total=nbytes, detail="")
    received = 0

    def on_data(n: int) -> None:
        nonlocal received
        received += n
        rate = received / max(time.perf_counter() - t0, 1e-6) / 1e6
        progress.update(task, completed=received, detail=f"{rate:6.1f} MB/s")

    rng = random.Random(opts.seed)
    sent = hashlib.sha256()
    server = await b.create_server(lambda: _Sink(on_data), B4, BULK_PORT)
    before = _tcp_counts(a, b)
    t0 = time.perf_counter()
    reader, writer = await a.open_connection(B4, BULK_PORT)
    for off in range(0, nbytes, _CHUNK):
        chunk = rng.randbytes(min(_CHUNK, nbytes - off))
        sent.update(chunk)
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    digest = sent.digest()
    reply = await reader.read()
    row.seconds = time.perf_counter() - t0
    row.rtt = _srtt(writer)
    writer.close()
    server.close()
    after = _tcp_counts(a, b)
    row.nbytes = nbytes
    row.segments, row.retransmits = after[0] - before[0], after[1] - before[1]
    got = int.from_bytes(reply[:8], "big") if len(reply) == 40 else -1
    row.ok = got == nbytes and reply[8:] == digest
    row.check = "OK sha256" if row.ok else "FAILED sha256"
    if got != nbytes:
        row.problem = f"{got} of {nbytes} bytes arrived"
    elif not row.ok:
        row.problem = "the receiver's SHA-256 differs from the sender's"
    return row


async def _phase(coro: Any, fallback: Row, nbytes: int = 0) -> Row:
    """Run one phase; a phase that raises or stalls becomes a failed row."""
    timeout = max(PHASE_TIMEOUT, nbytes / MIN_RATE)
    try:
        result: Row = await asyncio.wait_for(coro, timeout)
        return result
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        if isinstance(exc, TimeoutError):
            fallback.check = "FAILED timeout"
            fallback.problem = f"not finished after {timeout:.0f} s"
        else:
            fallback.check = "FAILED error"
            fallback.problem = f"{type(exc).__name__}: {exc}"
        return fallback


def _stack_pair(seed: int, *, pcap_path: str | None = None,
                impair: dict[str, float] | None = None) -> tuple[Stack, Stack]:
    a_end, b_end = link.pipe(l2=True, seed=seed, **(impair or {}))  # type: ignore[arg-type]
    a_link: link.Link = link.pcap(a_end, pcap_path) if pcap_path else a_end
    a, b = Stack(seed=seed), Stack(seed=seed + 1)
    a.add_nic(a_link, [f"{A4}/24", f"{A6}/64"])
    b_nic = b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
    if pcap_path:
        # the capture records both directions: B must fill in its checksums too (the pcap
        # wrapper turns off checksum offload only for the end it wraps)
        b_nic.tx_offload = False
    return a, b


async def run_phases(opts: Options, progress: Progress) -> list[Row]:
    rows: list[Row] = []
    a, b = _stack_pair(opts.seed, pcap_path=opts.pcap_path)
    async with a, b:
        rows.append(await _phase(_ping(a, opts, progress), Row("ping", "-")))
        rows.append(await _phase(_tcp_echo(a, b, opts, progress), Row("tcp echo", "-")))
        rows.append(await _phase(_bulk(a, b, "bulk clean", opts.size, opts, progress),
                                 Row("bulk clean", _fmt_bytes(opts.size)), opts.size))
    a, b = _stack_pair(opts.seed, impair=IMPAIRED)
    async with a, b:
        rows.append(await _phase(
            _bulk(a, b, "bulk impaired", opts.impaired_size, opts, progress),
            Row("bulk impaired", _fmt_bytes(opts.impaired_size)), opts.impaired_size))
    return rows


def render_table(rows: list[Row]) -> Table:
    table = Table(title="two stacks over an in-memory Ethernet link", box=box.MINIMAL,
                  caption_justify="left", pad_edge=False,
                  caption=f"impaired: {IMPAIRED_LABEL}.  ping: IPv4 + IPv6, RTT = average; "
                          f"echo: TCP over IPv6; bulk: TCP over IPv4.  RTT of TCP = the "
                          f"sender's srtt (tcp_info); TCP segs = segments sent both ways.")
    for name in ("phase", "data", "time\ns", "MB/s", "TCP\nsegs", "re-\ntrans", "RTT\nms",
                 "integrity"):
        table.add_column(name, justify="left" if name in ("phase", "data", "integrity")
                         else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.phase, r.data, f"{r.seconds:.2f}",
            f"{r.throughput:.2f}" if r.nbytes else "-",
            "-" if r.segments is None else str(r.segments),
            "-" if r.retransmits is None else str(r.retransmits),
            "-" if r.rtt is None else f"{r.rtt * 1e3:.2f}",
            f"[green]{r.check}[/]" if r.ok else f"[bold red]{r.check}[/]")
    return table


async def run_demo(opts: Options | None = None, console: Console | None = None,
                   verbose: bool = False) -> int:
    opts = opts or Options()
    console = console or Console()
    if verbose:  # log lines printed above the progress bars, not through them
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_level=False)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        return await _run_demo(opts, console)
    finally:
        if verbose:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)


async def _run_demo(opts: Options, console: Console) -> int:
    console.print(f"[bold]aionetstack demo[/]: two userspace stacks in this process, joined by "
                  f"an in-memory Ethernet link ({A4}/24, {A6}/64 ↔ {B4}, {B6})")
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description:<13}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                  console=console) as progress:
        rows = await run_phases(opts, progress)
    console.print(render_table(rows))
    failed = [r for r in rows if not r.ok]
    for r in failed:
        console.print(f"[bold red]{r.phase} failed[/]: {r.problem or r.check}")
    console.print(f"finished in {time.perf_counter() - t0:.1f} s")
    if opts.pcap_path:
        console.print(f"capture of the clean link written to {opts.pcap_path}")
    if failed:
        console.print(f"[bold red]{len(failed)} integrity check(s) failed[/]")
        return 1
    console.print("all integrity checks passed")
    return 0
