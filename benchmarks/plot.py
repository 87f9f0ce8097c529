"""PNG plots next to the JSON: throughput vs number of flows, goodput vs loss.

``python -m benchmarks.plot [PATH.json]`` redraws them from a results file.  Needs matplotlib
(``pip install -e '.[bench]'``); without it the plots are skipped with a message.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Doc = list[dict[str, Any]]


def write_plots(doc: Doc, where: Path) -> list[str]:
    """Write the PNGs the results allow; return human-readable lines about what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install -e '.[bench]')"]
    out: list[str] = []
    flows = sorted((r for r in doc if r["case"] == "flows_mem" and r.get("median") is not None),
                   key=lambda r: r["params"]["flows"])
    if flows:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["params"]["flows"] for r in flows]
        ax.plot(xs, [r["median"] for r in flows], "o-", label="aionetstack (pipe)")
        if all(r.get("kernel_baseline") is not None for r in flows):
            ax.plot(xs, [r["kernel_baseline"] for r in flows], "s--",
                    label="kernel asyncio loopback")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent flows")
        ax.set_ylabel("aggregate throughput (MB/s)")
        ax.set_title("Throughput vs number of flows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = where / "throughput_vs_flows.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(f"wrote {path}")
    good = [r for r in doc if r["case"] == "goodput_loss" and r.get("median") is not None]
    if good:
        by_buf: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in good:
            by_buf[r["params"]["buf"]].append(r)
        fig, ax = plt.subplots(figsize=(6, 4))
        for buf, rs in sorted(by_buf.items()):
            rs.sort(key=lambda r: r["params"]["loss"])
            xs = [r["params"]["loss"] * 100 for r in rs]
            ax.plot(xs, [r["median"] for r in rs], "o-", label=f"aionetstack, {buf // 1024} KiB")
            if all(r.get("kernel_baseline") is not None for r in rs):
                ax.plot(xs, [r["kernel_baseline"] for r in rs], "s--",
                        label=f"kernel, {buf // 1024} KiB")
        ax.set_yscale("log")
        ax.set_xlabel("loss (%), 20 ms RTT")
        ax.set_ylabel("goodput (MB/s)")
        ax.set_title("Goodput vs loss and buffer size")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = where / "goodput_vs_loss.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(f"wrote {path}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "results" / "latest.json"
    doc: Doc = json.loads(path.read_text())
    for line in write_plots(doc, path.parent):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
