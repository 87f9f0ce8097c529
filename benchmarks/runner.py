"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH]``."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import (  # noqa: F401  (registers the cases and measures)
    inmemory,
    pytcp_cases,
    tun_cases,
    virtual,
)
from benchmarks.common import (
    CASE_DOCS,
    CASES,
    MALLOC_ENV,
    RESULT_MARK,
    WORKER_ENV,
    Ctx,
    MeasureFailed,
    Row,
    Skip,
    pytcp_available,
    run_in_worker,
)

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="aionetstack vs the kernel, measured in one run.")
    ap.add_argument("--quick", action="store_true",
                    help="one short run per case, smaller N (CI smoke; < 2 minutes)")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="run only these cases (names or shell patterns, e.g. 'tun_*')")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per figure (default: 3 in full mode, 1 with --quick)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                    help=f"where to write the results (default: {DEFAULT_JSON})")
    ap.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    ap.add_argument("--tuned-malloc", action="store_true",
                    help="run every worker (stack and kernel) with fixed glibc malloc thresholds "
                         "(benchmarks.common.MALLOC_ENV) instead of glibc's defaults")
    ap.add_argument("--pure", action="store_true",
                    help="run the stack as pure Python even where its core is compiled "
                         "(AIONETSTACK_PURE=1 in every worker; aionetstack._accel)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _core_kind() -> str:
    """How the workers run the stack: its compiled core or pure Python."""
    proc = subprocess.run([sys.executable, "-c", "import aionetstack; print(aionetstack.compiled)"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, **WORKER_ENV})
    return ("compiled core (mypyc)" if proc.stdout.strip() == "True" else "pure Python")


def _worker(name: str, params: str) -> int:
    try:
        out = run_in_worker(name, json.loads(params))
    except Skip as exc:
        out = {"skip": str(exc)}
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    show_pytcp = any(r.pytcp_runs for r in rows)
    t = Table(title=title, show_lines=False)
    t.add_column("case", style="cyan", no_wrap=True)
    t.add_column("figure")
    t.add_column("aionetstack", justify="right", style="bold")
    t.add_column("kernel", justify="right")
    t.add_column("ratio", justify="right")
    if show_pytcp:
        t.add_column("PyTCP", justify="right")
    t.add_column("unit")
    t.add_column("runs", justify="right")
    for r in rows:
        if r.skipped is not None:
            style = "red" if r.skipped.startswith("FAILED") else "yellow"
            reason = r.skipped if len(r.skipped) < 160 else r.skipped[:157] + "..."
            t.add_row(r.case, f"[{style}]skipped: {reason}",
                      *([""] * (len(t.columns) - 2)))
            continue
        ratio = r.ratio
        rs = "-" if ratio is None else f"{ratio:.2f}x"
        cells = [r.case, r.figure, _fmt(r.median), _fmt(r.kernel_baseline), rs]
        if show_pytcp:
            cells.append(_fmt(r.to_json()["pytcp"]))
        cells += [r.unit + (" ↑" if r.better == "higher" else " ↓"), str(len(r.runs))]
        t.add_row(*cells)
    console = Console(width=max(120, Console().width))
    console.print(t)
    notes = sorted({f"{r.case}: {r.note}" for r in rows if r.note})
    for n in notes:
        console.print(f"[dim]note[/] {n}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker(args.worker, args.params)
    if args.list:
        for name, text in CASE_DOCS.items():
            print(f"{name:16} {text}")
        return 0
    names = list(CASES)
    if args.only:
        wanted = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in args.only)]
        unknown = [p for p in args.only if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unknown:
            print(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(names)}",
                  file=sys.stderr)
            return 2
        names = wanted
    ctx = Ctx(quick=args.quick, runs=args.runs or (1 if args.quick else 3))
    if args.tuned_malloc:
        WORKER_ENV.update(MALLOC_ENV)
    if args.pure:
        WORKER_ENV["AIONETSTACK_PURE"] = "1"
    core = _core_kind()
    print(f"· the stack runs {core}", file=sys.stderr)
    rows: list[Row] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"· {name} ...", file=sys.stderr, flush=True)
        try:
            got = CASES[name](ctx)
        except Skip as exc:
            print(f"  skipped {name}: {exc}", file=sys.stderr)
            rows.append(Row(name, CASE_DOCS[name], "", "higher", skipped=str(exc)))
            continue
        except (MeasureFailed, Exception) as exc:
            print(f"  FAILED {name}: {exc}", file=sys.stderr)
            if not isinstance(exc, MeasureFailed):
                traceback.print_exc()
            failed.append(name)
            rows.append(Row(name, CASE_DOCS[name], "", "higher", skipped=f"FAILED: {exc}"))
            continue
        rows.extend(got)
        print(f"  {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    mode = "quick" if args.quick else "full"
    title = (f"aionetstack benchmarks ({mode}, {ctx.runs} run(s) per figure, median; "
             f"{core}; {elapsed:.0f} s)")
    print_table(rows, title)
    doc: list[dict[str, Any]] = []
    meta = {"mode": mode, "runs": ctx.runs, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "time": time.time(),
            "elapsed_s": elapsed, "pytcp": pytcp_available(),
            "malloc_env": {k: v for k, v in WORKER_ENV.items() if k in MALLOC_ENV}
            or "glibc defaults", "core": core}
    for r in rows:
        d = r.to_json()
        d["meta"] = meta
        doc.append(d)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    if not args.no_plot:
        from benchmarks.plot import write_plots

        for line in write_plots(doc, args.json.parent):
            print(line, file=sys.stderr)
    if failed:
        print(f"{len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
