"""The ``python -m aionetstack`` command line: help, exit codes, errors, the demo, its capture."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
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

from aionetstack import demo
from aionetstack.__main__ import main
from aionetstack.clock import Clock
from aionetstack.link.base import LinkReceiver
from aionetstack.link.pipe import PipeEnd

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "aionetstack", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=REPO, env=env, check=False)


def table_rows(output: str) -> dict[str, list[str]]:
    """The demo's table: phase -> cells (rich's MINIMAL box separates cells with '│')."""
    rows = {}
    for line in output.splitlines():
        if line.count("│") >= 5:
            cells = [c.strip() for c in line.split("│")]
            if cells[0]:  # skip the first line of two-line headers
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
    for option in ("--size", "--quick", "--seed", "--pcap", "--verbose"):
        assert option in proc.stdout


def test_no_command_exits_two_with_help() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "usage: aionetstack" in out
    assert "demo" in out
    assert "Traceback" not in out


def test_bad_arguments_exit_two() -> None:
    for args in (("demo", "--size", "many"), ("demo", "--size", "0"), ("no-such-command",)):
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
    proc = run_cli("demo", "--quick", "--pcap", str(tmp_path / "missing" / "x.pcap"))
    assert proc.returncode == 1
    assert "aionetstack: error:" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the demo ----------------------------------------------------------------------------------

PHASES = ("ping", "tcp echo", "bulk clean", "bulk impaired")


def test_demo_quick_prints_the_table() -> None:
    t0 = time.monotonic()
    proc = run_cli("demo", "--quick", "-v")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 20, elapsed
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    assert "all integrity checks passed" in out
    # -v: the servers log each connection
    assert re.search(r"echo: connection from \[fd00::1\]:\d+ closed after 50000 bytes", out)
    assert re.search(r"bulk: connection from 198\.18\.0\.1:\d+ closed after 2000000 bytes", out)
    assert "impaired: 1% loss, 2% reorder, 0.1% corrupt, 5 ms" in out
    rows = table_rows(out)
    header = rows.pop("phase")
    assert header == ["phase", "data", "s", "MB/s", "segs", "trans", "ms", "integrity"]
    assert tuple(rows) == PHASES
    col = {name: i for i, name in enumerate(header)}
    assert rows["ping"][col["integrity"]] == "OK 4/4"
    assert rows["tcp echo"][col["integrity"]] == "OK 50/50"
    assert rows["bulk clean"][col["data"]] == "2.0 MB"
    assert rows["bulk impaired"][col["data"]] == "0.5 MB"
    for phase in PHASES:
        cells = rows[phase]
        assert float(cells[col["ms"]]) > 0, cells  # ping average / TCP srtt
        if phase == "ping":
            continue
        assert float(cells[col["MB/s"]]) > 0, cells
        assert int(cells[col["segs"]]) > 0, cells
        assert int(cells[col["trans"]]) >= 0, cells
    for phase in ("bulk clean", "bulk impaired"):
        assert rows[phase][col["integrity"]] == "OK sha256"
        # each data segment carries at most one MSS (1448 B): more segments than that
        data_segments = (2_000_000 if phase == "bulk clean" else 500_000) // 1448
        assert int(rows[phase][col["segs"]]) > data_segments
    # about 1% of ~580 segments are lost on the impaired link: TCP had to retransmit
    assert int(rows["bulk impaired"][col["trans"]]) > 0
    # a 5 ms one-way delay makes the RTT at least 10 ms
    assert float(rows["bulk impaired"][col["ms"]]) >= 10


def test_demo_integrity_failure_exits_nonzero(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Flip one payload byte of the first full-sized frame each stack B receives.

    The clean pipe trusts checksums (like a NIC with receive offload), so the damage reaches
    the application and the SHA-256 check must catch it; the impaired pipe corrupts frames,
    so the stack verifies checksums, drops the damaged frame and TCP resends it.
    """
    real_attach = PipeEnd.attach

    def attach(self: PipeEnd, receiver: LinkReceiver, clock: Clock) -> None:
        if not self.name.endswith(".b"):
            real_attach(self, receiver, clock)
            return
        damaged = False

        class Flip:
            def link_deliver(self, frame: memoryview) -> None:
                nonlocal damaged
                if not damaged and len(frame) >= 1500:
                    damaged = True
                    copy = bytearray(frame)
                    copy[-1] ^= 0x01  # the last byte of the TCP payload
                    frame = memoryview(copy)
                receiver.link_deliver(frame)

            def link_wakeup(self, at: float) -> None:
                receiver.link_wakeup(at)

        real_attach(self, Flip(), clock)

    monkeypatch.setattr(PipeEnd, "attach", attach)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "--quick", "--size", "300k"]) == 1
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["bulk clean"][-1] == "FAILED sha256"
    assert rows["bulk impaired"][-1] == "OK sha256"
    assert rows["ping"][-1].startswith("OK") and rows["tcp echo"][-1].startswith("OK")
    assert "bulk clean failed: the receiver's SHA-256 differs from the sender's" in out
    assert "1 integrity check(s) failed" in out


