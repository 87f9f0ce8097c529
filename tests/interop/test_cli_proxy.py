"""``aionetstack proxy`` end to end, in three namespaces the test creates.

    client ns  --TUN ans0-->  proxy ns (python -m aionetstack proxy, via ip netns exec)
                                 |  veth vp0 198.19.0.1 / fd00:19::1
                              server ns  vs0 198.19.0.2, .3 / fd00:19::2, ::3

The TUN's kernel side lives in the client namespace (198.18.0.1, fd00:18::1), with routes to
198.19.0.0/16 and fd00:19::/48 through it.  The proxy process runs inside the proxy namespace,
so its host sockets reach the server namespace over the veth pair.  Only 198.19.0.0/24 and
fd00:19::/64 are allowed (``--allow``); the rest of the routed ranges must be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import ns_socket, require_privileged, require_tool, run_cmd

SRV4, SRV4B, SRV6, SRV6B = "198.19.0.2", "198.19.0.3", "fd00:19::2", "fd00:19::3"
DENIED4, DENIED6 = "198.19.1.5", "fd00:19:0:1::5"


@dataclass
class Topo:
    client: str
    proxy: str
    server: str
    socks_log: list[str] = field(default_factory=list)


async def _ip(*args: str) -> None:
    rc, out = await run_cmd("ip", *args)
    assert rc == 0, f"ip {' '.join(args)}: {out}"


@pytest.fixture
async def topo() -> AsyncIterator[Topo]:
    require_privileged()
    require_tool("ip")
    tag = f"ans-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
    t = Topo(f"{tag}-c", f"{tag}-p", f"{tag}-s")
    made: list[str] = []
    try:
        for ns in (t.client, t.proxy, t.server):
            await _ip("netns", "add", ns)
            made.append(ns)
            await _ip("-n", ns, "link", "set", "lo", "up")
        await _ip("-n", t.proxy, "link", "add", "vp0", "type", "veth", "peer", "name", "vs0",
                  "netns", t.server)
        await _ip("-n", t.proxy, "addr", "add", "198.19.0.1/24", "dev", "vp0")
        await _ip("-n", t.proxy, "addr", "add", "fd00:19::1/64", "dev", "vp0", "nodad")
        await _ip("-n", t.proxy, "link", "set", "vp0", "up")
        for a in (f"{SRV4}/24", f"{SRV4B}/24"):
            await _ip("-n", t.server, "addr", "add", a, "dev", "vs0")
        for a in (f"{SRV6}/64", f"{SRV6B}/64"):
            await _ip("-n", t.server, "addr", "add", a, "dev", "vs0", "nodad")
        await _ip("-n", t.server, "link", "set", "vs0", "up")
        yield t
    finally:
        for ns in made:
            await run_cmd("ip", "netns", "del", ns)


@contextlib.asynccontextmanager
async def running_proxy(t: Topo, *extra: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", t.proxy, sys.executable, "-m", "aionetstack", "proxy",
        "--tun", "ans0", "--create", "--netns", t.client, "--peer-address", "198.18.0.1/24",
        "--peer-address", "fd00:18::1/64", "--allow", "198.19.0.0/24", "--allow",
        "fd00:19::/64", "-v", *extra, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"proxy on ans0" in line, line
        await _ip("-n", t.client, "route", "add", "198.19.0.0/16", "dev", "ans0")
        await _ip("-n", t.client, "-6", "route", "add", "fd00:19::/48", "dev", "ans0")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # the ip-netns-exec'd python gets it: a Ctrl-C
        rc = await asyncio.wait_for(proc.wait(), 20)
        assert rc == 0  # a clean Ctrl-C


# -- servers in the server namespace ---------------------------------------------------------
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


# -- a small SOCKS5 server (RFC 1928: no auth, CONNECT, UDP ASSOCIATE) in the proxy ns ----------
def _addr(data: bytes, off: int) -> tuple[tuple[str, int], int]:
    atyp = data[off]
    n = 4 if atyp == 1 else 16
    host = socket.inet_ntop(socket.AF_INET if atyp == 1 else socket.AF_INET6,
                            data[off + 1:off + 1 + n])
    return (host, struct.unpack_from("!H", data, off + 1 + n)[0]), off + 3 + n


def _enc(host: str, port: int) -> bytes:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return bytes([4 if fam == socket.AF_INET6 else 1]) + socket.inet_pton(fam, host) + \
        struct.pack("!H", port)


@contextlib.asynccontextmanager
async def socks5_server(t: Topo) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()

    async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await r.read(65536):
                w.write(chunk)
                await w.drain()
            w.write_eof()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readexactly(2)
        await r.readexactly(head[1])
        w.write(b"\x05\x00")
        req = await r.readexactly(4)
        rest = await r.readexactly(6 if req[3] == 1 else 18)
        dst, _ = _addr(req[3:4] + rest, 0)
        t.socks_log.append(f"{req[1]} {dst[0]} {dst[1]}")
        if req[1] == 1:  # CONNECT
            fam = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
            s = ns_socket(t.proxy, fam, socket.SOCK_STREAM)
            try:
                await loop.sock_connect(s, dst)
            except OSError:
                s.close()
                w.write(b"\x05\x05\x00" + _enc("0.0.0.0", 0))  # connection refused
                w.close()
                return
            w.write(b"\x05\x00\x00" + _enc(*s.getsockname()[:2]))
            ur, uw = await asyncio.open_connection(sock=s)
            await asyncio.gather(pump(r, uw), pump(ur, w))
            uw.close()
            w.close()
            return
        # UDP ASSOCIATE: one relay socket towards the client, one per family outwards
        relay = ns_socket(t.proxy, socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        out = {f: ns_socket(t.proxy, f, socket.SOCK_DGRAM)
               for f in (socket.AF_INET, socket.AF_INET6)}
        client: list[tuple[str, int]] = []

        class Relay(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                client[:] = [addr]
                dst, off = _addr(data, 3)
                t.socks_log.append(f"udp {dst[0]} {dst[1]}")
                fam = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
                transports[fam].sendto(data[off:], dst)

        class Out(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if client:
                    rtr.sendto(b"\x00\x00\x00" + _enc(addr[0], addr[1]) + data, client[0])

        rtr, _ = await loop.create_datagram_endpoint(Relay, sock=relay)
        transports = {}
        for f, s in out.items():
            transports[f], _ = await loop.create_datagram_endpoint(Out, sock=s)
        w.write(b"\x05\x00\x00" + _enc(*relay.getsockname()))
        await r.read()  # the association lives as long as the control connection
        rtr.close()
        for tr in transports.values():
            tr.close()
        w.close()

    s = ns_socket(t.proxy, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    server = await asyncio.start_server(handle, sock=s)
    try:
        yield s.getsockname()[1]
    finally:
        server.close()


# -- client side helpers -----------------------------------------------------------------------
async def _tcp_roundtrip(ns: str, host: str, port: int, size: int) -> None:
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


async def _udp_cone(ns: str, dests: list[tuple[str, int]]) -> None:
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


async def _refused(ns: str, host: str) -> None:
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns_socket(ns, fam, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(loop.sock_connect(s, (host, 7000)), 10)
    s.close()
    u = ns_socket(ns, fam, socket.SOCK_DGRAM)
    u.connect((host, 5300))
    err: OSError | None = None
    for _ in range(5):
        await loop.sock_sendall(u, b"x")
        try:
            await asyncio.wait_for(loop.sock_recv(u, 100), 2)
        except TimeoutError:
            continue
        except OSError as exc:
            err = exc
            break
    u.close()
    # ICMP administratively prohibited: EHOSTUNREACH (IPv4), EACCES (IPv6) on Linux
    assert err is not None and err.errno in (errno.EHOSTUNREACH, errno.EACCES), err


# -- tests ---------------------------------------------------------------------------------------
async def test_proxy_direct_tcp_udp_and_allow(topo: Topo) -> None:
    async with echo_servers(topo.server), running_proxy(topo) as proc:
        await asyncio.gather(_tcp_roundtrip(topo.client, SRV4, 7000, 2_000_000),
                             _tcp_roundtrip(topo.client, SRV6, 7000, 2_000_000))
        await _udp_cone(topo.client, [(SRV4, 5300), (SRV4B, 5300)])
        await _udp_cone(topo.client, [(SRV6, 5300), (SRV6B, 5300)])
        await _refused(topo.client, DENIED4)
        await _refused(topo.client, DENIED6)
        # an allowed destination with nothing listening: the upstream RST becomes a RST
        loop = asyncio.get_running_loop()
        s = ns_socket(topo.client, socket.AF_INET, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(loop.sock_connect(s, (SRV4, 7999)), 10)
        s.close()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert f"-> {SRV4}:7000: connected" in log and f"-> [{SRV6}]:7000: connected" in log
    assert log.count("new flow") == 2  # one per client socket: the cone mapping
    assert "stopped" in log


async def test_proxy_via_socks5(topo: Topo) -> None:
    async with echo_servers(topo.server), socks5_server(topo) as port, \
            running_proxy(topo, "--socks5", f"127.0.0.1:{port}"):
        await _tcp_roundtrip(topo.client, SRV4, 7000, 1_000_000)
        await _tcp_roundtrip(topo.client, SRV6, 7000, 1_000_000)
        await _udp_cone(topo.client, [(SRV4, 5300), (SRV4B, 5300)])
        await _udp_cone(topo.client, [(SRV6, 5300), (SRV6B, 5300)])
        await _refused(topo.client, DENIED4)
    assert f"1 {SRV4} 7000" in topo.socks_log and f"1 {SRV6} 7000" in topo.socks_log
    assert f"udp {SRV4B} 5300" in topo.socks_log and f"udp {SRV6B} 5300" in topo.socks_log
    assert not any(DENIED4 in e for e in topo.socks_log)


async def test_proxy_bad_arguments_one_line_errors() -> None:
    for args, expect in ((["--allow", "nonsense"], "bad --allow"),
                         (["--socks5", "nohostport"], "bad --socks5")):
        rc, out = await run_cmd(sys.executable, "-m", "aionetstack", "proxy", "--tun", "x",
                                *args)
        assert rc == 1 and expect in out and len(out.strip().splitlines()) == 1, out
