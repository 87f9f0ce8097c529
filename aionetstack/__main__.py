"""The ``aionetstack`` command.  ``python -m aionetstack demo`` runs the embedded demo (no root)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aionetstack",
        description="A userspace TCP/IP stack for Python, native to asyncio.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="two in-memory stacks: ping, UDP echo over a lossy link "
                                    "(no root needed)")
    d.add_argument("--datagrams", type=int, default=2000, help="UDP datagrams per run")
    d.add_argument("--seed", type=int, default=1, help="seed for the link impairments")
    d.add_argument("--pcap", metavar="FILE", help="also write a capture of the L2 link")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from aionetstack.demo import run_demo

            return asyncio.run(run_demo(args.datagrams, args.seed, args.pcap))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"aionetstack: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
