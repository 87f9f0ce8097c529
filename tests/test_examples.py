"""Every example that needs no device runs as written (tun_echo: tests/interop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["echo_server.py", "http_client.py", "embed_packets.py",
                                  "lossy_network.py"])
def test_example_runs(name: str) -> None:
    r = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    expect = {
        "echo_server.py": "hello over a userspace TCP/IP stack",
        "http_client.py": "you asked for /hello",
        "embed_packets.py": "PACKETS IN, DATA OUT",
        "lossy_network.py": "50/50 requests answered",
    }[name]
    assert expect in r.stdout
