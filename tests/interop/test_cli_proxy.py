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
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .conftest import ns_socket, run_cmd
from .proxy_topo import (
    DENIED4,
    DENIED6,
    SRV4,
    SRV4B,
    SRV6,
    SRV6B,
    Topo,
    echo_servers,
    ip,
    make_topo,
    tcp_roundtrip,
    udp_cone,
)


@pytest.fixture
async def topo() -> AsyncIterator[Topo]:
    async with make_topo() as t:
        yield t


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
        await ip("-n", t.client, "route", "add", "198.19.0.0/16", "dev", "ans0")
        await ip("-n", t.client, "-6", "route", "add", "fd00:19::/48", "dev", "ans0")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # the ip-netns-exec'd python gets it: a Ctrl-C
        rc = await asyncio.wait_for(proc.wait(), 20)
        assert rc == 0  # a clean Ctrl-C


# -- servers in the server namespace ---------------------------------------------------------
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
async def socks5_server(t: Topo, controls: list[asyncio.StreamWriter] | None = None,
                        ) -> AsyncIterator[int]:
    """The server's port; ``controls`` gets each UDP ASSOCIATE's control connection."""
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
        if controls is not None:
            controls.append(w)
        with contextlib.suppress(OSError):
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
        await asyncio.gather(tcp_roundtrip(topo.client, SRV4, 7000, 2_000_000),
                             tcp_roundtrip(topo.client, SRV6, 7000, 2_000_000))
        await udp_cone(topo.client, [(SRV4, 5300), (SRV4B, 5300)])
        await udp_cone(topo.client, [(SRV6, 5300), (SRV6B, 5300)])
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
        await tcp_roundtrip(topo.client, SRV4, 7000, 1_000_000)
        await tcp_roundtrip(topo.client, SRV6, 7000, 1_000_000)
        await udp_cone(topo.client, [(SRV4, 5300), (SRV4B, 5300)])
        await udp_cone(topo.client, [(SRV6, 5300), (SRV6B, 5300)])
        await _refused(topo.client, DENIED4)
    assert f"1 {SRV4} 7000" in topo.socks_log and f"1 {SRV6} 7000" in topo.socks_log
    assert f"udp {SRV4B} 5300" in topo.socks_log and f"udp {SRV6B} 5300" in topo.socks_log
    assert not any(DENIED4 in e for e in topo.socks_log)


async def _udp_ask(u: socket.socket, dst: tuple[str, int], payload: bytes) -> None:
    """One datagram to the UDP echo and its answer (retried: a datagram may be lost)."""
    loop = asyncio.get_running_loop()
    for _attempt in range(5):
        await loop.sock_sendto(u, payload, dst)
        try:
            data, src = await asyncio.wait_for(loop.sock_recvfrom(u, 4096), 2)
        except TimeoutError:
            continue
        assert (data, src[:2]) == (dst[0].encode() + b"|" + payload, dst)
        return
    raise AssertionError(f"no answer from {dst} through the proxy")


async def test_proxy_socks5_udp_flow_ends_with_its_association(topo: Topo) -> None:
    """RFC 1928 §7: the SOCKS5 server closing the control connection ends the association;
    the proxy's flow ends with it, and the same client source gets a new association."""
    controls: list[asyncio.StreamWriter] = []
    seen: list[str] = []
    async with echo_servers(topo.server), socks5_server(topo, controls) as port, \
            running_proxy(topo, "--socks5", f"127.0.0.1:{port}") as proc:
        assert proc.stderr is not None
        u = ns_socket(topo.client, socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", 0))
        try:
            await _udp_ask(u, (SRV4, 5300), b"first")
            assert len(controls) == 1
            controls[0].close()  # the server ends the association (its relay closes)
            # the flow ends at once, without waiting for the client's next datagram
            while not seen or "flow ended" not in seen[-1]:
                line = await asyncio.wait_for(proc.stderr.readline(), 5)
                assert line, seen
                seen.append(line.decode())
            await _udp_ask(u, (SRV4, 5300), b"second")  # the same client source
            assert len(controls) == 2  # through a new association
        finally:
            u.close()
    log = "".join(seen) + (await proc.stderr.read()).decode()
    assert "the SOCKS5 server closed the UDP association's control connection" in log, log
    assert log.count("new flow") == 2 and "flow ended" in log, log
    assert "never retrieved" not in log and "Task was destroyed" not in log, log


async def test_proxy_bad_arguments_one_line_errors() -> None:
    for args, expect in ((["--allow", "nonsense"], "bad --allow"),
                         (["--socks5", "nohostport"], "bad --socks5")):
        rc, out = await run_cmd(sys.executable, "-m", "aionetstack", "proxy", "--tun", "x",
                                *args)
        assert rc == 1 and expect in out and len(out.strip().splitlines()) == 1, out


async def _reset_passes_through(t: Topo, client_resets: bool) -> None:
    """A RST from one side of a relayed connection becomes a RST on the other side."""
    loop = asyncio.get_running_loop()
    srv = ns_socket(t.server, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((SRV4, 7001))
    srv.listen(1)
    cli = ns_socket(t.client, socket.AF_INET, socket.SOCK_STREAM)
    await asyncio.wait_for(loop.sock_connect(cli, (SRV4, 7001)), 10)
    conn, _ = await asyncio.wait_for(loop.sock_accept(srv), 10)
    conn.setblocking(False)
    await loop.sock_sendall(cli, b"hi")
    assert await asyncio.wait_for(loop.sock_recv(conn, 10), 10) == b"hi"
    resetter, victim = (cli, conn) if client_resets else (conn, cli)
    resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    resetter.close()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(loop.sock_recv(victim, 10), 10)
    victim.close()
    srv.close()


async def test_proxy_maps_resets_and_writes_pcap(topo: Topo, tmp_path: Path) -> None:
    cap = tmp_path / "proxy.pcap"
    async with running_proxy(topo, "--pcap", str(cap)):
        await _reset_passes_through(topo, client_resets=True)
        await _reset_passes_through(topo, client_resets=False)
    assert cap.stat().st_size > 24 + 10 * 16  # the pcap header and the handshakes at least
