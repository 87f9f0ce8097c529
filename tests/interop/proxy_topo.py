"""Three namespaces for proxy tests: client (gets the TUN's kernel side), proxy, server.

    client ns  --TUN ans0-->  proxy ns (the proxy process runs here, via ip netns exec)
                                 |  veth vp0 198.19.0.1 / fd00:19::1
                              server ns  vs0 198.19.0.2, .3 / fd00:19::2, ::3

Plus the servers (TCP echo, UDP "who am I" echo) and the client-side checks the proxy tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .conftest import ns_socket, require_privileged, require_tool, run_cmd

SRV4, SRV4B, SRV6, SRV6B = "198.19.0.2", "198.19.0.3", "fd00:19::2", "fd00:19::3"
DENIED4, DENIED6 = "198.19.1.5", "fd00:19:0:1::5"


@dataclass
class Topo:
    client: str
    proxy: str
    server: str
    socks_log: list[str] = field(default_factory=list)


async def ip(*args: str) -> None:
    rc, out = await run_cmd("ip", *args)
    assert rc == 0, f"ip {' '.join(args)}: {out}"


@contextlib.asynccontextmanager
async def make_topo() -> AsyncIterator[Topo]:
    """Three namespaces (client, proxy, server) with the veth pair between proxy and server."""
    require_privileged()
    require_tool("ip")
    tag = f"ans-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
    t = Topo(f"{tag}-c", f"{tag}-p", f"{tag}-s")
    made: list[str] = []
    try:
        for ns in (t.client, t.proxy, t.server):
            await ip("netns", "add", ns)
            made.append(ns)
            await ip("-n", ns, "link", "set", "lo", "up")
        await ip("-n", t.proxy, "link", "add", "vp0", "type", "veth", "peer", "name", "vs0",
                  "netns", t.server)
        await ip("-n", t.proxy, "addr", "add", "198.19.0.1/24", "dev", "vp0")
        await ip("-n", t.proxy, "addr", "add", "fd00:19::1/64", "dev", "vp0", "nodad")
        await ip("-n", t.proxy, "link", "set", "vp0", "up")
        for a in (f"{SRV4}/24", f"{SRV4B}/24"):
            await ip("-n", t.server, "addr", "add", a, "dev", "vs0")
        for a in (f"{SRV6}/64", f"{SRV6B}/64"):
            await ip("-n", t.server, "addr", "add", a, "dev", "vs0", "nodad")
        await ip("-n", t.server, "link", "set", "vs0", "up")
        yield t
    finally:
        for ns in made:
            await run_cmd("ip", "netns", "del", ns)



@contextlib.asynccontextmanager
async def echo_servers(ns: str) -> AsyncIterator[None]:
    """TCP echo on port 7000 (FIN passed back after the echo) and UDP on 5300 that answers
    ``<its own address>|<data>``, on every server address."""

    async def tcp_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while chunk := await r.read(65536):
            w.write(chunk)
            await w.drain()
        w.write_eof()
        await w.drain()
        w.close()

    class UdpEcho(asyncio.DatagramProtocol):
        def __init__(self, me: str) -> None:
            self.me = me.encode()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport  # (3.11's selector datagram transport is not a subclass)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(self.me + b"|" + data, addr)

    loop = asyncio.get_running_loop()
    closers = []
    for host in (SRV4, SRV6):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = ns_socket(ns, fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 7000))
        s.listen(16)
        server = await asyncio.start_server(tcp_echo, sock=s)
        closers.append(server.close)
    for host in (SRV4, SRV4B, SRV6, SRV6B):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        u = ns_socket(ns, fam, socket.SOCK_DGRAM)
        u.bind((host, 5300))
        tr, _ = await loop.create_datagram_endpoint(lambda h=host: UdpEcho(h), sock=u)
        closers.append(tr.close)
    try:
        yield
    finally:
        for c in closers:
            c()


# -- client side helpers -----------------------------------------------------------------------
async def tcp_roundtrip(ns: str, host: str, port: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns_socket(ns, fam, socket.SOCK_STREAM)
    await asyncio.wait_for(loop.sock_connect(s, (host, port)), 10)
    data = os.urandom(size)
    received = bytearray()

    async def reader() -> None:
        while chunk := await loop.sock_recv(s, 65536):
            received.extend(chunk)

    task = asyncio.create_task(reader())
    await loop.sock_sendall(s, data)
    s.shutdown(socket.SHUT_WR)  # the half-close travels through the proxy; the echo comes back
    await asyncio.wait_for(task, 60)
    s.close()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()


async def udp_cone(ns: str, dests: list[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in dests[0][0] else socket.AF_INET
    u = ns_socket(ns, fam, socket.SOCK_DGRAM)
    u.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
    payloads = {d: os.urandom(1200) for d in dests}
    got: dict[tuple[str, int], bytes] = {}
    for _attempt in range(5):  # UDP: retry a lost datagram
        for d in dests:
            if d not in got:
                await loop.sock_sendto(u, payloads[d], d)
        with contextlib.suppress(TimeoutError):
            while len(got) < len(dests):
                data, src = await asyncio.wait_for(loop.sock_recvfrom(u, 4096), 2)
                got[(src[0], src[1])] = data
        if len(got) == len(dests):
            break
    u.close()
    for d in dests:  # each reply came from the destination it was sent to, to one client port
        assert got[d] == d[0].encode() + b"|" + payloads[d]


