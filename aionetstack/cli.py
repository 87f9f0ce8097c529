"""The device commands of ``aionetstack``: ``serve`` and ``ping`` on a TUN/TAP device."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from typing import Any

from aionetstack import link
from aionetstack.asyncio.stack import Stack
from aionetstack.errors import InvalidArgument


def _check_addresses(specs: list[str]) -> None:
    for spec in specs:
        try:
            ipaddress.ip_interface(spec)
        except ValueError:
            raise InvalidArgument(f"bad address {spec!r} (expected ADDR/PREFIX, e.g. "
                                  f"198.18.0.2/24 or fd00::2/64)") from None


def open_device(args: argparse.Namespace) -> link.Link:
    _check_addresses(args.address + args.peer_address)
    name = args.tun or args.tap
    kind: Any = link.Tun if args.tun else link.Tap
    if args.create or args.netns:
        if os.geteuid() != 0:
            raise PermissionError("creating a TUN/TAP device needs root (CAP_NET_ADMIN)")
        dev = kind.create(name, peer_address=args.peer_address, mtu=args.mtu,
                          netns=args.netns, offload=not args.no_offload)
    else:
        dev = kind(name, mtu=args.mtu, offload=not args.no_offload)
    if args.pcap:
        return link.pcap(dev, args.pcap)
    result: link.Link = dev
    return result


async def run_device_command(args: argparse.Namespace) -> int:
    dev = open_device(args)
    async with Stack() as stack:
        stack.add_nic(dev, args.address, mtu=args.mtu)
        for gw in args.gateway:
            stack.add_route("0.0.0.0/0" if ":" not in gw else "::/0", gateway=gw)
        if args.command == "ping":
            return await _ping(stack, args)
        return await _serve(stack, args)


async def _ping(stack: Stack, args: argparse.Namespace) -> int:
    received = 0
    for seq in range(args.count):
        try:
            rtt = await stack.ping(args.target, timeout=args.timeout)
        except TimeoutError:
            print(f"no reply from {args.target} (seq {seq})")
        except OSError as exc:
            print(f"{args.target}: {exc.strerror or exc}")
        else:
            received += 1
            print(f"reply from {args.target}: seq={seq} time={rtt * 1e3:.3f} ms", flush=True)
        if seq + 1 < args.count:
            await asyncio.sleep(args.interval)
    print(f"{args.count} sent, {received} received")
    return 0 if received else 1


async def _serve(stack: Stack, args: argparse.Namespace) -> int:
    from aionetstack.services import start_services

    if not any((args.echo, args.discard, args.chargen, args.http)):
        raise InvalidArgument("nothing to serve: give --echo, --discard, --chargen and/or --http")
    started = await start_services(stack, echo=args.echo, discard=args.discard,
                                   chargen=args.chargen, http=args.http)
    ports = ", ".join(f"{n} {p}" for n, p in (("echo", args.echo), ("discard", args.discard),
                                              ("chargen", args.chargen), ("http", args.http))
                      if p)
    print(f"serving {ports} on {', '.join(args.address)} ({args.tun or args.tap})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for s in started:
            s.close()
    print("stopped", file=sys.stderr)
    return 0
