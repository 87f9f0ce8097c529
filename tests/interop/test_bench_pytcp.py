"""The benchmarks' PyTCP column (``benchmarks/pytcp_cases.py``): PyTCP on a TUN device in a
namespace the worker makes, against the kernel, and its figures in the TUN rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_privileged

ROOT = Path(__file__).resolve().parent.parent.parent
MARK = "@@BENCH-RESULT@@ "


def _worker(params: dict[str, object]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--worker", "tun.pytcp", "--params",
         json.dumps(params)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    assert len(lines) == 1, proc.stdout[-2000:]
    out: dict[str, float] = json.loads(lines[0][len(MARK):])
    return out


def test_without_pytcp_the_measure_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import pytcp_cases
    from benchmarks.common import Skip

    monkeypatch.setattr(pytcp_cases, "pytcp_available", lambda: False)
    with pytest.raises(Skip, match="PyTCP is not installed"):
        pytcp_cases._modules()


def test_pytcp_jobs_against_the_kernel() -> None:
    require_privileged()
    pytest.importorskip("pmd_pytcp")
    ping = _worker({"job": "ping", "count": 20})
    assert 0 < ping["p50_us"] <= ping["p99_us"] < 1e6  # answered (``ping`` saw replies)
    k2s = _worker({"job": "k2s", "budget": 0.3})
    assert k2s["MBps"] > 0
    s2k = _worker({"job": "s2k", "budget": 0.3})
    assert s2k["MBps"] > 0
    rtt = _worker({"job": "rtt", "count": 20})
    assert 0 < rtt["p50_us"] <= rtt["p99_us"]


def test_pytcp_column_in_the_tun_connection_rate_row(tmp_path: Path) -> None:
    require_privileged()
    pytest.importorskip("pmd_pytcp")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "tun_connrate", "--json",
         str(out), "--no-plot"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row, floor = json.loads(out.read_text())
    assert row["figure"] == "connect+echo+close, TUN" and row["skipped"] is None
    assert len(row["pytcp_runs"]) == 1 and row["pytcp"] == row["pytcp_runs"][0] > 0
    assert row["median"] > 0 and row["kernel_baseline"] > 0
    assert "PyTCP" in proc.stdout  # the table has the column
    # the floor row (no stack) has no PyTCP column
    assert "floor" in floor["figure"] and floor["skipped"] is None and floor["median"] > 0
    assert floor["pytcp_runs"] == [] and floor["pytcp"] is None


def test_a_pytcp_failure_costs_its_column_only(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import pytcp_cases
    from benchmarks.common import MeasureFailed

    def fail(name: str, **params: object) -> dict[str, float]:
        raise MeasureFailed(f"{name} broke")

    monkeypatch.setattr(pytcp_cases, "pytcp_available", lambda: True)
    monkeypatch.setattr(pytcp_cases, "run_measure", fail)
    assert pytcp_cases.pytcp_run("k2s", budget=0.1) is None
    assert "PyTCP k2s: no figure (tun.pytcp broke)" in capsys.readouterr().err
    monkeypatch.setattr(pytcp_cases, "pytcp_available", lambda: False)
    assert pytcp_cases.pytcp_run("k2s", budget=0.1) is None  # not installed: no column
