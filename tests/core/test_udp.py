"""UDP endpoints (RFC 768, RFC 1122 §4.1, RFC 8085) driven on virtual time."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
from core_helpers import PEER4, PEER6, STACK4, STACK6, assert_checksums, ip, to_stack, wired_stack
from scapy.layers.inet import IP, UDP, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from aionetstack import errors, link
from aionetstack.link.pcap import PcapLink
from aionetstack.stack.stack import CoreStack
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.udp import UdpEndpoint

A4, B4, A6, B6 = "198.18.0.1", "198.18.0.2", "fd00::1", "fd00::2"


def pair(
    *, l2: bool = False, seed: int = 1, tmp_path: Path | None = None, **impair: float
) -> tuple[VirtualNetwork, CoreStack, CoreStack]:
    net = VirtualNetwork(seed=seed)
    a, b = net.stack(), net.stack()
    ea, eb = link.pipe(l2=l2, seed=seed, **impair)  # type: ignore[arg-type]
    a.add_nic(link.pcap(ea, tmp_path / "a.pcap") if tmp_path else ea, [f"{A4}/24", f"{A6}/64"])
    b.add_nic(eb, [f"{B4}/24", f"{B6}/64"])
    return net, a, b


def capture(a: CoreStack, tmp_path: Path) -> list[Ether]:
    cap = a.nics[2].link
    assert isinstance(cap, PcapLink)
    cap.flush()
    return list(rdpcap(str(tmp_path / "a.pcap")))


def fam_addrs(family: int) -> tuple[str, str]:
    return (A4, B4) if family == 4 else (A6, B6)


def bound(s: CoreStack, family: int, port: int = 0, address: str | None = None,
          reuse: bool = False) -> UdpEndpoint:
    ep: UdpEndpoint = s.udp_endpoint(family)
    ep.reuse_address = reuse
    ep.bind(address, port)
    return ep


# -- binding --------------------------------------------------------------------------------------


def test_bind_port_zero_picks_a_random_ephemeral_port() -> None:
    net = VirtualNetwork(seed=1)
    a, b = net.stack(), net.stack()
    pa = bound(a, 4).local[1]  # type: ignore[index]
    pb = bound(b, 4).local[1]  # type: ignore[index]
    assert 32768 <= pa <= 60999 and 32768 <= pb <= 60999
    assert pa != pb  # different seeds, different choices
    # the same seed replays the same choice
    again = VirtualNetwork(seed=1).stack()
    assert bound(again, 4).local[1] == pa  # type: ignore[index]
    ports = [bound(a, 4).local[1] for _ in range(50)]  # type: ignore[index]
    assert len(set([*ports, pa])) == 51
    assert all(32768 <= p <= 60999 for p in ports)
    assert ports != sorted(ports)  # not sequential
    assert len(a.ports) == 51


def test_bind_results_and_wildcard() -> None:
    net, a, b = pair()
    ep4 = bound(b, 4, 7000)
    assert ep4.local == (bytes(4), 7000)
    assert ep4.bound_address is None
    ep6 = bound(b, 6, 7000)  # another family: no conflict
    assert ep6.local == (bytes(16), 7000)
    b.add_address("nic2", "198.18.0.3/24")  # a second address on b's NIC
    c = a.udp_endpoint(4)
    c.sendto(b"to .2", (B4, 7000))
    c.sendto(b"to .3", ("198.18.0.3", 7000))
    c6 = a.udp_endpoint(6)
    c6.sendto(b"six", (B6, 7000))
    net.run(duration=0.1)
    assert ep4.recvfrom() == (b"to .2", (ip(A4), c.local[1]))  # type: ignore[index]
    assert ep4.recvfrom() == (b"to .3", (ip(A4), c.local[1]))  # type: ignore[index]
    assert ep6.recvfrom() == (b"six", (ip(A6), c6.local[1]))  # type: ignore[index]


def test_bind_specific_address() -> None:
    net, a, b = pair()
    b.add_address(2, "198.18.0.3/24")
    only2 = bound(b, 4, 7001, B4)
    assert only2.local == (ip(B4), 7001)
    c = a.udp_endpoint(4)
    c.sendto(b"hit", (B4, 7001))
    c.sendto(b"miss", ("198.18.0.3", 7001))
    net.run(duration=0.1)
    assert only2.recvfrom()[0] == b"hit"
    with pytest.raises(errors.WouldBlock):
        only2.recvfrom()
    assert b.stats()["udp"]["dropped.no-port"] == 1
    with pytest.raises(errors.AddressNotAvailable) as exc_info:
        bound(b, 4, 7002, "203.0.113.1")
    assert exc_info.value.errno == errno.EADDRNOTAVAIL


def test_port_in_use_and_reuse_address() -> None:
    net, a, b = pair()
    first = bound(b, 4, 8000)
    with pytest.raises(errors.PortInUse) as exc_info:
        bound(b, 4, 8000)
    assert exc_info.value.errno == errno.EADDRINUSE
    with pytest.raises(errors.PortInUse):
        bound(b, 4, 8000, B4)  # the wildcard overlaps every address
    with pytest.raises(errors.PortInUse):
        bound(b, 4, 8000, reuse=True)  # reuse needs *both* sides
    with pytest.raises(errors.AlreadyBound):
        first.bind(None, 8001)
    first.close()
    second = bound(b, 4, 8000, reuse=True)
    third = bound(b, 4, 8000, reuse=True)
    specific = bound(b, 4, 8000, B4, reuse=True)
    assert second.local == third.local == (bytes(4), 8000)
    # unicast demux: the exact address wins over the wildcard; among wildcard twins the newest
    c = a.udp_endpoint(4)
    c.sendto(b"u", (B4, 8000))
    net.run(duration=0.1)
    assert specific.recvfrom()[0] == b"u"
    assert not second.queue and not third.queue
    specific.close()
    c.sendto(b"v", (B4, 8000))
    net.run(duration=0.1)
    assert third.recvfrom()[0] == b"v"
    assert not second.queue
    # a closed endpoint frees its port for a plain bind once every holder is gone
    second.close()
    third.close()
    assert bound(b, 4, 8000).local == (bytes(4), 8000)


def test_connect_disconnect() -> None:
    net, a, b = pair()
    server = bound(b, 4, 7000)
    other = bound(b, 4, 7001)
    client = a.udp_endpoint(4)
    with pytest.raises(errors.DestinationRequired):
        client.send(b"nowhere")
    local = client.connect(B4, 7000)
    assert local[0] == ip(A4) and 32768 <= local[1] <= 60999
    assert client.remote == (ip(B4), 7000)
    client.send(b"hello")
    net.run(duration=0.1)
    data, peer = server.recvfrom()
    assert (data, peer) == (b"hello", local)
    server.sendto(b"reply", peer)
    other.sendto(b"stranger", peer)  # a connected endpoint hears only its peer
    net.run(duration=0.1)
    assert client.recvfrom() == (b"reply", (ip(B4), 7000))
    with pytest.raises(errors.WouldBlock):
        client.recvfrom()
    assert a.stats()["udp"]["dropped.no-port"] == 1
    # ... and the stranger got a port unreachable (ignored: `other` is not connected)
    assert b.stats()["udp"]["icmp-error-ignored"] == 1
    client.disconnect()
    assert client.remote is None
    assert client.local == (bytes(4), local[1])
    other.sendto(b"now welcome", peer)
    net.run(duration=0.1)
    assert client.recvfrom() == (b"now welcome", (ip(B4), 7001))
    # sendto an explicit address after disconnecting
    client.sendto(b"explicit", (B4, 7001))
    net.run(duration=0.1)
    assert other.recvfrom() == (b"explicit", peer)
    # reconnect elsewhere keeps the port
    assert client.connect(B4, 7001) == local
    with pytest.raises(errors.InvalidArgument):
        client.connect(B4, 0)
    with pytest.raises(errors.InvalidArgument):
        client.connect(B6, 7000)  # wrong family


def test_sendto_recvfrom_and_would_block() -> None:
    net, a, b = pair()
    server = bound(b, 6, 5000)
    with pytest.raises(errors.WouldBlock) as exc_info:
        server.recvfrom()
    assert isinstance(exc_info.value, BlockingIOError)
    assert exc_info.value.errno == errno.EAGAIN
    client = a.udp_endpoint(6)
    assert client.local is None
    assert client.sendto(b"", (B6, 5000)) == 0  # empty datagrams are datagrams
    assert client.sendto(memoryview(b"abc"), (B6, 5000)) == 3
    assert client.local is not None  # implicitly bound
    net.run(duration=0.1)
    assert server.recvfrom() == (b"", (ip(A6), client.local[1]))
    assert server.recvfrom() == (b"abc", (ip(A6), client.local[1]))
    with pytest.raises(errors.WouldBlock):
        server.recvfrom()
    assert b.stats()["udp"]["delivered"] == 2
    assert a.stats()["udp"]["sent"] == 2
    with pytest.raises(errors.MessageTooLong):
        client.sendto(bytes(65536 - 8), (B6, 5000))
    v4 = a.udp_endpoint(4)
    with pytest.raises(errors.MessageTooLong):
        v4.sendto(bytes(65508), (B4, 5000))
    with pytest.raises(errors.InvalidArgument):
        v4.sendto(b"x", (B4, 0))
    v4.close()
    with pytest.raises(errors.StackClosed):
        v4.sendto(b"x", (B4, 5000))


def test_readiness_and_waiter_notifications() -> None:
    net, a, b = pair()
    server = bound(b, 4, 5000)
    events: list[int] = []
    entry = server.waiter.register(events.append, EVENT_IN)
    assert server.readiness(EVENT_IN | EVENT_OUT) == EVENT_OUT
    client = a.udp_endpoint(4)
    client.sendto(b"1", (B4, 5000))
    client.sendto(b"2", (B4, 5000))
    assert events == []  # nothing is delivered from inside sendto
    net.run(duration=0.1)
    assert events == [EVENT_IN, EVENT_IN]
    assert server.readiness(EVENT_IN) == EVENT_IN
    server.recvfrom()
    assert server.readiness(EVENT_IN) == EVENT_IN
    server.recvfrom()
    assert server.readiness(EVENT_IN) == 0
    server.waiter.unregister(entry)
    client.sendto(b"3", (B4, 5000))
    net.run(duration=0.1)
    assert events == [EVENT_IN, EVENT_IN]
    hup: list[int] = []
    server.waiter.register(hup.append, EVENT_HUP)
    server.close()
    assert hup == [EVENT_HUP]
    assert server.readiness(EVENT_HUP | EVENT_OUT) == EVENT_HUP


def test_receive_buffer_limit_drops_and_counts() -> None:
    net, a, b = pair()
    server = bound(b, 4, 5000)
    server.rcvbuf = 1000
    client = a.udp_endpoint(4)
    for i in range(10):
        client.sendto(bytes([i]) * 300, (B4, 5000))
    net.run(duration=0.1)
    st = b.stats()["udp"]
    assert st["delivered"] == 3
    assert st["dropped.receive-buffer-full"] == 7
    assert [server.recvfrom()[0][0] for _ in range(3)] == [0, 1, 2]
    # room again after reading
    client.sendto(b"x" * 300, (B4, 5000))
    net.run(duration=0.1)
    assert server.recvfrom()[0] == b"x" * 300


# -- ICMP errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_port_unreachable_refuses_connected_endpoint(family: int) -> None:
    net, a, b = pair(l2=True)
    _, b_addr = fam_addrs(family)
    ep = a.udp_endpoint(family)
    ep.connect(b_addr, 9999)
    events: list[int] = []
    ep.waiter.register(events.append, EVENT_ERR)
    ep.send(b"anyone?")
    assert net.run(until=lambda: ep.error is not None, timeout=5)
    assert events == [EVENT_ERR]
    assert ep.readiness(EVENT_ERR | EVENT_IN) == EVENT_ERR
    with pytest.raises(ConnectionRefusedError) as exc_info:
        ep.recvfrom()
    assert exc_info.value.errno == errno.ECONNREFUSED
    assert isinstance(exc_info.value, errors.ConnectionRefused)
    with pytest.raises(errors.WouldBlock):  # reported once
        ep.recvfrom()
    assert ep.readiness(EVENT_ERR) == 0
    # the next error surfaces on send too
    ep.send(b"again?")
    assert net.run(until=lambda: ep.error is not None, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        ep.send(b"third")
    assert a.stats()["udp"]["icmp-error"] == 2
    icmp = "icmpv4" if family == 4 else "icmpv6"
    err_type = 3 if family == 4 else 1
    assert b.stats()[icmp][f"error-sent.{err_type}"] == 2
    assert a.stats()[icmp][f"error-received.{err_type}"] == 2


@pytest.mark.parametrize("family", [4, 6])
def test_port_unreachable_is_not_reported_to_unconnected_endpoint(family: int) -> None:
    net, a, _b = pair()
    _, b_addr = fam_addrs(family)
    ep = a.udp_endpoint(family)
    ep.sendto(b"anyone?", (b_addr, 9999))
    net.run(duration=1.0)
    icmp = "icmpv4" if family == 4 else "icmpv6"
    assert a.stats()[icmp][f"error-received.{3 if family == 4 else 1}"] == 1
    assert a.stats()["udp"]["icmp-error-ignored"] == 1
    assert ep.error is None
    with pytest.raises(errors.WouldBlock):
        ep.recvfrom()
    ep.sendto(b"fine", (b_addr, 9999))  # no error raised


# -- broadcast ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dst", ["255.255.255.255", "198.18.0.255"])
def test_broadcast_needs_option_and_reaches_every_bound_endpoint(tmp_path: Path,
                                                                 dst: str) -> None:
    net, a, b = pair(l2=True, tmp_path=tmp_path)
    eps = [bound(b, 4, 6000, reuse=True) for _ in range(3)]
    unicast_only = bound(b, 4, 6000, B4, reuse=True)  # bound to a unicast address
    other_port = bound(b, 4, 6001)
    client = a.udp_endpoint(4)
    with pytest.raises(errors.BroadcastDisabled) as exc_info:
        client.sendto(b"all", (dst, 6000))
    assert isinstance(exc_info.value, PermissionError)
    assert exc_info.value.errno == errno.EACCES
    client.broadcast = True
    assert client.sendto(b"all", (dst, 6000)) == 3
    net.run(duration=0.1)
    for ep in eps:
        assert ep.recvfrom() == (b"all", (ip(A4), client.local[1]))  # type: ignore[index]
    assert not unicast_only.queue and not other_port.queue
    assert b.stats()["udp"]["delivered"] == 3
    assert b.stats()["icmpv4"] == {}  # no port unreachable about a broadcast
    cap = capture(a, tmp_path)
    assert not any(p.haslayer(ARP) for p in cap)  # broadcast needs no resolution
    frames = [p for p in cap if p.haslayer(UDP)]
    assert len(frames) == 1
    assert frames[0][Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert frames[0][IP].dst == dst
    assert_checksums(frames[0])


def test_broadcast_to_unbound_port_is_silently_dropped() -> None:
    net, a, b = pair(l2=True)
    client = a.udp_endpoint(4)
    client.broadcast = True
    client.sendto(b"x", ("255.255.255.255", 6002))
    net.run(duration=1.0)
    assert b.stats()["udp"]["dropped.no-port"] == 1
    assert "error-sent.3" not in b.stats()["icmpv4"]
    assert a.stats()["icmpv4"] == {}


# -- checksums ------------------------------------------------------------------------------------


@pytest.mark.parametrize("l2", [True, False])
def test_zero_checksum_accepted_on_ipv4_rejected_on_ipv6(l2: bool) -> None:
    net = VirtualNetwork(seed=2)
    s, _, wire = wired_stack(net, l2=l2)
    ep4, ep6 = bound(s, 4, 53), bound(s, 6, 53)
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / UDP(sport=1000, dport=53, chksum=0)
                         / Raw(b"no checksum"), l2=l2))
    wire.inject(to_stack(IPv6(src=PEER6, dst=STACK6) / UDP(sport=1000, dport=53, chksum=0)
                         / Raw(b"no checksum"), l2=l2))
    assert ep4.recvfrom() == (b"no checksum", (ip(PEER4), 1000))
    with pytest.raises(errors.WouldBlock):
        ep6.recvfrom()
    st = s.stats()["udp"]
    assert st["malformed.bad-checksum"] == 1
    assert st["delivered"] == 1
    # a wrong checksum is dropped on both; a right one accepted on both
    for pkt_ip in (IP(src=PEER4, dst=STACK4), IPv6(src=PEER6, dst=STACK6)):
        good = pkt_ip / UDP(sport=1000, dport=53) / Raw(b"checked")
        bad = good.copy()
        bad[UDP].chksum = (IP(bytes(good))[UDP].chksum if isinstance(pkt_ip, IP)
                           else IPv6(bytes(good))[UDP].chksum) ^ 0x0101
        wire.inject(to_stack(bad, l2=l2))
        wire.inject(to_stack(good, l2=l2))
    assert ep4.recvfrom()[0] == b"checked"
    assert ep6.recvfrom()[0] == b"checked"
    assert s.stats()["udp"]["malformed.bad-checksum"] == 3
    assert wire.take() == []  # nothing answered a bad datagram


def test_emitted_checksums_are_valid() -> None:
    net = VirtualNetwork(seed=2)
    s, _, wire = wired_stack(net)
    for family, dst in ((4, PEER4), (6, PEER6)):
        ep = s.udp_endpoint(family)
        for n in (0, 1, 7, 100, 1000):
            ep.sendto(random.Random(n).randbytes(n), (dst, 4242))
    frames = [Ether(f) for f in wire.take()]
    assert len(frames) == 10
    for f in frames:
        assert f[UDP].chksum != 0
        assert_checksums(f)


# -- fragmentation --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_large_datagram_fragmented_and_reassembled(tmp_path: Path, family: int) -> None:
    net, a, b = pair(l2=True, tmp_path=tmp_path)
    a_addr, b_addr = fam_addrs(family)
    server = bound(b, family, 9000)
    client = a.udp_endpoint(family)
    payload = random.Random(9000).randbytes(9000)
    client.sendto(payload, (b_addr, 9000))
    assert net.run(until=lambda: bool(server.queue), timeout=5)
    assert server.recvfrom() == (payload, (ip(a_addr), client.local[1]))  # type: ignore[index]
    # and back: b -> a (b's NIC is not captured, but a's end of the pipe sees it arrive)
    server.sendto(payload[::-1], (a_addr, client.local[1]))  # type: ignore[index]
    assert net.run(until=lambda: bool(client.queue), timeout=5)
    assert client.recvfrom()[0] == payload[::-1]
    assert a.stats()["fragment"]["reassembled"] == 1
    assert b.stats()["fragment"]["reassembled"] == 1
    ipv = "ipv4" if family == 4 else "ipv6"
    assert a.stats()[ipv]["fragments-sent"] == 7
    cap = capture(a, tmp_path)
    if family == 4:
        frags = [p[IP] for p in cap if p.haslayer(IP) and p[IP].src == a_addr]
        assert len(frags) == 7  # (1500 - 20) & ~7 = 1480 per fragment; 9008 bytes
        assert all(len(f) <= 1500 for f in frags)
        assert [f.frag * 8 for f in frags] == [i * 1480 for i in range(7)]
        assert [bool(f.flags.MF) for f in frags] == [True] * 6 + [False]
        assert len({f.id for f in frags}) == 1
        whole = IP(bytes(defragment(frags)[0]))
    else:
        frags = [p[IPv6] for p in cap if p.haslayer(IPv6ExtHdrFragment) and p[IPv6].src == a_addr]
        assert len(frags) == 7  # (1500 - 48) & ~7 = 1448 per fragment
        assert all(len(f) <= 1500 for f in frags)
        assert [f[IPv6ExtHdrFragment].offset * 8 for f in frags] == [i * 1448 for i in range(7)]
        assert [f[IPv6ExtHdrFragment].m for f in frags] == [1] * 6 + [0]
        assert len({f[IPv6ExtHdrFragment].id for f in frags}) == 1
        whole = IPv6(bytes(defragment6(frags)))
    assert bytes(whole[UDP].payload) == payload
    assert_checksums(whole)


# -- ICMP rate limiting ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_port_unreachable_is_rate_limited(family: int) -> None:
    net, a, b = pair()
    _, b_addr = fam_addrs(family)
    ep = a.udp_endpoint(family)
    for i in range(200):
        ep.sendto(b"%d" % i, (b_addr, 9))
    net.settle()  # one instant: no token refill
    icmp = "icmpv4" if family == 4 else "icmpv6"
    t = 3 if family == 4 else 1
    sb = b.stats()
    assert sb["udp"]["dropped.no-port"] == 200
    assert sb[icmp][f"error-sent.{t}"] == 50  # icmp_burst
    assert sb[icmp]["error-rate-limited"] == 150
    assert a.stats()[icmp][f"error-received.{t}"] == 50
    # 10.1 ms later the bucket (1000/s) holds 10 tokens again
    net.run(duration=0.0101)
    for i in range(20):
        ep.sendto(b"%d" % i, (b_addr, 9))
    net.settle()
    sb = b.stats()
    assert sb[icmp][f"error-sent.{t}"] == 60
    assert sb[icmp]["error-rate-limited"] == 160


def test_custom_icmp_burst() -> None:
    net = VirtualNetwork(seed=1)
    a, b = net.stack(), net.stack(icmp_burst=5, icmp_rate=1.0)
    ea, eb = link.pipe(seed=1)
    a.add_nic(ea, [f"{A4}/24"])
    b.add_nic(eb, [f"{B4}/24"])
    ep = a.udp_endpoint(4)
    for _ in range(20):
        ep.sendto(b"x", (B4, 9))
    net.run(duration=0.5)
    assert b.stats()["icmpv4"]["error-sent.3"] == 5
    assert b.stats()["icmpv4"]["error-rate-limited"] == 15


# -- impaired path --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_udp_echo_over_lossy_reordering_corrupting_pipe(family: int) -> None:
    net, a, b = pair(seed=12345, loss=0.10, reorder=0.05, corrupt=0.01, delay=0.002,
                     jitter=0.001)
    _a_addr, b_addr = fam_addrs(family)
    echo = bound(b, family, 7)
    client = a.udp_endpoint(family)
    client.connect(b_addr, 7)
    rng = random.Random(family)
    sent: set[bytes] = set()
    got: list[bytes] = []
    echoed: list[bytes] = []

    def echo_all(_events: int) -> None:
        while echo.queue:
            data, peer = echo.recvfrom()
            echoed.append(data)
            echo.sendto(data, peer)

    def collect(_events: int) -> None:
        while client.queue:
            got.append(client.recvfrom()[0])

    echo.waiter.register(echo_all, EVENT_IN)
    client.waiter.register(collect, EVENT_IN)
    for i in range(1500):
        data = i.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 200))
        sent.add(data)
        client.send(data)
        net.run(duration=0.001)
    net.run(duration=2.0)
    # nothing corrupted got through, in either direction
    assert set(echoed) <= sent
    assert set(got) <= set(echoed)
    assert len(got) == len(set(got))  # the pipe does not duplicate here
    ea_stats, eb_stats = a.stats()["nics"]["nic2"], b.stats()["nics"]["nic2"]
    corrupted = ea_stats["corrupted"] + eb_stats["corrupted"]
    lost = ea_stats["dropped_loss"] + eb_stats["dropped_loss"]
    assert corrupted > 10 and lost > 200 and ea_stats["reordered"] > 30
    dropped = _drops(a, b)
    if family == 4:
        # every IPv4/UDP byte is under a checksum: each corrupted frame is dropped (the only
        # escape would be a UDP checksum flipped to exactly 0, "none", with the data intact),
        # and every datagram is accounted for as echoed back, lost or dropped
        assert corrupted - 1 <= dropped <= corrupted
        assert 1500 - len(got) == lost + dropped
    else:
        # the IPv6 header has no checksum: a flip in the traffic class, flow label or hop limit
        # goes unnoticed (and is harmless); a flipped next header costs an ICMP error that may
        # itself be dropped by the peer.  Everything else is caught.
        icmp_errors = sum(s.stats()["icmpv6"].get("error-sent.4", 0) for s in (a, b))
        assert 0.75 * corrupted <= dropped <= corrupted + icmp_errors
    assert a.stats()["udp"]["malformed.bad-checksum"] + b.stats()["udp"][
        "malformed.bad-checksum"] > 0


def _drops(a: CoreStack, b: CoreStack) -> int:
    from core_helpers import drops

    return drops(a) + drops(b)
