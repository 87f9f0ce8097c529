"""examples/tun_echo.py runs as written, in a namespace the test creates."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from .conftest import ns_socket

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tun_echo.py"


async def test_tun_echo_example(netns: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--create", "--netns", netns, "--name", "ans0",
        "--seconds", "30", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"echo on" in line, line
        loop = asyncio.get_running_loop()
        for fam, host in ((socket.AF_INET, "198.18.0.2"), (socket.AF_INET6, "fd00::2")):
            s = ns_socket(netns, fam, socket.SOCK_STREAM)
            await asyncio.wait_for(loop.sock_connect(s, (host, 7)), 10)
            data = os.urandom(100_000)
            await loop.sock_sendall(s, data)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := await asyncio.wait_for(loop.sock_recv(s, 65536), 10):
                got.extend(chunk)
            s.close()
            assert bytes(got) == data
    finally:
        proc.terminate()
        await proc.wait()
