"""pcap wrapper: transparent behaviour, caps, and files readable by scapy and tshark."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from aionetstack import link
from aionetstack.clock import ManualClock
from aionetstack.link import PcapLink


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.wakeups: list[float] = []

    def link_deliver(self, frame: memoryview) -> None:
        self.frames.append(bytes(frame))

    def link_wakeup(self, at: float) -> None:
        self.wakeups.append(at)


def udp_packet(i: int, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    return bytes(IP(src=src, dst=dst) / UDP(sport=1000 + i, dport=53) / (b"x" * (i + 1)))


def exchange(tmp_path: Path, *, l2: bool) -> tuple[PcapLink, list[tuple[float, bytes]]]:
    """a (captured) sends 5 frames at 1 ms intervals; b answers each; return what a saw."""
    clock = ManualClock(1_700_000_000.25)
    a_inner, b = link.pipe(l2=l2, delay=0.010, seed=1)
    a = link.pcap(a_inner, tmp_path / "cap.pcap")
    ra, rb = Recorder(), Recorder()
    a.attach(ra, clock)
    b.attach(rb, clock)
    expected: list[tuple[float, bytes]] = []
    for i in range(5):
        pkt = udp_packet(i)
        f = bytes(Ether(src=a.caps.mac, dst=b.caps.mac) / IP(pkt)) if l2 else pkt
        expected.append((clock(), f))
        a.send(f)
        clock.advance(0.001)
    clock.set(1_700_000_000.25 + 0.010 + 0.004)
    assert b.poll() is None
    assert len(rb.frames) == 5
    for i in range(5):
        pkt = udp_packet(i, src="10.0.0.2", dst="10.0.0.1")
        f = bytes(Ether(src=b.caps.mac, dst=a.caps.mac) / IP(pkt)) if l2 else pkt
        b.send(f)
        expected.append((clock() + 0.010, f))
    assert ra.wakeups == [pytest.approx(clock() + 0.010)]  # wake-ups pass through the tap
    clock.advance(0.010)
    assert a.poll() is None
    assert ra.frames == [f for _, f in expected[5:]]
    a.close()
    return a, expected


@pytest.mark.parametrize("l2", [False, True])
def test_scapy_reads_capture(tmp_path: Path, l2: bool) -> None:
    a, expected = exchange(tmp_path, l2=l2)
    pkts = rdpcap(str(tmp_path / "cap.pcap"))
    assert len(pkts) == 10
    assert [bytes(p) for p in pkts] == [f for _, f in expected]
    for p, (t, _) in zip(pkts, expected, strict=True):
        assert abs(float(p.time) - t) < 1e-6
    first = pkts[0]
    if l2:
        assert isinstance(first, Ether) and first.haslayer(UDP)
    else:
        assert isinstance(first, IP) and first.haslayer(UDP)
    assert a.stats()["pcap_frames"] == 10
    assert a.stats()["tx_frames"] == 5 and a.stats()["rx_frames"] == 5


def test_header_written_at_construction_and_linktype(tmp_path: Path) -> None:
    a3, _ = link.pipe()
    p3 = link.pcap(a3, tmp_path / "l3.pcap")
    a2, _ = link.pipe(l2=True)
    p2 = link.pcap(a2, str(tmp_path / "l2.pcap"), snaplen=1000)
    for path, linktype, snaplen in (("l3.pcap", 101, 262144), ("l2.pcap", 1, 1000)):
        p3.flush()
        p2.flush()
        head = (tmp_path / path).read_bytes()
        assert len(head) == 24
        magic, major, minor, _, _, snap, lt = struct.unpack("<IHHiIII", head)
        assert (magic, major, minor, snap, lt) == (0xA1B23C4D, 2, 4, snaplen, linktype)
    p3.close()
    p2.close()


def test_caps_force_checksums(tmp_path: Path) -> None:
    inner, _ = link.pipe(l2=True, mtu=9000, seed=2)
    assert inner.caps.tx_checksum_offload and inner.caps.rx_checksum_trusted
    p = link.pcap(inner, tmp_path / "c.pcap")
    assert p.caps.tx_checksum_offload is False
    assert p.caps.rx_checksum_trusted is True
    assert (p.caps.mtu, p.caps.l2, p.caps.mac) == (9000, True, inner.caps.mac)
    lossy, _ = link.pipe(corrupt=0.5)
    q = link.pcap(lossy, tmp_path / "d.pcap")
    assert q.caps.rx_checksum_trusted is False
    p.close()
    q.close()


def test_snaplen_truncates_and_close_closes_inner(tmp_path: Path) -> None:
    clock = ManualClock(3.5)
    inner, b = link.pipe(mtu=9000)
    p = link.pcap(inner, tmp_path / "s.pcap", snaplen=100)
    p.attach(Recorder(), clock)
    rb = Recorder()
    b.attach(rb, clock)
    p.send(bytes(range(200)) * 5)
    b.poll()
    assert rb.frames == [bytes(range(200)) * 5]  # the link itself is not truncated
    p.close()
    assert p.closed and inner.closed and b.closed
    p.send(b"after close")  # dropped by the inner link, not written
    p.close()  # idempotent
    assert inner.stats()["dropped_closed"] == 1
    data = (tmp_path / "s.pcap").read_bytes()
    sec, nsec, incl, orig = struct.unpack("<IIII", data[24:40])
    assert (sec, nsec, incl, orig) == (3, 500_000_000, 100, 1000)
    assert data[40:] == bytes(range(100))
    pkts = rdpcap(str(tmp_path / "s.pcap"))
    assert len(pkts) == 1 and len(bytes(pkts[0])) == 100


def test_tshark_reads_capture(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("AIONETSTACK_REQUIRE_PRIVILEGED") == "1":
            pytest.fail("tshark is required (AIONETSTACK_REQUIRE_PRIVILEGED=1) but not installed")
        pytest.skip("tshark not installed")
    _, expected = exchange(tmp_path, l2=True)
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(tmp_path / "cap.pcap"),
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "udp.srcport",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line.strip()]
    assert [int(r[0]) for r in rows] == [len(f) for _, f in expected]
    assert [int(r[1]) for r in rows] == [1000 + i for i in range(5)] * 2
    for r, (t, _) in zip(rows, expected, strict=True):
        assert abs(float(r[2]) - t) < 1e-6
