"""Smoke test of the benchmark harness: a quick run of two fast in-memory cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"case", "figure", "unit", "kernel_baseline", "ratio", "params", "runs", "median"}


def test_quick_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "rtt_mem", "connrate_mem",
         "--json", str(out), "--no-plot"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert isinstance(rows, list)
    assert {r["case"] for r in rows} == {"rtt_mem", "connrate_mem"}
    assert len(rows) == 3  # RTT p50 and p99, connection rate
    for r in rows:
        assert set(r) >= KEYS, r
        assert r["skipped"] is None
        assert len(r["runs"]) == 1 and r["median"] == r["runs"][0] > 0
        assert r["kernel_baseline"] > 0
        assert abs(r["ratio"] - r["median"] / r["kernel_baseline"]) < 1e-9
        assert isinstance(r["params"], dict)
    assert "aionetstack" in proc.stdout  # the table


def test_unknown_case_is_an_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "no_such_case"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "unknown case" in proc.stderr


def test_a_crashing_case_fails_the_run(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import runner
        from benchmarks.common import CASE_DOCS, CASES, Ctx, Row
    finally:
        sys.path.remove(str(ROOT))

    def boom(ctx: Ctx) -> list[Row]:
        raise RuntimeError("boom")

    CASES["selftest_crash"] = boom
    CASE_DOCS["selftest_crash"] = "crashes on purpose"
    try:
        out = tmp_path / "bench.json"
        rc = runner.main(["--quick", "--only", "selftest_crash", "--json", str(out),
                          "--no-plot"])
    finally:
        del CASES["selftest_crash"], CASE_DOCS["selftest_crash"]
    assert rc == 1
    rows = json.loads(out.read_text())
    assert rows[0]["skipped"].startswith("FAILED: boom")
