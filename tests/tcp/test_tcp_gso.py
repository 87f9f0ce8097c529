"""TCP segmentation offload: with ``caps.gso_max_size`` the sender emits super-segments.

The engine hands the link segments of up to 64 KiB (a whole number of MSS-sized payloads, the
tail of the queue excepted) through ``Link.send_gso``; an unimpaired offload pipe carries them
whole (veth-style, the peer accepts them like GRO packets), an impaired one and any link
without offload cut them in software, so no packet on the wire exceeds the MTU.  The captured
wire packets are checked by scapy.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from tcp_helpers import Pair
from test_tcp_transfer import pump

from aionetstack.errors import ConnectStarted, WouldBlock
from aionetstack.link import pcap, pipe
from aionetstack.link.base import Link
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint, TcpState, install_tcp

ADDRS = {4: ("198.18.0.1", "198.18.0.2", 24), 6: ("fd00::1", "fd00::2", 64)}


def make(family: int, *, l2: bool = False, wrap_a: Path | None = None, gso: bool = True,
         **kw: object) -> Pair:
    """Two stacks on an offload pipe (``gso=False``: a plain one; ``wrap_a``: capture a's side
    to that file)."""
    net = VirtualNetwork(seed=7)
    a, b = net.stack(), net.stack()
    ea, eb = pipe(seed=7, l2=l2 or family == 6, gso=gso, **kw)  # type: ignore[arg-type]
    la: Link = pcap(ea, wrap_a) if wrap_a is not None else ea
    A, B, plen = ADDRS[family]
    a.add_nic(la, [f"{A}/{plen}"])
    b.add_nic(eb, [f"{B}/{plen}"])
    return Pair(net, a, b, install_tcp(a), install_tcp(b), (ea, eb))


def connect(p: Pair, family: int) -> tuple[TcpEndpoint, TcpEndpoint]:
    lst = p.tb.new_endpoint(family)
    lst.bind(None, 80)
    lst.listen(4)
    cli = p.ta.new_endpoint(family)
    with pytest.raises(ConnectStarted):
        cli.connect(ADDRS[family][1], 80)
    assert p.run(lambda: bool(lst.listen_queue and lst.listen_queue.accept_queue), 30)
    srv = lst.accept()
    assert p.run(lambda: cli.state is TcpState.ESTABLISHED, 30)
    return cli, srv


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("l2", [False, True])
def test_super_segments_cross_an_offload_pipe_whole(family: int, l2: bool) -> None:
    p = make(family, l2=l2)
    cli, srv = connect(p, family)
    mss = cli.snd.mss
    assert cli.snd.seg_max > 40 * mss and cli.snd.seg_max % mss == 0
    data = random.Random(family).randbytes(3_000_000)
    assert pump(p, cli, srv, data) == data
    st = p.links[0].stats()
    # far fewer frames than MSS-sized segments; the average data frame is a super-segment
    assert st["tx_frames"] < len(data) // mss // 10
    assert st["tx_bytes"] / st["tx_frames"] > 10 * mss
    assert cli.info()["retransmits"] == 0


def test_the_tail_and_a_window_limit_keep_segments_whole() -> None:
    """Every super-segment but the last of a write carries whole MSS payloads."""
    p = make(4)
    cli, srv = connect(p, 4)
    sizes: list[int] = []
    orig = cli.snd.emit

    def emit(seq: int, flags: int, payload: memoryview) -> None:
        sizes.append(len(payload))
        orig(seq, flags, payload)

    cli.snd.emit = emit  # type: ignore[method-assign]
    data = bytes(200_001)
    assert pump(p, cli, srv, data) == data
    mss = cli.snd.mss
    data_sizes = [n for n in sizes if n]
    assert sum(data_sizes) == len(data)
    assert all(n % mss == 0 for n in data_sizes[:-1])
    assert max(data_sizes) > mss


def test_impaired_offload_pipe_cuts_in_software_and_recovers() -> None:
    p = make(4, loss=0.02, delay=0.005, reorder=0.02)
    cli, srv = connect(p, 4)
    data = random.Random(3).randbytes(600_000)
    got = pump(p, cli, srv, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    st = p.links[0].stats()
    assert st.get("dropped_mtu", 0) == 0
    assert st["tx_bytes"] / st["tx_frames"] <= 1500  # nothing above the MTU on the wire
    assert cli.info()["retransmits"] > 0  # the loss was real and repaired


def test_capture_shows_mtu_sized_segments_with_valid_checksums(tmp_path: Path) -> None:
    scapy = pytest.importorskip("scapy.all")
    path = tmp_path / "gso.pcap"
    p = make(4, wrap_a=path)
    cli, srv = connect(p, 4)
    data = random.Random(5).randbytes(300_000)
    assert pump(p, cli, srv, data) == data
    cli.close()
    srv.close()
    p.run(lambda: cli.state in (TcpState.CLOSED, TcpState.TIME_WAIT), 30)
    for nic in p.a.nics.values():
        nic.link.close()  # flushes the capture
    packets = scapy.rdpcap(str(path))
    sent = [pk for pk in packets if pk.haslayer(scapy.TCP) and pk[scapy.IP].src == "198.18.0.1"]
    payload = b"".join(bytes(pk[scapy.TCP].payload) for pk in sent)
    assert payload == data
    for pk in sent:
        assert len(pk[scapy.IP]) <= 1500
        raw_ck = pk[scapy.TCP].chksum
        ip = pk[scapy.IP]
        ip[scapy.TCP].chksum = None
        assert scapy.IP(bytes(ip))[scapy.TCP].chksum == raw_ck  # scapy recomputes: identical


def test_super_segments_wait_for_address_resolution_as_ordinary_packets() -> None:
    """On an L2 link whose neighbour entry is gone, a super-segment is cut into packets that
    queue behind ARP like any other; the transfer goes on intact once it resolves."""
    p = make(4, l2=True)
    cli, srv = connect(p, 4)
    data = random.Random(9).randbytes(400_000)
    sent = cli.write(data[:100_000])
    nic = next(n for n in p.a.nics.values() if n.l2)
    assert nic.neigh4 is not None
    nic.neigh4.clear()  # forget the peer: the next super-segment meets an unresolved entry
    before = p.a.stats()["neighbour"].get("solicit-sent", 0)
    rest = data[sent:]
    got = bytearray()

    def step() -> bool:
        nonlocal rest
        if rest:
            try:
                n = cli.write(rest)
                rest = rest[n:]
            except WouldBlock:
                pass
            if not rest:
                cli.shutdown_write()
        while True:
            try:
                chunk = srv.read()
            except WouldBlock:
                break
            if not chunk:
                return True
            got.extend(chunk)
        return False

    assert p.run(step, 60)
    assert bytes(got) == data
    assert cli.info()["retransmits"] == 0  # queued behind ARP, not lost
    assert p.links[0].stats().get("dropped_mtu", 0) == 0
    assert p.a.stats()["neighbour"].get("solicit-sent", 0) > before  # it did resolve again


@pytest.mark.parametrize("family", [4, 6])
def test_software_gso_on_a_link_without_offload(family: int, tmp_path: Path) -> None:
    """A link without TSO still gets super-segments from TCP: the NIC cuts them (software
    GSO), so the wire carries MTU-sized packets with checksums scapy agrees with, and the
    receiver's GRO puts them back together."""
    scapy = pytest.importorskip("scapy.all")
    path = tmp_path / "sw-gso.pcap"
    p = make(family, gso=False, wrap_a=path)
    for nic in p.a.nics.values():
        nic.tx_offload = False  # fill every checksum (an intact pipe would let us skip them)
    for nic in p.b.nics.values():
        nic.rx_trusted = False  # and verify them all: GRO sums them per merge
    cli, srv = connect(p, family)
    mss = cli.snd.mss
    assert p.links[0].caps.gso_max_size == 0
    assert cli.snd.seg_max > 40 * mss and cli.snd.seg_max % mss == 0
    data = random.Random(11).randbytes(500_000)
    sent_before = p.a.stats()["tcp"]["sent"]
    assert pump(p, cli, srv, data) == data
    # "sent" counts packets on the wire, not the super-segments TCP handed down
    assert p.a.stats()["tcp"]["sent"] - sent_before >= len(data) // mss
    gro = next(n for n in p.b.nics.values() if n.link is p.links[1]).gro
    assert gro is not None and gro.stats["gro_packets"] > 10 * gro.stats["gro_merged"] > 0
    assert gro.stats["gro_bad_sum"] == 0
    for nic in p.a.nics.values():
        nic.link.close()  # flushes the capture
    ip_cls = scapy.IP if family == 4 else scapy.IPv6
    sent = [pk for pk in scapy.rdpcap(str(path))
            if pk.haslayer(scapy.TCP) and pk.haslayer(ip_cls) and pk[scapy.TCP].dport == 80]
    assert b"".join(bytes(pk[scapy.TCP].payload) for pk in sent) == data
    for pk in sent:
        ip = pk[ip_cls]
        assert len(ip) <= 1500
        raw_ck = ip[scapy.TCP].chksum
        ip[scapy.TCP].chksum = None
        assert ip_cls(bytes(ip))[scapy.TCP].chksum == raw_ck


def test_software_gso_can_be_turned_off() -> None:
    p = make(4, gso=False)
    for nic in p.a.nics.values():
        nic.software_gso = False
    cli, _ = connect(p, 4)
    assert cli.snd.seg_max == cli.snd.mss
