"""examples/proxy_server.py runs as written: kernel clients in one namespace reach servers in
another through it (the example runs in the middle namespace, see ``proxy_topo``)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from .proxy_topo import SRV4, SRV4B, SRV6, echo_servers, ip, make_topo, tcp_roundtrip, udp_cone

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "proxy_server.py"


async def test_proxy_server_example() -> None:
    async with make_topo() as t, echo_servers(t.server):
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", t.proxy, sys.executable, str(EXAMPLE), "--create",
            "--netns", t.client, "--name", "ans0", "--seconds", "60",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's package
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if b"proxying" not in line:
                assert proc.stderr is not None
                raise AssertionError((line + await proc.stderr.read()).decode())
            await ip("-n", t.client, "route", "add", "198.19.0.0/16", "dev", "ans0")
            await ip("-n", t.client, "-6", "route", "add", "fd00:19::/48", "dev", "ans0")
            await tcp_roundtrip(t.client, SRV4, 7000, 500_000)
            await tcp_roundtrip(t.client, SRV6, 7000, 500_000)
            await udp_cone(t.client, [(SRV4, 5300), (SRV4B, 5300)])
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