def test_demo_stalled_phase_fails(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A link that loses everything stalls the impaired transfer: a timeout, exit status 1."""
    monkeypatch.setattr(demo, "IMPAIRED", {"loss": 1.0})
    monkeypatch.setattr(demo, "PHASE_TIMEOUT", 1.0)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "--quick", "--size", "100k"]) == 1
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["bulk clean"][-1] == "OK sha256"
    assert rows["bulk impaired"][-1] == "FAILED timeout"
    assert "bulk impaired failed: not finished after 1 s" in out


def test_demo_ctrl_c_is_clean() -> None:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "aionetstack", "demo", "--size", "1G"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    try:
        assert proc.stdout is not None
        assert "aionetstack demo" in proc.stdout.readline()
        time.sleep(1.5)  # well into a phase
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, out + err
    assert err.strip() == "interrupted"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "demo.pcap"
    proc = run_cli("demo", "--quick", "--size", "100k", "--pcap", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"capture of the clean link written to {path}" in proc.stdout.replace("\n", "")
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
    tcp4 = [p for p in packets if TCP in p and IP in p]
    tcp6 = [p for p in packets if TCP in p and IPv6 in p]
    assert {p[TCP].dport for p in tcp6} >= {7}  # the echo phase, over IPv6
    assert {p[TCP].dport for p in tcp4} >= {5001}  # the bulk phase, over IPv4
    for seg in (tcp4, tcp6):
        flags = {str(p[TCP].flags) for p in seg}
        assert {"S", "SA"} <= flags and any("F" in f for f in flags)
    payload = sum(len(p[TCP].payload) for p in tcp4 if p[TCP].dport == 5001)
    assert payload >= 100_000  # every bulk byte crossed the captured link (plus retransmits)
    bad = {i: b for i, p in enumerate(packets) if (b := _bad_checksums(bytes(p)))}
    assert bad == {}


def test_scapy_checksum_check_catches_damage(capture: Path) -> None:
    # the checker above must be able to fail: damage one byte of each checksummed kind
    packets = rdpcap(str(capture))
    for kind in (ARP, ICMP, ICMPv6ND_NS, TCP):
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
    assert good >= 200  # IP headers, the pings, NDP and TCP were all checked
    summary = subprocess.run([tshark, "-r", str(capture), *prefs], capture_output=True,
                             text=True, timeout=TIMEOUT, check=True).stdout
    for what in ("ARP", "Neighbor Solicitation", "Neighbor Advertisement", "Echo (ping) request",
                 "Echo (ping) reply"):
        assert what in summary


# -- serve/ping: one-line errors, checked without touching the network ---------------------------
# Every case names "lo", which exists and is no TUN device: even if a check were lost, attaching
# fails (EINVAL) and nothing is created in this namespace.

SERVE = ("serve", "--tun", "lo", "--address", "198.18.0.2/24", "--echo", "7")


@pytest.mark.parametrize(("args", "message"), [
    (("serve", "--tun", "lo", "--address", "198.18.0.2", "--echo", "7"),
     "bad address '198.18.0.2' (expected ADDR/PREFIX"),
    (("serve", "--tun", "lo", "--address", "300.1.1.1/24", "--echo", "7"),
     "bad address '300.1.1.1/24'"),
    ((*SERVE, "--gateway", "nowhere"), "bad gateway 'nowhere'"),
    (("ping", "--tun", "lo", "--address", "198.18.0.2/24", "example.invalid"),
     "bad address to ping 'example.invalid'"),
    (("serve", "--tun", "lo", "--address", "198.18.0.2/24"), "nothing to serve"),
    ((*SERVE, "--http", "80000"), "bad port 80000 for --http (1-65535)"),
    ((*SERVE, "--peer-address", "198.18.0.1/24"), "--peer-address needs --create"),
    ((*SERVE, "--create", "--netns", "ans-no-such-namespace"),
     "no network namespace named 'ans-no-such-namespace'"),
])
def test_device_command_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("aionetstack: error: "), proc.stderr
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not os.path.exists("/run/netns/ans-no-such-namespace")


def test_create_without_root_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main([*SERVE, "--create"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aionetstack: error: creating lo needs root (CAP_NET_ADMIN)")
    assert "ip tuntap add lo mode tun user" in err
    assert err.count("\n") == 1


def test_attach_without_permission_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    real_open = os.open

    def fake_open(path: str, *args: int, **kwargs: int) -> int:
        if path == "/dev/net/tun":
            raise PermissionError(13, "Permission denied", path)  # as for a non-root user
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    assert main(list(SERVE)) == 1
    err = capsys.readouterr().err
    assert err == ("aionetstack: error: permission denied opening /dev/net/tun (run as root or "
                   "give the process CAP_NET_ADMIN)\n")


def test_no_dev_net_tun_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda p: False if p == "/dev/net/tun" else real_exists(p))
    assert main(list(SERVE)) == 1
    assert capsys.readouterr().err == ("aionetstack: error: /dev/net/tun does not exist (no "
                                       "TUN/TAP support on this machine)\n")


def test_device_help_lists_the_options() -> None:
    for command in ("serve", "ping"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0, proc.stderr
        for option in ("--tun", "--tap", "--address", "--create", "--peer-address", "--pcap",
                       "--verbose"):
            assert option in proc.stdout, (command, option)
