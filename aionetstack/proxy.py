"""``aionetstack proxy``: a transparent proxy on a TUN device.

Every TCP connection and UDP flow arriving on the device, whatever its destination, is taken by
the stack's forwarders (transparent mode) and relayed to its real destination through the
host's sockets -- or through a SOCKS5 server (``--socks5 HOST:PORT``: CONNECT for TCP, UDP
ASSOCIATE for UDP, see ``aionetstack.socks5``).

* TCP: the upstream connection is made *before* the client's handshake is answered, so a
  refused destination gets a RST and an unreachable one an ICMP host unreachable.  Data is
  relayed both ways; a half-close (FIN) is passed on with ``write_eof``; a reset on one side
  aborts the other (with a RST on the host side: ``SO_LINGER`` 0).
* UDP: one host socket per client source (full-cone mapping, as the forwarder); replies from
  any destination go back to the client from that destination's address.  A flow ends after
  ``--udp-timeout`` idle seconds.  Through SOCKS5 each flow has its own UDP association, and
  the flow also ends when the association does (the server closed or reset its control
  connection, RFC 1928 §7); the client's next datagram then starts a new flow and association.
* ``--allow CIDR`` (repeatable) limits the destinations: TCP to others gets a RST, UDP an ICMP
  administratively prohibited.  Without ``--allow`` every destination is relayed.
* ``--answer-ping`` answers ICMP echo requests to any address from the stack itself.

The device's kernel side needs routes pointing at it for the destinations to proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import socket
import struct
import sys
from typing import Any

from aionetstack.asyncio.forward import ForwardedConnection, ForwardedDatagrams
from aionetstack.asyncio.stack import Stack
from aionetstack.errors import ClosedForReceive, ClosedForSend, InvalidArgument
from aionetstack.socks5 import UdpAssociation
from aionetstack.socks5 import open_connection as socks5_open

HostPort = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def add_proxy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tun", metavar="NAME", required=True, help="attach to TUN device NAME")
    p.add_argument("--create", action="store_true",
                   help="create the device (needs root) instead of attaching to an existing one")
    p.add_argument("--peer-address", action="append", default=[], metavar="ADDR/PREFIX",
                   help="with --create: the kernel side's address (repeatable)")
    p.add_argument("--netns", metavar="NAME",
                   help="with --create: create the device in this network namespace (the "
                        "relayed connections still leave from this process's namespace)")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--no-offload", action="store_true", help="disable TUN offloads")
    p.add_argument("--allow", action="append", default=[], metavar="CIDR",
                   help="relay only to destinations in CIDR (repeatable; default: all)")
    p.add_argument("--socks5", metavar="HOST:PORT",
                   help="relay through this SOCKS5 server instead of direct connections")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--udp-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="end a UDP flow after this long without traffic")
    p.add_argument("--max-pending", type=int, default=256,
                   help="TCP handshakes (and new UDP flows) waiting for their upstream")
    p.add_argument("--answer-ping", action="store_true",
                   help="answer ICMP echo requests to any address")
    p.add_argument("--pcap", metavar="FILE", help="capture the device's traffic")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections")


def parse_allow(specs: list[str]) -> list[Network]:
    nets = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise InvalidArgument(f"bad --allow {spec!r} (expected a CIDR such as "
                                  f"198.18.0.0/15 or fd00::/8)") from None
    return nets


def parse_hostport(spec: str) -> HostPort:
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"bad --socks5 {spec!r} (expected HOST:PORT, e.g. 127.0.0.1:1080)")
    return host, int(port)


class Proxy:
    """The relaying half of the command: handlers for the stack's forwarders."""

    def __init__(self, allow: list[Network], socks5: HostPort | None, connect_timeout: float,
                 verbose: bool) -> None:
        self.allow = allow
        self.socks5 = socks5
        self.connect_timeout = connect_timeout
        self.verbose = verbose

    def allowed(self, addr: bytes | str, port: int = 0) -> bool:
        if not self.allow:
            return True
        ip = ipaddress.ip_address(addr)
        return any(ip in net for net in self.allow)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    # -- TCP ---------------------------------------------------------------------------------
    async def tcp(self, conn: ForwardedConnection) -> None:
        what = f"tcp {_fmt(conn.remote)} -> {_fmt(conn.local)}"
        try:
            if self.socks5 is not None:
                up = socks5_open(self.socks5, conn.local)
            else:
                up = asyncio.open_connection(*conn.local)
            ur, uw = await asyncio.wait_for(up, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            self.log(f"{what}: upstream failed: {exc.strerror or exc}")
            if not conn.decided:  # (the request may have expired meanwhile)
                conn.reject("reset" if refused else "host-unreachable")
            return
        try:
            cr, cw = await conn.accept()
        except OSError:
            uw.close()
            self.log(f"{what}: client went away during the handshake")
            return
        self.log(f"{what}: connected")
        up_bytes, down_bytes = await relay(cr, cw, ur, uw)
        self.log(f"{what}: closed ({up_bytes} bytes up, {down_bytes} down)")

    # -- UDP ---------------------------------------------------------------------------------
    async def udp(self, req: ForwardedDatagrams) -> None:
        what = f"udp {_fmt(req.remote)}"
        family = socket.AF_INET6 if ":" in req.local[0] else socket.AF_INET
        loop = asyncio.get_running_loop()
        assoc: UdpAssociation | None = None
        transport: asyncio.DatagramTransport | None = None
        try:
            if self.socks5 is not None:
                assoc = await asyncio.wait_for(UdpAssociation.open(self.socks5, family),
                                               self.connect_timeout)
            else:
                any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
                transport, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, local_addr=(any_addr, 0), family=family)
        except (OSError, TimeoutError) as exc:
            self.log(f"{what}: upstream failed: {exc}")
            if not req.decided:
                req.reject("host-unreachable")
            return
        try:
            flow = req.accept()
        except OSError:  # expired meanwhile
            if assoc is not None:
                assoc.close()
            if transport is not None:
                transport.close()
            return
        self.log(f"{what}: new flow (first to {_fmt(req.local)})")
        back: asyncio.Task[None] | None = None
        try:
            if assoc is not None:
                back = asyncio.ensure_future(self._socks_replies(assoc, flow, what))
            else:
                assert transport is not None
                transport.set_protocol(_Replies(self, flow))
            while True:
                data, dst = await flow.recv()
                if assoc is not None:
                    assoc.sendto(data, dst)
                else:
                    assert transport is not None
                    transport.sendto(data, dst)
        except (ClosedForReceive, ClosedForSend):  # (ClosedForSend: the association ended)
            self.log(f"{what}: flow ended")
        finally:
            if back is not None:
                back.cancel()
            if assoc is not None:
                assoc.close()
            if transport is not None:
                transport.close()
            flow.close()

    async def _socks_replies(self, assoc: UdpAssociation, flow: Any, what: str) -> None:
        try:
            while True:
                data, src = await assoc.recvfrom()
                if self.allowed(src[0]):
                    with contextlib.suppress(OSError, ValueError):
                        flow.send(data, source=src)
        except ClosedForReceive as exc:
            # the SOCKS5 server ended the association (RFC 1928 §7): the flow ends with it
            # (which ends udp()'s loop), and the client's next datagram opens a new one
            self.log(f"{what}: {exc.strerror}")
            flow.close()


