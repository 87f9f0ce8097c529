"""Goodput simulation table kept as a snapshot (in the manner of smoltcp's ``netsim``).

A 2 MB one-way transfer between two stacks over a ``link.pipe`` limited to 10 MB/s, for every
combination of loss {0, 1, 5, 10%} x buffer size (``rcvbuf`` = ``sndbuf``) {64 KiB, 256 KiB,
1 MiB} x RTT {10 ms, 100 ms}, seeded, on virtual time, with the stack's default congestion
control.  Goodput is application bytes per virtual second from the end of the handshake to EOF
at the receiver.  The table (goodput, retransmissions, retransmission timeouts per cell) is
compared exactly against ``netsim_snapshot.json``: a change in recovery, congestion control or
window handling shows as a diff of the table.  When a change is intended, rewrite the snapshot::

    UPDATE_NETSIM=1 .venv/bin/python -m pytest tests/tcp/test_tcp_netsim.py

and review the diff.  Independently of the snapshot, the figures must make physical sense (the
relations are checked before a snapshot is written, so it cannot encode nonsense): goodput never
exceeds the link rate nor buffer/RTT; it falls as loss rises and as RTT rises; without loss it
grows with the buffer while the buffer is below the bandwidth-delay product and stays flat above
it; a loss-free transfer retransmits nothing.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_tcp_loss_matrix import check_payload, run_transfer

from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import install_tcp

SNAPSHOT = Path(__file__).with_name("netsim_snapshot.json")
LOSSES = (0.0, 0.01, 0.05, 0.10)
BUFFERS = (64 << 10, 256 << 10, 1 << 20)
RTTS = (0.010, 0.100)
RATE = 10_000_000  # bytes/second
SIZE = 2_000_000
SEED = 1

Key = tuple[float, int, float]  # (loss, buffer, rtt)


def _default_cc() -> str:
    return install_tcp(VirtualNetwork().stack()).congestion_control


def simulate() -> dict[str, Any]:
    rows = []
    for rtt in RTTS:
        for buf in BUFFERS:
            for loss in LOSSES:
                t = run_transfer(seed=SEED, size=SIZE, buffers=buf, isn=(None, None),
                                 loss=loss, delay=rtt / 2, rate=RATE, timeout=600.0)
                check_payload(t)
                st = t.stacks[0].stats()["tcp"]
                rows.append({
                    "loss": loss, "buffer": buf, "rtt_ms": round(rtt * 1000),
                    "goodput": round(t.goodput()),
                    "retransmits": t.retransmits()[0],
                    "timeouts": st.get("timeouts", 0),
                })
    return {
        "transfer_bytes": SIZE, "rate": RATE, "seed": SEED, "congestion_control": _default_cc(),
        "rows": rows,
    }


def render(snap: dict[str, Any]) -> list[str]:
    """The table as text lines (what a failure diffs)."""
    lines = [f"transfer {snap['transfer_bytes']} B, rate {snap['rate']} B/s, seed {snap['seed']},"
             f" cc {snap['congestion_control']}",
             f"{'loss':>5} {'rtt':>6} {'buffer':>8} {'goodput B/s':>12} {'rexmit':>7} {'rto':>5}"]
    for r in snap["rows"]:
        lines.append(f"{r['loss']:>5.0%} {r['rtt_ms']:>4}ms {r['buffer'] >> 10:>6}Ki "
                     f"{r['goodput']:>12} {r['retransmits']:>7} {r['timeouts']:>5}")
    return lines


def dump(snap: dict[str, Any]) -> str:
    """JSON with one row per line, so a snapshot update reads as a diff of table rows."""
    head = {k: v for k, v in snap.items() if k != "rows"}
    body = ",\n".join("  " + json.dumps(r, sort_keys=True) for r in snap["rows"])
    return json.dumps(head, sort_keys=True)[:-1] + ', "rows": [\n' + body + "\n]}\n"


def check_relations(snap: dict[str, Any]) -> None:
    g: dict[Key, int] = {(r["loss"], r["buffer"], r["rtt_ms"] / 1000): r["goodput"]
                         for r in snap["rows"]}
    rows = {(r["loss"], r["buffer"], r["rtt_ms"] / 1000): r for r in snap["rows"]}
    table = "\n".join(render(snap))
    for (loss, buf, rtt), v in g.items():
        # physics: no faster than the link, nor than one window per round trip
        assert 0 < v <= min(RATE, buf / rtt) * 1.01, ((loss, buf, rtt), table)
        if loss == 0:
            assert rows[(loss, buf, rtt)]["retransmits"] == 0, table
    for buf in BUFFERS:
        for rtt in RTTS:
            # goodput falls as loss rises (strictly from one level to the next)
            series = [g[(lo, buf, rtt)] for lo in LOSSES]
            assert all(x > y for x, y in itertools.pairwise(series)), (
                f"goodput must fall with loss at buffer {buf}, rtt {rtt}: {series}\n{table}")
            # a lossy path is loss-limited: ten times the loss costs at least half the goodput
            assert series[3] < 0.5 * series[1], table
        for loss in LOSSES:
            # goodput falls as the RTT rises
            assert g[(loss, buf, RTTS[0])] > g[(loss, buf, RTTS[1])], ((loss, buf), table)
    for rtt in RTTS:
        bdp = RATE * rtt
        series = [g[(0.0, b, rtt)] for b in BUFFERS]
        for (b1, x), (b2, y) in itertools.pairwise(zip(BUFFERS, series, strict=True)):
            if b1 < bdp:  # window-limited: a bigger buffer is faster
                assert y > 1.1 * x, (f"no gain from buffer {b1} -> {b2} at rtt {rtt}", table)
            else:  # beyond the BDP it can no longer help (nor hurt)
                assert abs(y - x) <= 0.02 * x, (f"buffer {b1} -> {b2} at rtt {rtt}", table)
        # below the BDP the transfer runs close to one window per round trip
        assert series[0] >= 0.6 * BUFFERS[0] / rtt, table
    for loss in LOSSES[1:]:
        for rtt in RTTS:
            # with loss, recovery (not the window) limits goodput: the buffer hardly matters
            vals = [g[(loss, b, rtt)] for b in BUFFERS]
            assert max(vals) <= 1.6 * min(vals), ((loss, rtt), vals, table)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return simulate()


def test_netsim_figures_are_sensible(snapshot: dict[str, Any]) -> None:
    print("\n" + "\n".join(render(snapshot)))
    check_relations(snapshot)


def test_netsim_matches_snapshot(snapshot: dict[str, Any]) -> None:
    check_relations(snapshot)
    if os.environ.get("UPDATE_NETSIM") == "1":
        SNAPSHOT.write_text(dump(snapshot))
        print(f"\nwrote {SNAPSHOT}:\n" + "\n".join(render(snapshot)))
        return
    assert SNAPSHOT.exists(), f"no snapshot yet: run with UPDATE_NETSIM=1 to create {SNAPSHOT}"
    expected = json.loads(SNAPSHOT.read_text())
    if expected != snapshot:
        diff = "\n".join(difflib.unified_diff(render(expected), render(snapshot),
                                              "netsim_snapshot.json", "this run", lineterm=""))
        pytest.fail("netsim goodput table changed (UPDATE_NETSIM=1 rewrites the snapshot if "
                    "intended):\n" + diff, pytrace=False)


def test_snapshot_file_round_trips(snapshot: dict[str, Any]) -> None:
    assert json.loads(dump(snapshot)) == snapshot
    assert render(json.loads(dump(snapshot))) == render(snapshot)
