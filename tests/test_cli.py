"""The ``python -m aionetstack`` command line: help, exit codes, the demo and its capture."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import NoPayload, Packet
from scapy.utils import rdpcap

from aionetstack.__main__ import main

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "aionetstack", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=REPO, env=env, check=False)


def table_rows(output: str) -> dict[str, list[str]]:
    """The demo's table: run label -> cells (rich draws '┃' in the header, '│' in the body)."""
    rows = {}
    for line in output.splitlines():
        line = line.replace("┃", "│").strip()
        if line.count("│") >= 3:
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


# -- help and exit codes ---------------------------------------------------------------------

def test_help_exits_zero() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: aionetstack" in proc.stdout
    assert "demo" in proc.stdout


def test_demo_help_exits_zero() -> None:
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--datagrams", "--seed", "--pcap"):
        assert option in proc.stdout


def test_no_command_exits_two_with_help() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "usage: aionetstack" in out
    assert "demo" in out
    assert "Traceback" not in out


def test_bad_arguments_exit_two() -> None:
    for args in (("demo", "--datagrams", "many"), ("no-such-command",)):
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        assert "usage:" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: aionetstack" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


def test_unwritable_pcap_path_is_a_clean_error(tmp_path: Path) -> None:
    proc = run_cli("demo", "--datagrams", "5", "--pcap", str(tmp_path / "missing" / "x.pcap"))
    assert proc.returncode == 1
    assert "aionetstack: error:" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the demo ----------------------------------------------------------------------------------

def test_demo_prints_the_table() -> None:
    proc = run_cli("demo", "--datagrams", "200")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "UDP echo between two stacks" in out
    assert "every delivered datagram was byte-identical" in out
    rows = table_rows(out)
    header = rows.pop("run")
    assert header[:5] == ["run", "ping", "sent", "echoed", "corrupt-delivered"]
    clean = rows.pop("clean link")
    (lossy_label,) = rows
    assert lossy_label.startswith("10% loss")
    lossy = rows[lossy_label]
    col = {name: i for i, name in enumerate(header)}
    assert clean[col["sent"]] == "200" and lossy[col["sent"]] == "200"
    assert clean[col["echoed"]] == "200"
    assert 120 <= int(lossy[col["echoed"]]) < 200
    assert clean[col["corrupt-delivered"]] == "0" and lossy[col["corrupt-delivered"]] == "0"
    # two pings per run, IPv4 then IPv6
    assert len(re.findall(r"[\d.]+ ms", clean[col["ping"]])) == 2
    assert len(re.findall(r"[\d.]+ ms", lossy[col["ping"]])) >= 1


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "demo.pcap"
    proc = run_cli("demo", "--datagrams", "100", "--pcap", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"capture written to {path}" in proc.stdout.replace("\n", "")
    return path


def _layers(pkt: Packet) -> list[Packet]:
    out = []
    layer: Packet = pkt
    while not isinstance(layer, NoPayload):
        out.append(layer)
        layer = layer.payload
    return out


def _checksums(pkt: Packet) -> list[tuple[str, int]]:
    return [(str(layer.name), layer.getfieldval(f)) for layer in _layers(pkt)
            for f in ("chksum", "cksum") if f in layer.fields]


def _bad_checksums(frame: bytes) -> list[tuple[str, int, int]]:
    """Layers of ``frame`` whose checksum differs from the one scapy computes."""
    pkt = Ether(frame)
    rebuilt = Ether(frame)
    for layer in _layers(rebuilt):
        for f in ("chksum", "cksum"):
            if f in layer.fields and not (isinstance(layer, UDP) and layer.chksum == 0):
                layer.setfieldval(f, None)  # None: scapy fills it in
    fresh = _checksums(Ether(bytes(rebuilt)))
    return [(name, got, want) for (name, got), (_, want) in zip(_checksums(pkt), fresh,
                                                                  strict=True)
            if got != want]


def test_demo_capture_is_readable_by_scapy(capture: Path) -> None:
    packets = rdpcap(str(capture))
    assert all(isinstance(p, Ether) for p in packets)
    arp_ops = {p[ARP].op for p in packets if ARP in p}
    assert arp_ops == {1, 2}  # who-has and is-at
    assert any(ICMPv6ND_NS in p for p in packets)
    assert any(ICMPv6ND_NA in p for p in packets)
    assert any(ICMP in p and p[ICMP].type == 8 for p in packets)
    assert any(ICMP in p and p[ICMP].type == 0 for p in packets)
    assert any(ICMPv6EchoRequest in p for p in packets)
    assert any(ICMPv6EchoReply in p for p in packets)
    udp = [p for p in packets if UDP in p and IP in p]
    assert len(udp) == 200  # the clean run: 100 out, 100 echoed
    assert all(IPv6 not in p for p in udp)
    bad = {i: b for i, p in enumerate(packets) if (b := _bad_checksums(bytes(p)))}
    assert bad == {}


def test_scapy_checksum_check_catches_damage(capture: Path) -> None:
    # the checker above must be able to fail: damage one byte of each checksummed kind
    packets = rdpcap(str(capture))
    for kind in (ARP, ICMP, ICMPv6ND_NS, UDP):
        frame = bytearray(bytes(next(p for p in packets if kind in p)))
        frame[-1] ^= 0x01
        if kind is ARP:  # ARP has no checksum; its damage is invisible by design
            assert _bad_checksums(bytes(frame)) == []
        else:
            assert _bad_checksums(bytes(frame)) != [], kind


def _tshark() -> str:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("AIONETSTACK_REQUIRE_PRIVILEGED") == "1":
            pytest.fail("tshark is required (AIONETSTACK_REQUIRE_PRIVILEGED=1) but not installed")
        pytest.skip("tshark not installed")
    return tshark


def _checksum_prefs(tshark: str) -> list[str]:
    """``-o proto.check_checksum:TRUE`` for every such preference this tshark has."""
    prefs = subprocess.run([tshark, "-G", "defaultprefs"], capture_output=True, text=True,
                           timeout=TIMEOUT, check=True).stdout
    names = set(re.findall(r"^#?\s*((?:ip|ipv6|udp|tcp|icmp|icmpv6)\.check_checksum):", prefs,
                           re.MULTILINE))
    assert {"ip.check_checksum", "udp.check_checksum", "tcp.check_checksum"} <= names
    args = []
    for name in sorted(names):
        args += ["-o", f"{name}:TRUE"]
    return args


def test_tshark_finds_no_bad_checksum_or_malformed_frame(capture: Path) -> None:
    tshark = _tshark()
    prefs = _checksum_prefs(tshark)
    proc = subprocess.run([tshark, "-r", str(capture), *prefs, "-V"], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Frame 1:" in out
    for marker in ("incorrect", "[Checksum Status: Bad]", "Status: Bad", "Malformed",
                   "Bad checksum"):
        lines = [line for line in out.splitlines() if marker.lower() in line.lower()]
        assert lines == [], lines[:5]
    good = out.count("[Checksum Status: Good]") + out.count("[Header checksum status: Good]")
    assert good >= 200  # IP headers, the pings, NDP and the stack's own UDP were all checked
    summary = subprocess.run([tshark, "-r", str(capture), *prefs], capture_output=True,
                             text=True, timeout=TIMEOUT, check=True).stdout
    for what in ("ARP", "Neighbor Solicitation", "Neighbor Advertisement", "Echo (ping) request",
                 "Echo (ping) reply"):
        assert what in summary
