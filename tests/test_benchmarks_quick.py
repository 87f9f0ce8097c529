"""Smoke test of the benchmark harness: a quick run of two fast in-memory cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aionetstack

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"case", "figure", "unit", "kernel_baseline", "ratio", "params", "runs", "median"}


def _quick(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """A quick run of ``python -m benchmarks`` with ``args``; its process and its JSON."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args, "--json", str(out), "--no-plot"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_quick_run_writes_results(tmp_path: Path) -> None:
    proc, rows = _quick(tmp_path, "--only", "rtt_mem", "connrate_mem")
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
    core = "compiled core (mypyc)" if aionetstack.compiled else "pure Python"
    assert {r["meta"]["core"] for r in rows} == {core} and core in proc.stdout


def test_pure_runs_the_workers_on_the_pure_core(tmp_path: Path) -> None:
    _, rows = _quick(tmp_path, "--pure", "--only", "rtt_mem")
    assert {r["meta"]["core"] for r in rows} == {"pure Python"}
    assert all(r["median"] > 0 for r in rows)


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


def _cc_of(sock: object) -> str:
    import socket

    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)  # type: ignore[attr-defined]
    return bytes(raw).rstrip(b"\0").decode()


def test_kernel_loopback_baseline_runs_the_stacks_congestion_control() -> None:
    """The kernel baselines compare the same algorithm as the stack's default (CUBIC), not the
    machine's default (BBR on these VMs, which ignores random loss)."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks._kpeer import KERNEL_CC
        from benchmarks.workloads import KernelLoopback
    finally:
        sys.path.remove(str(ROOT))
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    async def main() -> tuple[str, str]:
        net = KernelLoopback()
        server_cc: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            server_cc.set_result(_cc_of(w.get_extra_info("socket")))
            w.close()

        host, port = await net.serve(handler)
        _, w = await net.connect(host, port)
        client = _cc_of(w.get_extra_info("socket"))
        server = await server_cc
        w.close()
        await net.close()
        return client, server

    assert asyncio.run(main()) == (KERNEL_CC, KERNEL_CC)
    assert install_tcp(VirtualNetwork(seed=1).stack()).congestion_control == KERNEL_CC


def test_kernel_peer_rejects_an_unknown_congestion_control_clearly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._kpeer", "sink", "127.0.0.1", "0", "--cc", "nosuchcc"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0
    assert "congestion control 'nosuchcc' not available" in proc.stderr


def test_the_floor_rows_packets_pass_scapys_checks() -> None:
    """The floor rows script their own packets (``inet_checksum``, not the stack's code):
    scapy, recomputing every checksum, agrees with them."""
    from scapy.layers.inet import ICMP, IP, TCP

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.icmp_path import echo_request
        from benchmarks.tun_cases import _segment
    finally:
        sys.path.remove(str(ROOT))
    src, dst = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
    for payload in (b"", b"e", b"odd!!"):
        raw = _segment(src, dst, 20001, 7007, 1000, 5000, 0x18, payload)
        pkt = IP(raw)
        again = IP(raw)
        del again.chksum, again[TCP].chksum
        rebuilt = IP(bytes(again))  # scapy fills in its own checksums
        assert pkt.chksum == rebuilt.chksum and pkt[TCP].chksum == rebuilt[TCP].chksum
        assert (pkt.src, pkt.dst, pkt[TCP].sport, pkt[TCP].dport) == (
            "198.18.0.2", "198.18.0.1", 20001, 7007)
        assert (pkt[TCP].seq, pkt[TCP].ack, pkt[TCP].flags) == (1000, 5000, "PA")
        assert bytes(pkt[TCP].payload) == payload
    ping = IP(echo_request("198.18.0.1", "198.18.0.2"))
    again = IP(bytes(ping))
    del again.chksum, again[ICMP].chksum
    rebuilt = IP(bytes(again))
    assert ping[ICMP].type == 8 and ping[ICMP].chksum == rebuilt[ICMP].chksum
    assert ping.chksum == rebuilt.chksum


def test_the_icmp_path_tool_answers_every_request() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.icmp_path", "--hot", "200", "--cold", "3",
         "--evict", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["hot_p50_us"] > 0 and out["cold_p50_us"] > 0
