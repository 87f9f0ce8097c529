"""TCP between aionetstack and the Linux kernel's TCP over TUN (and TAP), byte for byte.

Every test runs in its own network namespace: the kernel end of the device has 198.18.0.1 and
fd00::1, the stack 198.18.0.2 and fd00::2.  Kernel sockets are made inside the namespace by
``ns_socket`` and driven from this process's event loop.  Integrity is checked with SHA-256.

Covered here: kernel client → stack server (echo of 0 B … 16 MB, half-close both ways, RST on
abort both ways, 50 concurrent connections); stack client → kernel server (1 MB each way, IPv4
and IPv6, connection refused); option negotiation as the kernel reports it (``ss -tin``).
Loss and pcap checks live in ``test_tcp_loss.py`` and ``test_tcp_pcap.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aionetstack import Stack, link
from aionetstack.link.base import Link

from .conftest import ns_socket, require_tool

KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"
KERNEL6, STACK6 = "fd00::1", "fd00::2"
DEV = "ans0"
PORT = 7000

pytestmark = pytest.mark.timeout(90)

TUN_LINKS = [
    pytest.param(link.Tun, True, id="tun-offload"),
    pytest.param(link.Tun, False, id="tun-plain"),
]
TAP_LINKS = [
    pytest.param(link.Tap, True, id="tap-offload"),
    pytest.param(link.Tap, False, id="tap-plain"),
]


def addrs(family: int) -> tuple[str, str, int]:
    """(kernel address, stack address, socket family)."""
    if family == 4:
        return KERNEL4, STACK4, socket.AF_INET
    return KERNEL6, STACK6, socket.AF_INET6


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


@asynccontextmanager
async def stack_on(netns: str, kind: type[link.Tun] | type[link.Tap] = link.Tun,
                   offload: bool = True, *, mtu: int = 1500,
                   wrap: Callable[[Link], Link] | None = None) -> AsyncIterator[Stack]:
    """A stack on a fresh TUN/TAP device in ``netns`` (optionally wrapped, e.g. by pcap)."""
    dev = kind.create(DEV, peer_address=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns,
                      mtu=mtu, offload=offload)
    assert bool(dev.offloads) == offload
    nic_link: Link = wrap(dev) if wrap is not None else dev
    try:
        async with Stack() as stack:
            stack.add_nic(nic_link, [f"{STACK4}/24", f"{STACK6}/64"])
            yield stack
    finally:
        # let connection handlers see the stack's resets and finish before the loop goes away
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        if others:
            await asyncio.wait(others, timeout=2)


async def kernel_connect(netns: str, host: str, port: int = PORT,
                         timeout: float = 10.0) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns_socket(netns, fam, socket.SOCK_STREAM)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (host, port)), timeout)
    except BaseException:
        s.close()
        raise
    return s


async def recv_all(s: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while chunk := await loop.sock_recv(s, 1 << 16):
        buf += chunk
    return bytes(buf)


async def kernel_exchange(s: socket.socket, data: bytes, timeout: float = 60.0) -> bytes:
    """Send ``data`` and shut down the write side while receiving until the peer's FIN."""
    loop = asyncio.get_running_loop()
    reader = asyncio.create_task(recv_all(s))
    try:
        await asyncio.wait_for(loop.sock_sendall(s, data), timeout)
        s.shutdown(socket.SHUT_WR)
        return await asyncio.wait_for(reader, timeout)
    finally:
        reader.cancel()


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def kernel_echo(netns: str, host: str, data: bytes, timeout: float = 60.0) -> None:
    s = await kernel_connect(netns, host)
    try:
        got = await kernel_exchange(s, data, timeout)
    finally:
        s.close()
    assert len(got) == len(data)
    assert sha(got) == sha(data)


# -- kernel client -> aionetstack server ------------------------------------------------------

def _label(size: int) -> str:
    return f"{size >> 20}MB" if size >= 1 << 20 and not size % (1 << 20) else f"{size}B"


def _dev_id(kind: type[Link], offload: bool) -> str:
    return f"{'tap' if kind is link.Tap else 'tun'}-{'offload' if offload else 'plain'}"


_ECHO_SHAPES: list[tuple[int, int, type[Link]]] = [
    *((n, 4, link.Tun) for n in (0, 1, 1000, 65535, 1 << 20)),
    (1 << 20, 6, link.Tun), (1 << 20, 4, link.Tap), (1 << 20, 6, link.Tap),
]
ECHO_CASES = [
    *[pytest.param(size, fam, kind, off, id=f"{_label(size)}-v{fam}-{_dev_id(kind, off)}")
      for size, fam, kind in _ECHO_SHAPES for off in (True, False)],
    pytest.param(16 << 20, 4, link.Tun, True, id="16MB-v4-tun-offload"),
]


