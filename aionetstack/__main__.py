"""The ``aionetstack`` command.  ``python -m aionetstack demo`` runs the embedded demo (no root)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from aionetstack.demo import DEFAULT_SIZE, QUICK_SIZE


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aionetstack",
        description="A userspace TCP/IP stack for Python, native to asyncio.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  aionetstack demo                     # no root needed\n"
               "  sudo aionetstack serve --tun ans0 --create --peer-address 198.18.0.1/24 \\\n"
               "       --address 198.18.0.2/24 --echo 7 --http 80 -v\n"
               "  sudo aionetstack ping --tun ans1 --create --peer-address 198.18.1.1/24 \\\n"
               "       --address 198.18.1.2/24 --pcap ping.pcap 198.18.1.1\n"
               "\n"
               "exit status: 0 ok, 1 error or failed check, 2 bad usage, 130 interrupted.\n"
               "Ctrl-C stops serve (status 0) and ping (summary, status 0 if replies came).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser(
        "demo", help="two in-memory stacks: ping, TCP echo, bulk transfers over a clean and an "
                     "impaired link, summary table (no root needed)",
        description="Two userspace stacks in this process, joined by an in-memory Ethernet "
                    "link: ping, TCP echo round trips, a SHA-256-checked TCP bulk transfer over "
                    "the clean link and a quarter of it over a link with loss, reordering, "
                    "corruption and delay.  Prints throughput, segments, retransmits and RTT "
                    "per phase; exits 1 if any integrity check fails.")
    d.add_argument("--size", type=_size, metavar="BYTES",
                   help=f"bulk transfer size over the clean link, e.g. 16M, 500k "
                        f"(default {DEFAULT_SIZE // 1_000_000}M; the impaired link carries a "
                        f"quarter)")
    d.add_argument("--quick", action="store_true",
                   help=f"a short run ({QUICK_SIZE // 1_000_000}M bulk, fewer echoes)")
    d.add_argument("--seed", type=int, default=1, help="seed for the link impairments and data")
    d.add_argument("--pcap", metavar="FILE", help="write a capture of the clean link")
    d.add_argument("-v", "--verbose", action="store_true", help="log connections")

    s = sub.add_parser("serve", help="serve echo/discard/chargen/HTTP from a stack on a "
                                     "TUN or TAP device",
                       description="Run a stack on a TUN or TAP device and serve echo, "
                                   "discard, chargen (TCP and UDP) and/or an HTTP status page "
                                   "until Ctrl-C.")
    _device_args(s)
    s.add_argument("--echo", type=int, metavar="PORT", help="RFC 862 echo (TCP and UDP)")
    s.add_argument("--discard", type=int, metavar="PORT", help="RFC 863 discard (TCP and UDP)")
    s.add_argument("--chargen", type=int, metavar="PORT", help="RFC 864 chargen (TCP and UDP)")
    s.add_argument("--http", type=int, metavar="PORT", help="HTTP/1.1 status page (h11)")

    px = sub.add_parser("proxy", help="transparent proxy: relay every TCP/UDP flow arriving on "
                                      "a TUN device to its destination (or via SOCKS5)")
    from aionetstack.proxy import add_proxy_arguments

    add_proxy_arguments(px)

    pg = sub.add_parser("ping", help="ping an address from a stack on a TUN or TAP device",
                        description="Send ICMP/ICMPv6 echo requests from a stack on a TUN or "
                                    "TAP device; Ctrl-C stops early and prints the summary.")
    _device_args(pg)
    pg.add_argument("target", help="address to ping")
    pg.add_argument("-c", "--count", type=int, default=4, help="requests to send (default 4)")
    pg.add_argument("-i", "--interval", type=float, default=1.0,
                    help="seconds between requests (default 1)")
    pg.add_argument("-W", "--timeout", type=float, default=2.0,
                    help="seconds to wait for each reply (default 2)")
    return p


def _size(text: str) -> int:
    """``16M``, ``500k``, ``1G`` or plain bytes (decimal units)."""
    t = text.strip().lower().removesuffix("b")
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 16M, 500k, 1000000)"
                                         ) from None
    if not 1 <= n <= 10**10:
        raise argparse.ArgumentTypeError(f"size {text!r} out of range (1 byte to 10G)")
    return int(n)


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
    p.add_argument("--netns", metavar="NAME", help="the device is in (with --create: is "
                                                    "created in) this network namespace")
    p.add_argument("--mtu", type=int, default=1500, help="IP MTU (default 1500)")
    p.add_argument("--no-offload", action="store_true", help="disable TUN/TAP offloads")
    p.add_argument("--gateway", action="append", default=[], metavar="ADDR",
                   help="default route via this gateway (repeatable: one per family)")
    p.add_argument("--pcap", metavar="FILE", help="capture the device's traffic")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log connections (to stderr)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.verbose and args.command != "demo":  # the demo logs through rich
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from aionetstack.demo import Options, run_demo

            if args.pcap:
                open(args.pcap, "wb").close()  # fail before the show starts
            opts = Options(seed=args.seed, pcap_path=args.pcap)
            if args.quick:
                opts.size, opts.echoes, opts.pings = QUICK_SIZE, 50, 2
            if args.size is not None:
                opts.size = args.size
            return asyncio.run(run_demo(opts, verbose=args.verbose))
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
        print(f"aionetstack: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not type(exc).__module__.startswith("pyroute2"):
            raise  # a bug: keep the traceback
        print(f"aionetstack: error: netlink: {error_line(exc)}", file=sys.stderr)
        return 1
    return 0


def error_line(exc: BaseException) -> str:
    """One line for an error: ``FILE: reason`` for file errors, else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc.strerror)
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
