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

    s = sub.add_parser("serve", help="serve echo/discard/chargen/HTTP from a stack on a "
                                     "TUN or TAP device")
    _device_args(s)
    s.add_argument("--echo", type=int, metavar="PORT", help="RFC 862 echo (TCP and UDP)")
    s.add_argument("--discard", type=int, metavar="PORT", help="RFC 863 discard (TCP and UDP)")
    s.add_argument("--chargen", type=int, metavar="PORT", help="RFC 864 chargen (TCP and UDP)")
    s.add_argument("--http", type=int, metavar="PORT", help="HTTP/1.1 status page (h11)")

    px = sub.add_parser("proxy", help="transparent proxy: relay every TCP/UDP flow arriving on "
                                      "a TUN device to its destination (or via SOCKS5)")
    from aionetstack.proxy import add_proxy_arguments

    add_proxy_arguments(px)

    pg = sub.add_parser("ping", help="ping an address from a stack on a TUN or TAP device")
    _device_args(pg)
    pg.add_argument("target", help="address to ping")
    pg.add_argument("-c", "--count", type=int, default=4)
    pg.add_argument("-i", "--interval", type=float, default=1.0)
    pg.add_argument("-W", "--timeout", type=float, default=2.0)
    return p


def _device_args(p: argparse.ArgumentParser) -> None:
    dev = p.add_mutually_exclusive_group(required=True)
    dev.add_argument("--tun", metavar="NAME", help="attach to TUN device NAME")
    dev.add_argument("--tap", metavar="NAME", help="attach to TAP device NAME")
    p.add_argument("--address", action="append", required=True, metavar="ADDR/PREFIX",
                   help="an address of the stack (repeat for more, IPv4 and IPv6)")
    p.add_argument("--create", action="store_true",
                   help="create the device (needs root) instead of attaching to an existing one")
    p.add_argument("--peer-address", action="append", default=[], metavar="ADDR/PREFIX",
                   help="with --create: the kernel side's address (repeatable)")
    p.add_argument("--netns", metavar="NAME", help="with --create: create the device in "
                                                    "this network namespace")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--no-offload", action="store_true", help="disable TUN/TAP offloads")
    p.add_argument("--gateway", action="append", default=[], metavar="ADDR",
                   help="default route via this gateway (repeatable: one per family)")
    p.add_argument("--pcap", metavar="FILE", help="capture the device's traffic")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections")


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
        if args.command == "proxy":
            from aionetstack.proxy import run_proxy

            return asyncio.run(run_proxy(args))
        if args.command in ("serve", "ping"):
            from aionetstack.cli import run_device_command

            return asyncio.run(run_device_command(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"aionetstack: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
