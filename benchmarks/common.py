"""Shared pieces of the benchmark harness: result rows, statistics, isolated measurements.

Every *measurement* is a function registered with ``@measure("name")`` that takes a dict of
parameters and returns a dict of numbers.  The runner never calls it in its own process: it runs
``python -m benchmarks --worker NAME --params JSON`` in a fresh interpreter
(``run_measure``), so heap and RSS figures, file descriptors, namespaces and crashes of one
measurement never leak into the next.  A *case* (``@case("name")``) calls measurements, stack and
kernel alternately, and turns the numbers into result rows.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "@@BENCH-RESULT@@ "

Params = dict[str, Any]
Numbers = dict[str, Any]
MeasureFn = Callable[[Params], Numbers] | Callable[[Params], Awaitable[Numbers]]

MEASURES: dict[str, MeasureFn] = {}


class Skip(Exception):
    """Raised by a case (or a measurement) that cannot run here; the message says why."""


class MeasureFailed(RuntimeError):
    """A measurement subprocess crashed or timed out."""


def measure(name: str) -> Callable[[MeasureFn], MeasureFn]:
    def deco(fn: MeasureFn) -> MeasureFn:
        MEASURES[name] = fn
        return fn

    return deco


def run_in_worker(name: str, params: Params) -> Numbers:
    """Worker side: run one measurement in this process and return its numbers."""
    fn = MEASURES[name]
    out = fn(params)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    assert isinstance(out, dict)
    return out


async def _await(aw: Awaitable[Numbers]) -> Numbers:
    return await aw


# glibc malloc settings for every worker, the stack's and the kernel's alike, with
# ``--tuned-malloc`` (``WORKER_ENV``).  With glibc's defaults, asyncio's ``recv(256 KiB)`` per
# read is served by mmap (and a 64-256 KiB buffer freed per read by a heap top that is trimmed
# and regrown), page faults each time, and the sliding mmap threshold makes that happen in some
# runs and not others: kernel loopback bulk measured 840-1,410 MB/s in three back-to-back runs,
# the stack 370-520.  Fixed thresholds make every run take the fast path (kernel 1,330-1,640,
# stack 610-720); the default run keeps glibc's defaults, which is what applications get.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "33554432",
              "MALLOC_TOP_PAD_": "16777216"}
WORKER_ENV: dict[str, str] = {}


def run_measure(name: str, timeout: float = 300.0, **params: Any) -> Numbers:
    """Run measurement ``name`` in a fresh interpreter (with ``WORKER_ENV``); raise ``Skip``
    or ``MeasureFailed``."""
    cmd = [sys.executable, "-m", "benchmarks", "--worker", name, "--params", json.dumps(params)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, **WORKER_ENV})
    except subprocess.TimeoutExpired:
        raise MeasureFailed(f"{name}{params} timed out after {timeout:.0f} s") from None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            out: Numbers = json.loads(line[len(RESULT_MARK):])
            if "skip" in out:
                raise Skip(str(out["skip"]))
            if proc.returncode == 0:
                return out
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise MeasureFailed(f"{name}{params} failed (exit {proc.returncode}):\n{tail}")


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: for the packets the benchmarks script
    themselves (the floor rows), independent of the stack's own checksum code."""
    if len(data) & 1:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# -- result rows ---------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    figure: str
    unit: str
    better: str  # "higher" or "lower"
    params: Params = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)
    kernel_runs: list[float] = field(default_factory=list)
    kernel_label: str = ""
    pytcp_runs: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return _median(self.runs)

    @property
    def kernel_baseline(self) -> float | None:
        return _median(self.kernel_runs)

    @property
    def ratio(self) -> float | None:
        m, k = self.median, self.kernel_baseline
        if m is None or k is None or k == 0:
            return None
        return m / k

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = self.median
        d["kernel_baseline"] = self.kernel_baseline
        d["ratio"] = self.ratio
        d["pytcp"] = _median(self.pytcp_runs)
        return d


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else None


def percentile(xs: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank."""
    s = sorted(xs)
    if not s:
        return math.nan
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


# -- process helpers -----------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def raise_nofile(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (up to the hard limit, which root raises
    first, up to the kernel's ``fs.nr_open``); return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and want > hard and is_root():
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, want))  # CAP_SYS_RESOURCE
            hard = want
        except (ValueError, OSError):
            pass
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def pytcp_available() -> bool:
    """Whether PyTCP (``pmd-pytcp``, import name ``pmd_pytcp``) is installed: the TUN cases
    then run it too, as a column of their own (``benchmarks.pytcp_cases``)."""
    import importlib.util

    return importlib.util.find_spec("pmd_pytcp") is not None


# -- cases ---------------------------------------------------------------------------------------
@dataclass
class Ctx:
    quick: bool
    runs: int

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


CaseFn = Callable[[Ctx], list[Row]]
CASES: dict[str, CaseFn] = {}
CASE_DOCS: dict[str, str] = {}


def case(name: str) -> Callable[[CaseFn], CaseFn]:
    def deco(fn: CaseFn) -> CaseFn:
        CASES[name] = fn
        CASE_DOCS[name] = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        return fn

    return deco
