"""The device commands of ``aionetstack``: ``serve`` and ``ping`` on a TUN/TAP device."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from aionetstack import link
from aionetstack.asyncio.stack import Stack
from aionetstack.errors import InvalidArgument
from aionetstack.link.tun import DeviceError


def _check_addresses(specs: list[str]) -> None:
    for spec in specs:
        try:
            if "/" not in spec:
                raise ValueError(spec)
            ipaddress.ip_interface(spec)
        except ValueError:
            raise InvalidArgument(f"bad address {spec!r} (expected ADDR/PREFIX, e.g. "
                                  f"198.18.0.2/24 or fd00::2/64)") from None


def _check_host(what: str, addr: str) -> None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidArgument(f"bad {what} {addr!r} (expected an IPv4 or IPv6 address)"
                              ) from None


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before touching a device, as one-line errors."""
    _check_addresses(args.address + args.peer_address)
    for gw in args.gateway:
        _check_host("gateway", gw)
    if args.command == "ping":
        _check_host("address to ping", args.target)
    if args.command == "serve":
        if not any((args.echo, args.discard, args.chargen, args.http)):
            raise InvalidArgument("nothing to serve: give --echo, --discard, --chargen and/or "
                                  "--http")
        for service in ("echo", "discard", "chargen", "http"):
            port = getattr(args, service)
            if port is not None and not 1 <= port <= 65535:
                raise InvalidArgument(f"bad port {port} for --{service} (1-65535)")
    if args.peer_address and not args.create:
        raise InvalidArgument("--peer-address needs --create (it configures a new device)")
    if args.netns and not os.path.exists(f"/run/netns/{args.netns}"):
        # checked here: pyroute2 would silently create a missing namespace
        raise InvalidArgument(f"no network namespace named {args.netns!r} "
                              f"(create it with: ip netns add {args.netns})")


def _device_exists(name: str, netns: str | None) -> bool:
    from aionetstack.link.tun import _in_netns

    with _in_netns(netns):
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
    return True


def open_device(args: argparse.Namespace) -> link.Link:
    check_args(args)
    name = args.tun or args.tap
    kind: Any = link.Tun if args.tun else link.Tap
    if args.create:
        if os.geteuid() != 0:
            raise PermissionError(f"creating {name} needs root (CAP_NET_ADMIN); without root, "
                                  f"attach to a device made for you: ip tuntap add {name} mode "
                                  f"{'tun' if args.tun else 'tap'} user {os.getuid()}")
        if _device_exists(name, args.netns):
            raise DeviceError(f"device {name} already exists (drop --create to attach to it)")
        dev = kind.create(name, peer_address=args.peer_address, mtu=args.mtu,
                          netns=args.netns, offload=not args.no_offload)
    else:
        # without the check, TUNSETIFF as root would quietly create a new, unconfigured device
        if not _device_exists(name, args.netns):
            where = f" in namespace {args.netns}" if args.netns else ""
            raise DeviceError(f"no device named {name}{where} (give --create to create it)")
        dev = kind(name, mtu=args.mtu, netns=args.netns, offload=not args.no_offload)
    if not args.pcap:
        result: link.Link = dev
        return result
    try:
        return link.pcap(dev, args.pcap)
    except BaseException:
        dev.close()
        raise


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
    """Like ping(8): Ctrl-C stops early and still prints the summary."""
    received = sent = 0
    with _stop_on_signals() as stop:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            for seq in range(args.count):
                one = asyncio.ensure_future(stack.ping(args.target, timeout=args.timeout))
                await asyncio.wait([one, stopped], return_when=asyncio.FIRST_COMPLETED)
                if not one.done():
                    one.cancel()
                    break
                sent += 1
                try:
                    rtt = one.result()
                except TimeoutError:
                    print(f"no reply from {args.target} (seq {seq})", flush=True)
                except OSError as exc:
                    print(f"{args.target}: {exc.strerror or exc}", flush=True)
                else:
                    received += 1
                    print(f"reply from {args.target}: seq={seq} time={rtt * 1e3:.3f} ms",
                          flush=True)
                if seq + 1 < args.count:
                    await asyncio.wait([stopped], timeout=args.interval)
                if stopped.done():
                    break
        finally:
            stopped.cancel()
    print(f"{sent} sent, {received} received", flush=True)
    return 0 if received else 1


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM while the block runs (a clean Ctrl-C, no traceback)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(stack: Stack, args: argparse.Namespace) -> int:
    from aionetstack.services import start_services

    started = await start_services(stack, echo=args.echo, discard=args.discard,
                                   chargen=args.chargen, http=args.http)
    ports = ", ".join(f"{n} {p}" for n, p in (("echo", args.echo), ("discard", args.discard),
                                              ("chargen", args.chargen), ("http", args.http))
                      if p)
    print(f"serving {ports} on {', '.join(args.address)} ({args.tun or args.tap})", flush=True)
    try:
        with _stop_on_signals() as stop:
            await stop.wait()
    finally:
        for s in started:
            s.close()
    print("stopped", file=sys.stderr)
    return 0