@pytest.mark.parametrize(("size", "family", "kind", "offload"), ECHO_CASES)
async def test_kernel_client_echo_integrity(netns: str, size: int, family: int,
                                            kind: type[link.Tun], offload: bool) -> None:
    _, saddr, _ = addrs(family)
    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(echo_handler, saddr, PORT)
        await kernel_echo(netns, saddr, blob(size), timeout=60)
        server.close()


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_half_close_then_stack_keeps_sending(netns: str, kind: type[link.Tun],
                                                          offload: bool) -> None:
    """The kernel shuts down its write side; the stack reads to EOF, then sends 300 KB."""
    up, down = blob(200_000, 1), blob(300_000, 2)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF
        received.set_result(data)
        await asyncio.sleep(0.2)  # the connection sits half-closed for a while
        writer.write(down)
        await writer.drain()
        writer.close()

    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(handler, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            got = await kernel_exchange(s, up, 30)
        finally:
            s.close()
        assert sha(await asyncio.wait_for(received, 5)) == sha(up)
        assert sha(got) == sha(down)
        server.close()


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_stack_write_eof_then_keeps_receiving(netns: str, kind: type[link.Tun],
                                                    offload: bool) -> None:
    """The stack sends a greeting and write_eof(); the kernel sees EOF, then sends 300 KB."""
    loop = asyncio.get_running_loop()
    greeting, up = blob(50_000, 3), blob(300_000, 4)
    received: asyncio.Future[bytes] = loop.create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        writer.write_eof()
        await writer.drain()
        received.set_result(await reader.read())  # still receiving after our FIN
        writer.close()

    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(handler, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            got = await asyncio.wait_for(recv_all(s), 10)  # ends at the stack's FIN
            assert sha(got) == sha(greeting)
            await asyncio.sleep(0.2)
            await asyncio.wait_for(loop.sock_sendall(s, up), 30)
            s.shutdown(socket.SHUT_WR)
            assert sha(await asyncio.wait_for(received, 30)) == sha(up)
            assert await asyncio.wait_for(loop.sock_recv(s, 10), 5) == b""
        finally:
            s.close()
        server.close()


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_stack_abort_resets_kernel(netns: str, kind: type[link.Tun],
                                         offload: bool) -> None:
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.transport.abort()

    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(handler, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        try:
            await loop.sock_sendall(s, b"hello")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(loop.sock_recv(s, 100), 5)
        finally:
            s.close()
        server.close()


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.got_data = asyncio.Event()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got_data.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_linger0_close_resets_stack(netns: str, kind: type[link.Tun],
                                                 offload: bool) -> None:
    loop = asyncio.get_running_loop()
    protocols: list[_Recorder] = []

    def factory() -> _Recorder:
        protocols.append(_Recorder())
        return protocols[-1]

    async with stack_on(netns, kind, offload) as stack:
        server = await stack.create_server(factory, STACK4, PORT)
        s = await kernel_connect(netns, STACK4)
        await loop.sock_sendall(s, b"x" * 1000)
        for _ in range(100):
            if protocols:
                break
            await asyncio.sleep(0.01)
        assert len(protocols) == 1
        await asyncio.wait_for(protocols[0].got_data.wait(), 5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # abortive close: the kernel sends RST
        exc = await asyncio.wait_for(protocols[0].lost, 5)
        assert isinstance(exc, ConnectionResetError), exc
        server.close()


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_fifty_concurrent_kernel_clients(netns: str, kind: type[link.Tun],
                                               offload: bool) -> None:
    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(echo_handler, STACK4, PORT)
        await asyncio.wait_for(asyncio.gather(
            *(kernel_echo(netns, STACK4, blob(100_000, i), timeout=60) for i in range(50))), 60)
        server.close()


# -- aionetstack client -> kernel server ----------------------------------------------------

async def kernel_server_exchange(lsock: socket.socket, down: bytes) -> bytes:
    """Accept one connection, send ``down`` while receiving to EOF; returns what arrived."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(lsock)
    conn.setblocking(False)
    try:
        return await kernel_exchange(conn, down, 60)
    finally:
        conn.close()


def kernel_listener(netns: str, family: int, port: int = PORT) -> socket.socket:
    kaddr, _, af = addrs(family)
    lsock = ns_socket(netns, af, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((kaddr, port))
    lsock.listen(16)
    return lsock


async def stack_client_exchange(stack: Stack, host: str, up: bytes,
                                timeout: float = 60.0) -> tuple[bytes, dict[str, Any]]:
    """Connect from the stack, send ``up`` and EOF while reading to EOF; returns the data read
    and the connection's ``tcp_info`` at the end."""
    reader, writer = await asyncio.wait_for(stack.open_connection(host, PORT), 10)

    async def send() -> None:
        writer.write(up)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        got = await asyncio.wait_for(reader.read(), timeout)
        await asyncio.wait_for(sender, timeout)
        # drain() returns once the endpoint holds the bytes (as with a kernel socket): wait
        # for the last ACK before reading the counters
        ep = writer.get_extra_info("endpoint")
        for _ in range(int(timeout * 100)):
            if not ep.send_buffered():
                break
            await asyncio.sleep(0.01)
        info: dict[str, Any] = writer.get_extra_info("tcp_info")
    finally:
        sender.cancel()
        writer.close()
    return got, info


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("kind", "offload"), [*TUN_LINKS, *TAP_LINKS[:1]])
async def test_stack_client_kernel_server(netns: str, kind: type[link.Tun], offload: bool,
                                          family: int) -> None:
    kaddr, _, _ = addrs(family)
    up, down = blob(1 << 20, 5), blob(1 << 20, 6)
    async with stack_on(netns, kind, offload) as stack:
        lsock = kernel_listener(netns, family)  # once the device has the kernel's address
        ktask = asyncio.create_task(kernel_server_exchange(lsock, down))
        try:
            got, info = await stack_client_exchange(stack, kaddr, up)
            kgot = await asyncio.wait_for(ktask, 30)
        finally:
            ktask.cancel()
            lsock.close()
        assert sha(got) == sha(down)
        assert sha(kgot) == sha(up)
        assert info["bytes_acked"] >= len(up)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_connect_to_closed_kernel_port_refused(netns: str, kind: type[link.Tun],
                                                     offload: bool, family: int) -> None:
    kaddr, _, _ = addrs(family)
    async with stack_on(netns, kind, offload) as stack:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(stack.open_connection(kaddr, 9), 5)


# -- option negotiation, as the kernel sees it ----------------------------------------------

async def ss_info(netns: str, peer: str, port: int) -> str:
    """The ``ss -tin`` details line of the kernel's connection to ``peer``:``port``."""
    ss = require_tool("ss")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, ss, "-tinH", "state", "established",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, (proc.returncode, text)
    want = f"[{peer}]:{port}" if ":" in peer else f"{peer}:{port}"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if want in line.split() and i + 1 < len(lines):
            return lines[i + 1]
    raise AssertionError(f"no established connection to {want} in:\n{text}")


TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4


def kernel_tcp_info(s: socket.socket) -> tuple[int, int, int, int]:
    """(tcpi_options, tcpi_snd_wscale, tcpi_rcv_wscale, tcpi_snd_mss) from getsockopt TCP_INFO."""
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    options, wscale = raw[5], raw[6]
    (snd_mss,) = struct.unpack_from("=I", raw, 16)
    return options, wscale & 0x0F, wscale >> 4, snd_mss


@pytest.mark.parametrize(("family", "mtu"), [(4, 1500), (6, 1500), (6, 1280)],
                         ids=["v4-mtu1500", "v6-mtu1500", "v6-mtu1280"])
@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_sees_negotiated_options(netns: str, kind: type[link.Tun], offload: bool,
                                              family: int, mtu: int) -> None:
    _, saddr, _ = addrs(family)
    loop = asyncio.get_running_loop()
    infos: list[dict[str, Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        infos.append(writer.get_extra_info("tcp_info"))
        await echo_handler(reader, writer)

    async with stack_on(netns, kind, offload, mtu=mtu) as stack:
        server = await stack.start_server(handler, saddr, PORT)
        s = await kernel_connect(netns, saddr)
        try:
            # some traffic both ways, so that the kernel's mss/rcvmss figures are settled
            await loop.sock_sendall(s, blob(100_000, 7))
            got = bytearray()
            while len(got) < 100_000:
                got += await asyncio.wait_for(loop.sock_recv(s, 1 << 16), 10)
            details = await ss_info(netns, saddr, PORT)
            options, snd_wscale, rcv_wscale, snd_mss = kernel_tcp_info(s)
        finally:
            s.close()
        server.close()
    # the kernel's MSS is the path's (MTU - IP - TCP headers) less 12 bytes of timestamps
    expect_mss = mtu - (20 if family == 4 else 40) - 20 - 12
    tokens = details.split()
    ws = re.search(r"wscale:(\d+),(\d+)", details)
    assert ws, details
    assert int(ws.group(1)) > 0  # the stack offered a window scale > 0 and the kernel took it
    assert (int(ws.group(1)), int(ws.group(2))) == (snd_wscale, rcv_wscale)
    mss = re.search(r"(?:^|\s)mss:(\d+)", details)
    assert mss and int(mss.group(1)) == expect_mss, details
    pmtu = re.search(r"pmtu:(\d+)", details)
    assert pmtu and int(pmtu.group(1)) == mtu, details
    # ss prints "ts" and "sack" from tcpi_options; the iproute2 6.1 ss on kernel 6.18 prints
    # neither even for kernel-to-kernel connections, so the kernel's TCP_INFO is the authority
    # and ss is held to it whenever it does print option flags
    assert options & TCPI_OPT_TIMESTAMPS, (options, details)
    assert options & TCPI_OPT_SACK, (options, details)
    assert options & TCPI_OPT_WSCALE, (options, details)
    assert snd_mss == expect_mss
    if "ts" in tokens or "sack" in tokens:
        assert "ts" in tokens and "sack" in tokens, details
    assert infos and infos[0]["snd_mss"] == expect_mss
