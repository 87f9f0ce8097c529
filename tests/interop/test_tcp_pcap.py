"""A kernel interop session recorded by the pcap link opens cleanly in tshark.

The TUN device runs without offloads (every frame on the wire is a complete packet with real
checksums), wrapped by ``link.pcap``.  A kernel client echoes 100 KB over IPv4 and over IPv6;
tshark, with checksum validation switched on for IP, TCP and UDP, must report no bad checksum,
no malformed packet, and must decode the SYN and SYN-ACK of both connections with their options.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aionetstack import link
from aionetstack.link.base import Link

from .conftest import require_tool
from .test_tcp_kernel import PORT, STACK4, STACK6, blob, echo_handler, kernel_echo, stack_on

pytestmark = pytest.mark.timeout(90)

CHECKSUM_PREFS = ("-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                  "-o", "udp.check_checksum:TRUE")


async def _run(*argv: str, timeout: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, (argv, err.decode(errors="replace"))
    return out.decode(errors="replace")


async def test_interop_session_pcap_is_clean(netns: str, tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    path = tmp_path / "session.pcap"
    wrapped: list[link.PcapLink] = []

    def wrap(dev: Link) -> Link:
        wrapped.append(link.pcap(dev, path))
        return wrapped[0]

    async with stack_on(netns, link.Tun, False, wrap=wrap) as stack:
        server = await stack.start_server(echo_handler, None, PORT)
        for host in (STACK4, STACK6):
            await kernel_echo(netns, host, blob(100_000, 31), timeout=30)
        await asyncio.sleep(0.2)  # the last ACKs of the closes
        server.close()
        assert wrapped[0].stats()["pcap_frames"] > 2 * 2 * 100_000 // 1500
    assert wrapped[0].closed  # closing the stack closed (and flushed) the capture
    assert path.stat().st_size > 200_000 * 2  # both echoes, both directions

    # the preference names exist in this tshark (a typo would silently check nothing)
    prefs = await _run(tshark, "-G", "defaultprefs")
    for name in ("tcp.check_checksum", "ip.check_checksum", "udp.check_checksum"):
        assert name in prefs

    verbose = await _run(tshark, "-n", "-r", str(path), *CHECKSUM_PREFS, "-V")
    for bad in ("incorrect", "Bad checksum", "Checksum Status: Bad", "Malformed",
                "[Expert Info (Error"):
        assert bad not in verbose, _context(verbose, bad)
    assert "Checksum Status: Good" in verbose  # validation really was on
    assert "Internet Protocol Version 6" in verbose and "Internet Protocol Version 4" in verbose

    # SYN and SYN-ACK of both connections, with MSS, window scale, SACK-permitted, timestamps
    fields = await _run(
        tshark, "-n", "-r", str(path), *CHECKSUM_PREFS, "-Y", "tcp.flags.syn == 1",
        "-T", "fields", "-E", "separator=|", "-e", "tcp.flags.ack", "-e", "tcp.srcport",
        "-e", "tcp.options.mss_val", "-e", "tcp.options.wscale.shift",
        "-e", "tcp.options.sack_perm", "-e", "tcp.options.timestamp.tsval",
        "-e", "tcp.checksum.status")
    rows = [line.split("|") for line in fields.splitlines() if line.strip()]
    syns = [r for r in rows if r[0] in ("0", "False")]
    synacks = [r for r in rows if r[0] in ("1", "True")]
    assert len(syns) == 2 and len(synacks) == 2, fields
    for r in rows:
        _ack, _sport, mss, wscale, sack_perm, tsval, status = r
        assert mss in ("1460", "1440"), r
        assert wscale.isdigit(), r
        assert sack_perm, r
        assert tsval.isdigit(), r
        assert status in ("1", "Good"), r  # PROTO_CHECKSUM_E_GOOD (0 bad, 2 unverified)
    assert {r[1] for r in synacks} == {str(PORT)}  # the stack's SYN-ACKs


def _context(text: str, needle: str, width: int = 1500) -> str:
    i = text.find(needle)
    return text[max(0, i - width):i + 300]
