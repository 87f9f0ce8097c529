"""``aionetstack serve`` on a TUN device, exercised by kernel clients in a namespace."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.utils import rdpcap

from aionetstack.services import chargen_line

from .conftest import ns_socket, require_tool, run_cmd

STACK4, STACK6 = "198.18.0.2", "fd00::2"


@pytest.fixture
async def served(netns: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aionetstack", "serve", "--tun", "ans0", "--create",
        "--netns", netns, "--peer-address", "198.18.0.1/24", "--peer-address", "fd00::1/64",
        "--address", f"{STACK4}/24", "--address", f"{STACK6}/64",
        "--echo", "7", "--discard", "9", "--chargen", "19", "--http", "80",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"serving" in line, line
    try:
        yield netns
    finally:
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 20)
        assert rc == 0  # a clean Ctrl-C


async def _tcp(netns: str, host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns_socket(netns, fam, socket.SOCK_STREAM)
    await asyncio.get_running_loop().sock_connect(s, (host, port))
    return s


@pytest.mark.parametrize("host", [STACK4, STACK6])
async def test_echo_integrity(served: str, host: str) -> None:
    loop = asyncio.get_running_loop()
    s = await _tcp(served, host, 7)
    data = os.urandom(2_000_000)
    received = bytearray()

    async def reader() -> None:
        while True:
            chunk = await loop.sock_recv(s, 65536)
            if not chunk:
                return
            received.extend(chunk)

    task = asyncio.create_task(reader())
    await loop.sock_sendall(s, data)
    s.shutdown(socket.SHUT_WR)
    await asyncio.wait_for(task, 60)
    s.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


async def test_discard_closes_after_fin(served: str) -> None:
    loop = asyncio.get_running_loop()
    s = await _tcp(served, STACK4, 9)
    await loop.sock_sendall(s, b"x" * 1_000_000)
    s.shutdown(socket.SHUT_WR)
    assert await asyncio.wait_for(loop.sock_recv(s, 100), 20) == b""  # server closed
    s.close()


async def test_chargen_volume_and_pattern(served: str) -> None:
    loop = asyncio.get_running_loop()
    s = await _tcp(served, STACK6, 19)
    got = bytearray()
    while len(got) < 1_000_000:
        chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 20)
        assert chunk
        got.extend(chunk)
    s.close()
    lines = bytes(got).split(b"\r\n")[:-1]
    assert len(lines) > 10_000
    for i, line in enumerate(lines):
        assert line + b"\r\n" == chargen_line(i)


async def test_udp_echo_and_chargen(served: str) -> None:
    loop = asyncio.get_running_loop()
    u = ns_socket(served, socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((STACK4, 7))
    await loop.sock_sendall(u, b"hello udp")
    assert await asyncio.wait_for(loop.sock_recv(u, 100), 10) == b"hello udp"
    u.close()
    u6 = ns_socket(served, socket.AF_INET6, socket.SOCK_DGRAM)
    u6.connect((STACK6, 19))
    await loop.sock_sendall(u6, b"?")
    reply = await asyncio.wait_for(loop.sock_recv(u6, 1000), 10)
    assert 0 < len(reply) <= 512 and reply.startswith(chargen_line(1)[:72])
    u6.close()


async def test_curl_http(served: str) -> None:
    curl = require_tool("curl")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", served, curl, "-sS", "-i", "--max-time", "10",
        f"http://{STACK4}/", f"http://[{STACK6}]/", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert text.count("HTTP/1.1 200") == 2
    assert "aionetstack is serving" in text
    # keep-alive: two requests on one connection
    loop = asyncio.get_running_loop()
    s = await _tcp(served, STACK4, 80)
    req = f"GET / HTTP/1.1\r\nHost: {STACK4}\r\n\r\n".encode()
    await loop.sock_sendall(s, req + req.replace(b"GET /", b"GET /missing"))
    data = b""
    while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"not found\n"):
        chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 10)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 404" in data
    s.close()


# -- device errors, -v, --pcap and Ctrl-C of ping ------------------------------------------------

async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aionetstack", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_device_busy_is_one_line(served: str) -> None:
    # ans0 is held by the serving process (single queue): a second attach gets EBUSY
    rc, out, err = await _cli("serve", "--tun", "ans0", "--netns", served,
                              "--address", "198.18.0.3/24", "--echo", "7")
    assert rc == 1, out + err
    assert err == "aionetstack: error: device ans0 is busy (attached elsewhere)\n"


async def test_missing_device_is_one_line_and_not_created(netns: str) -> None:
    rc, out, err = await _cli("serve", "--tun", "ansnone0", "--netns", netns,
                              "--address", "198.18.0.2/24", "--echo", "7")
    assert rc == 1, out + err
    assert err == (f"aionetstack: error: no device named ansnone0 in namespace {netns} "
                   f"(give --create to create it)\n")
    rc, links = await run_cmd("ip", "-n", netns, "link", "show")
    assert rc == 0 and "ansnone0" not in links


async def test_proxy_missing_device_is_one_line_and_not_created(netns: str) -> None:
    rc, out, err = await _cli("proxy", "--tun", "ansnone1", "--netns", netns,
                              "--allow", "198.18.0.0/15")
    assert rc == 1, out + err
    assert err == (f"aionetstack: error: no device named ansnone1 in namespace {netns} "
                   f"(give --create to create it)\n")
    rc, links = await run_cmd("ip", "-n", netns, "link", "show")
    assert rc == 0 and "ansnone1" not in links


async def test_create_existing_device_is_one_line(served: str) -> None:
    rc, out, err = await _cli("serve", "--tun", "ans0", "--create", "--netns", served,
                              "--address", "198.18.0.3/24", "--echo", "7")
    assert rc == 1, out + err
    assert err == "aionetstack: error: device ans0 already exists (drop --create to attach to it)\n"


async def test_serve_verbose_logs_connections_and_pcap(netns: str, tmp_path: Path) -> None:
    pcap = tmp_path / "serve.pcap"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aionetstack", "serve", "-v", "--pcap", str(pcap),
        "--tun", "ans1", "--create", "--netns", netns, "--peer-address", "198.18.0.1/24",
        "--address", f"{STACK4}/24", "--echo", "7", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"serving echo 7" in line, line
        loop = asyncio.get_running_loop()
        s = await _tcp(netns, STACK4, 7)
        await loop.sock_sendall(s, b"hello tcp")
        assert await asyncio.wait_for(loop.sock_recv(s, 100), 10) == b"hello tcp"
        client = s.getsockname()
        s.close()
        u = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
        u.connect((STACK4, 7))
        await loop.sock_sendall(u, b"hello udp")
        assert await asyncio.wait_for(loop.sock_recv(u, 100), 10) == b"hello udp"
        u.close()
        log = b""
        while b"closed" not in log:
            log += await asyncio.wait_for(proc.stderr.readline(), 10)
    finally:
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), 20)
        rc = await asyncio.wait_for(proc.wait(), 20)
    text = (log + rest).decode()
    assert rc == 0, text
    assert "Traceback" not in text
    peer = f"{client[0]}:{client[1]}"
    assert f"tcp echo: connection from {peer} to port 7" in text
    assert f"tcp echo: {peer} closed, 9 bytes received" in text
    assert "udp echo: first datagram from 198.18.0.1:" in text
    packets = rdpcap(str(pcap))
    tcp = [p for p in packets if TCP in p and 7 in (p[TCP].sport, p[TCP].dport)]
    assert any(bytes(p[TCP].payload) == b"hello tcp" for p in tcp)
    assert {"S", "SA"} <= {str(p[TCP].flags) for p in tcp}
    assert any(UDP in p and bytes(p[UDP].payload) == b"hello udp" for p in packets)


async def test_ping_ctrl_c_prints_summary(netns: str, tmp_path: Path) -> None:
    pcap = tmp_path / "ping.pcap"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aionetstack", "ping", "--pcap", str(pcap),
        "--tun", "ans2", "--create", "--netns", netns, "--peer-address", "198.18.0.1/24",
        "--address", f"{STACK4}/24", "-c", "1000", "-i", "0.2", "198.18.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), 30) for _ in range(2)]
        assert all(b"reply from 198.18.0.1: seq=" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out + err
    assert err == b""
    summary = out.decode().splitlines()[-1]
    sent, _, received, _ = summary.split()
    assert summary == f"{sent} sent, {received} received" and int(received) >= 2
    packets = rdpcap(str(pcap))
    assert sum(1 for p in packets if ICMP in p and p[ICMP].type == 8) >= 2
    assert sum(1 for p in packets if ICMP in p and p[ICMP].type == 0) >= 2