class _Replies(asyncio.DatagramProtocol):
    """Datagrams from the destinations, back to the client from their own address."""

    def __init__(self, proxy: Proxy, flow: Any) -> None:
        self.proxy = proxy
        self.flow = flow

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.proxy.allowed(addr[0]) and not self.flow.closed:
            with contextlib.suppress(OSError, ValueError):
                self.flow.send(data, source=(addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error from a destination: UDP carries on


async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter, ur: asyncio.StreamReader,
                uw: asyncio.StreamWriter) -> tuple[int, int]:
    """Copy both ways until both sides have sent EOF; FIN is passed on with ``write_eof``, a
    reset on either side aborts both.  Returns the bytes copied (client->upstream, back)."""
    counts = [0, 0]

    async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        while chunk := await r.read(256 * 1024):
            counts[i] += len(chunk)
            w.write(chunk)
            await w.drain()
        if w.can_write_eof() and not w.is_closing():
            w.write_eof()

    tasks = [asyncio.ensure_future(pump(cr, uw, 0)), asyncio.ensure_future(pump(ur, cw, 1))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() is not None for t in done):
            for t in pending:
                t.cancel()
            _abort(cw)
            _abort(uw)
    finally:
        for t in tasks:
            t.cancel()
        cw.close()
        uw.close()
    return counts[0], counts[1]


def _abort(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    if sock is not None:  # a host socket: make the kernel send a RST
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


def _fmt(addr: HostPort) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


async def run_proxy(args: argparse.Namespace) -> int:
    from aionetstack.cli import open_device

    allow = parse_allow(args.allow)
    socks5 = parse_hostport(args.socks5) if args.socks5 else None
    if args.udp_timeout <= 0 or args.connect_timeout <= 0:
        raise InvalidArgument("timeouts must be positive")
    dev = open_device(argparse.Namespace(
        command="proxy", tun=args.tun, tap=None, address=[], gateway=[],
        peer_address=args.peer_address, create=args.create, netns=args.netns, mtu=args.mtu,
        no_offload=args.no_offload, pcap=args.pcap))
    proxy = Proxy(allow, socks5, args.connect_timeout, args.verbose)
    async with Stack() as stack:
        nic = stack.add_nic(dev, [], mtu=args.mtu)
        stack.set_transparent(nic, echo=args.answer_ping)
        stack.add_route("0.0.0.0/0", nic=nic)
        stack.add_route("::/0", nic=nic)
        flt = proxy.allowed if allow else None
        tcp = stack.tcp_forwarder(proxy.tcp, nic=nic, max_pending=args.max_pending,
                                  pending_timeout=args.connect_timeout + 5,
                                  destination_filter=flt)
        udp = stack.udp_forwarder(proxy.udp, nic=nic, max_pending=args.max_pending,
                                  idle_timeout=args.udp_timeout,
                                  pending_timeout=args.connect_timeout + 5,
                                  destination_filter=flt)
        via = f"SOCKS5 {_fmt(socks5)}" if socks5 else "direct"
        dests = ", ".join(str(n) for n in allow) or "any destination"
        print(f"proxy on {args.tun}: TCP and UDP to {dests}, {via}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            tcp.close()
            udp.close()
            tasks = tcp.tasks | udp.tasks
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
    print("stopped", file=sys.stderr)
    return 0
