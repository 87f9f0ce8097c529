"""Routing: route lookup, and a third stack forwarding between two links (RFC 1812, RFC 8200).

Topology of the end-to-end tests::

    A 198.18.0.1 fd00:1::1 ── link1 ── .254 fd00:1::fe  R (forwarding)  198.19.0.254 fd00:2::fe
                                                                         ── link2 ── B .2 fd00:2::2

A and B have default routes through R.  Link2 is captured at R's end.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import pytest
from core_helpers import PEER_MAC, STACK_MAC, Wire, assert_checksums, ip, to_stack, wired_stack
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror, defragment, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum
from scapy.utils import rdpcap

from aionetstack import errors, link
from aionetstack.link.pcap import PcapLink
from aionetstack.stack.route import RouteEntry, RouteTable
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

A4, R14, R24, B4 = "198.18.0.1", "198.18.0.254", "198.19.0.254", "198.19.0.2"
A6, R16, R26, B6 = "fd00:1::1", "fd00:1::fe", "fd00:2::fe", "fd00:2::2"


@dataclass
class Routed:
    net: VirtualNetwork
    a: CoreStack
    r: CoreStack
    b: CoreStack
    cap1: PcapLink  # link1, at A
    cap2: PcapLink  # link2, at R
    tmp: Path

    def link1(self) -> list[Ether]:
        self.cap1.flush()
        return list(rdpcap(str(self.tmp / "link1.pcap")))

    def link2(self) -> list[Ether]:
        self.cap2.flush()
        return list(rdpcap(str(self.tmp / "link2.pcap")))


def routed(tmp_path: Path, *, mtu2: int = 1500, seed: int = 11) -> Routed:
    net = VirtualNetwork(seed=seed)
    a, r, b = net.stack(), net.stack(forwarding=True), net.stack()
    a1, r1 = link.pipe(l2=True, seed=seed)
    r2, b2 = link.pipe(l2=True, mtu=mtu2, seed=seed + 1)
    cap1 = link.pcap(a1, tmp_path / "link1.pcap")
    cap2 = link.pcap(r2, tmp_path / "link2.pcap")
    a.add_nic(cap1, [f"{A4}/24", f"{A6}/64"])
    r.add_nic(r1, [f"{R14}/24", f"{R16}/64"])
    v6 = mtu2 >= 1280
    r.add_nic(cap2, [f"{R24}/24", f"{R26}/64"] if v6 else [f"{R24}/24"])
    b.add_nic(b2, [f"{B4}/24", f"{B6}/64"] if v6 else [f"{B4}/24"])
    a.add_route("0.0.0.0/0", gateway=R14)
    a.add_route("::/0", gateway=R16)
    b.add_route("0.0.0.0/0", gateway=R24)
    if v6:
        b.add_route("::/0", gateway=R26)
    return Routed(net, a, r, b, cap1, cap2, tmp_path)


def addrs(family: int) -> tuple[str, str, str, str]:
    return (A4, R14, R24, B4) if family == 4 else (A6, R16, R26, B6)


# -- route table -------------------------------------------------------------------------------


def test_longest_prefix_match_then_metric() -> None:
    t = RouteTable()
    t.add(RouteEntry(ip("0.0.0.0"), 0, 1, gateway=ip("10.0.0.1")))
    t.add(RouteEntry(ip("10.0.0.0"), 8, 2))
    t.add(RouteEntry(ip("10.1.0.0"), 16, 3, metric=10))
    t.add(RouteEntry(ip("10.1.0.0"), 16, 4, metric=5))
    t.add(RouteEntry(ip("fd00::"), 8, 5))
    lookup = t.lookup
    assert lookup(ip("10.1.2.3")).nic_id == 4  # type: ignore[union-attr]
    assert lookup(ip("10.2.0.1")).nic_id == 2  # type: ignore[union-attr]
    assert lookup(ip("192.0.2.1")).nic_id == 1  # type: ignore[union-attr]
    assert lookup(ip("10.1.2.3"), 3).nic_id == 3  # type: ignore[union-attr]
    assert lookup(ip("fd12::1")).nic_id == 5  # type: ignore[union-attr]
    assert lookup(ip("2001:db8::1")) is None  # the IPv4 default does not match IPv6
    assert t.remove(lambda e: e.nic_id == 4) == 1
    assert lookup(ip("10.1.2.3")).nic_id == 3  # type: ignore[union-attr]  (cache cleared)


def test_lookup_confined_to_a_nic_is_cached_and_the_cache_cleared_on_change() -> None:
    t = RouteTable()
    t.add(RouteEntry(ip("10.0.0.0"), 8, 2))
    t.add(RouteEntry(ip("10.0.0.0"), 8, 3, metric=5))
    dst = ip("10.1.2.3")
    assert t.lookup(dst, 3).nic_id == 3  # type: ignore[union-attr]
    assert t.lookup(dst, 3) is t.lookup(dst, 3)
    assert t.lookup(dst, 4) is None
    assert t.lookup(dst).nic_id == 2  # type: ignore[union-attr]  (not the NIC-3 answer)
    t.add(RouteEntry(ip("10.1.0.0"), 16, 3))
    assert t.lookup(dst, 3).prefixlen == 16  # type: ignore[union-attr]
    t.add(RouteEntry(ip("10.1.0.0"), 16, 4))
    assert t.lookup(dst, 4).nic_id == 4  # type: ignore[union-attr]  (a cached miss is cleared)
    assert t.remove(lambda e: e.nic_id == 3) == 2
    assert t.lookup(dst, 3) is None


def test_no_route_raises_enetunreach() -> None:
    net = VirtualNetwork()
    s, _, _ = wired_stack(net)
    for dst in ("203.0.113.1", "2001:db8::1"):
        with pytest.raises(errors.NoRoute) as exc_info:
            s.find_route(ip(dst))
        assert isinstance(exc_info.value, OSError)
        assert exc_info.value.errno == errno.ENETUNREACH
        ep = s.udp_endpoint(4 if "." in dst else 6)
        with pytest.raises(errors.NoRoute) as exc_info:
            ep.sendto(b"x", (dst, 9))
        assert exc_info.value.errno == errno.ENETUNREACH
    assert s.stats()["udp"].get("sent", 0) == 0
    # a default route makes the same destinations reachable
    s.add_route("0.0.0.0/0", gateway="198.18.0.2")
    route = s.find_route(ip("203.0.113.1"))
    assert (route.next_hop, route.local, route.mtu) == (ip("198.18.0.2"), ip("198.18.0.1"), 1500)
    with pytest.raises(errors.NoRoute):
        s.add_route("::/0", gateway="2001:db8::99")  # gateway not on a connected network


# -- forwarding end to end ---------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_ping_through_router_decrements_ttl(tmp_path: Path, family: int) -> None:
    t = routed(tmp_path)
    a_addr, _, _, b_addr = addrs(family)
    ep = t.a.icmp_echo_endpoint(family)
    ep.send(ip(b_addr), 1, b"routed")
    assert t.net.run(until=lambda: bool(ep.replies), timeout=10)
    assert ep.recv()[:3] == (ip(b_addr), 1, b"routed")
    layer = IP if family == 4 else IPv6
    on2 = [p for p in t.link2() if p.haslayer(layer) and not _is_nd(p)]
    assert len(on2) == 2
    fwd, back = on2
    assert (fwd[layer].src, fwd[layer].dst) == (a_addr, b_addr)
    ttl = "ttl" if family == 4 else "hlim"
    assert getattr(fwd[layer], ttl) == 63  # decremented once by R
    assert getattr(back[layer], ttl) == 64  # B's reply, not yet forwarded
    on1 = [p for p in t.link1() if p.haslayer(layer) and not _is_nd(p)]
    assert getattr(on1[-1][layer], ttl) == 63
    for p in on1 + on2:
        assert_checksums(p)
    st = t.r.stats()["ipv4" if family == 4 else "ipv6"]
    assert st["forwarded"] == 2
    if family == 4:
        assert st.get("delivered", 0) == 0  # R only forwarded (IPv6 also delivers NDP to R)


def _is_nd(p: Ether) -> bool:
    return p.haslayer(IPv6) and p[IPv6].nh == 58 and bytes(p[IPv6].payload)[0] in (135, 136)


@pytest.mark.parametrize("family", [4, 6])
def test_udp_through_router(tmp_path: Path, family: int) -> None:
    t = routed(tmp_path)
    a_addr, _, _, b_addr = addrs(family)
    server = t.b.udp_endpoint(family)
    server.bind(None, 5353)
    client = t.a.udp_endpoint(family)
    client.sendto(b"query", (b_addr, 5353))
    assert t.net.run(until=lambda: bool(server.queue), timeout=10)
    data, (src, sport) = server.recvfrom()
    assert (data, src, sport) == (b"query", ip(a_addr), client.local[1])
    server.sendto(b"answer", (a_addr, sport))
    assert t.net.run(until=lambda: bool(client.queue), timeout=10)
    assert client.recvfrom() == (b"answer", (ip(b_addr), 5353))
    # link1 is a trusted in-memory pipe (A may leave the checksum out); R fills it in before the
    # datagram leaves on link2, which is not
    udp2 = [p for p in t.link2() if p.haslayer(UDP)]
    assert len(udp2) == 2
    fwd = [p for p in udp2 if p[IP if family == 4 else IPv6].dst == b_addr]
    assert len(fwd) == 1
    for p in fwd:
        assert p[UDP].chksum != 0
        assert_checksums(p)
    ttl = "ttl" if family == 4 else "hlim"
    layer = IP if family == 4 else IPv6
    assert getattr(udp2[0][layer], ttl) == 63


@pytest.mark.parametrize("family", [4, 6])
def test_ttl_one_gets_time_exceeded(tmp_path: Path, family: int) -> None:
    t = routed(tmp_path)
    a_addr, r1_addr, _, b_addr = addrs(family)
    ep = t.a.icmp_echo_endpoint(family)
    ep.send(ip(b_addr), 9, b"expiring", ttl=1)
    assert t.net.run(until=lambda: bool(ep.errors), timeout=10)
    with pytest.raises(errors.HostUnreachable):
        ep.recv()
    assert not ep.replies
    # the error on link1: from R, quoting our echo request
    errs = [p for p in t.link1() if (p.haslayer(ICMP) and p[ICMP].type == 11)
            or p.haslayer(ICMPv6TimeExceeded)]
    assert len(errs) == 1
    e = errs[0]
    if family == 4:
        assert (e[IP].src, e[IP].dst, e[ICMP].code) == (r1_addr, a_addr, 0)
        q = e[IPerror]
        assert (q.src, q.dst, q.ttl, q.proto) == (a_addr, b_addr, 1, 1)
        assert bytes(e[IPerror].payload)[:2] == b"\x08\x00"  # the quoted echo request
    else:
        assert (e[IPv6].src, e[IPv6].dst, e[ICMPv6TimeExceeded].code) == (r1_addr, a_addr, 0)
        q6 = e[IPerror6]
        assert (q6.src, q6.dst, q6.hlim) == (a_addr, b_addr, 1)
        assert e.haslayer(ICMPv6EchoRequest) or bytes(q6.payload)[0] == 128
    assert_checksums(e)
    st = t.r.stats()["ipv4" if family == 4 else "ipv6"]
    assert st["dropped.ttl-exceeded" if family == 4 else "dropped.hop-limit-exceeded"] == 1
    assert not [p for p in t.link2() if p.haslayer(IP) or (p.haslayer(IPv6) and not _is_nd(p))]


@pytest.mark.parametrize("family", [4, 6])
def test_udp_ttl_one_reports_to_connected_endpoint(tmp_path: Path, family: int) -> None:
    t = routed(tmp_path)
    _, _, _, b_addr = addrs(family)
    ep = t.a.udp_endpoint(family)
    ep.connect(b_addr, 7)
    ep.ttl = 1
    ep.send(b"x")
    assert t.net.run(until=lambda: ep.error is not None, timeout=10)
    with pytest.raises(errors.HostUnreachable):
        ep.recvfrom()
    with pytest.raises(errors.WouldBlock):  # reported once
        ep.recvfrom()


@pytest.mark.parametrize("family", [4, 6])
def test_router_without_route_sends_net_unreachable(tmp_path: Path, family: int) -> None:
    t = routed(tmp_path)
    a_addr, r1_addr, _, _ = addrs(family)
    far = "203.0.113.9" if family == 4 else "2001:db8::9"
    ep = t.a.udp_endpoint(family)
    ep.connect(far, 4000)
    ep.send(b"nowhere")
    assert t.net.run(until=lambda: ep.error is not None, timeout=10)
    with pytest.raises(errors.NetworkUnreachable) as exc_info:
        ep.recvfrom()
    assert exc_info.value.errno == errno.ENETUNREACH
    assert isinstance(exc_info.value, errors.NoRoute)
    errs = [p for p in t.link1() if (p.haslayer(ICMP) and p[ICMP].type == 3)
            or p.haslayer(ICMPv6DestUnreach)]
    assert len(errs) == 1
    e = errs[0]
    if family == 4:
        assert (e[IP].src, e[IP].dst, e[ICMP].type, e[ICMP].code) == (r1_addr, a_addr, 3, 0)
        assert (e[IPerror].dst, e[UDPerror].dport) == (far, 4000)
    else:
        assert (e[IPv6].src, e[ICMPv6DestUnreach].code) == (r1_addr, 0)
        assert e[IPerror6].dst == far
    assert_checksums(e)
    st = t.r.stats()["ipv4" if family == 4 else "ipv6"]
    assert st["dropped.no-route"] == 1


def test_router_fragments_ipv4_without_df(tmp_path: Path) -> None:
    t = routed(tmp_path, mtu2=576)
    server = t.b.udp_endpoint(4)
    server.bind(None, 9000)
    payload = bytes(range(256)) * 5 + b"tail"  # 1284 bytes: one packet on link1
    client = t.a.udp_endpoint(4)
    client.sendto(payload, (B4, 9000))
    assert t.net.run(until=lambda: bool(server.queue), timeout=10)
    assert server.recvfrom()[0] == payload
    assert t.a.stats()["ipv4"].get("fragments-sent", 0) == 0
    frags = [p for p in t.link2() if p.haslayer(IP) and p[IP].dst == B4]
    assert len(frags) == 3  # (576 - 20) & ~7 = 552 data bytes per fragment: 552 + 552 + 188
    ident = frags[0][IP].id
    for i, f in enumerate(frags):
        assert f[IP].id == ident
        assert f[IP].frag == i * 552 // 8
        assert (i < 2) == f[IP].flags.MF
        assert f[IP].ttl == 63
        assert f[IP].src == A4
        assert len(f[IP]) <= 576
        assert scapy_checksum(bytes(f[IP])[:20]) == 0  # header checksum after R's rewrite
    whole = IP(bytes(defragment([f[IP] for f in frags])[0]))
    assert bytes(whole[UDP].payload) == payload
    assert_checksums(whole)  # A's UDP checksum covers the reassembled datagram
    assert t.r.stats()["ipv4"]["fragments-sent"] == 3
    assert t.b.stats()["fragment"]["reassembled"] == 1


def test_router_sends_frag_needed_for_df(tmp_path: Path) -> None:
    """A DF datagram too big for the next link: ICMP 3/4 with the next-hop MTU (RFC 1191)."""
    net = VirtualNetwork(seed=4)
    r, _, wire = wired_stack(net, forwarding=True)  # R is 198.18.0.1; the wire is 198.18.0.2
    r2, b2 = link.pipe(l2=True, mtu=1000, seed=4)
    r.add_nic(r2, [f"{R24}/24"])
    b = net.stack()
    b.add_nic(b2, [f"{B4}/24"])
    b.add_route("0.0.0.0/0", gateway=R24)
    big = IP(src="198.18.0.2", dst=B4, flags="DF", ttl=30, id=0x4242) / UDP(
        sport=1111, dport=2222) / Raw(b"z" * 1200)
    wire.inject(to_stack(big))
    net.run(duration=1.0)
    out = [Ether(f) for f in wire.take()]
    assert len(out) == 1
    e = out[0]
    assert (e[Ether].src, e[Ether].dst) == (STACK_MAC, PEER_MAC)
    assert (e[IP].src, e[IP].dst, e[ICMP].type, e[ICMP].code) == ("198.18.0.1", "198.18.0.2",
                                                                   3, 4)
    assert e[ICMP].nexthopmtu == 1000
    assert (e[IPerror].id, e[IPerror].len, e[UDPerror].dport) == (0x4242, 1228, 2222)
    assert_checksums(e)
    assert r.stats()["ipv4"]["dropped.too-big"] == 1
    assert b.stats()["ipv4"].get("received", 0) == 0
    # the same datagram without DF is fragmented instead
    big[IP].flags = 0
    big[IP].id = 0x4243
    wire.inject(to_stack(big))
    net.run(duration=1.0)
    assert r.stats()["ipv4"]["fragments-sent"] == 2
    assert b.stats()["fragment"]["reassembled"] == 1
    # port 2222 is closed on B: its port unreachable about the reassembled datagram comes back
    back = [Ether(f) for f in wire.take()]
    assert len(back) == 1
    e = back[0]
    assert (e[IP].src, e[IP].dst, e[IP].ttl, e[ICMP].type, e[ICMP].code) == (
        B4, "198.18.0.2", 63, 3, 3)
    assert (e[IPerror].id, e[IPerror].frag, e[IPerror].flags.MF) == (0x4243, 0, 0)


def test_router_sends_packet_too_big_and_source_adapts(tmp_path: Path) -> None:
    """IPv6 routers never fragment: PTB (RFC 8201); A lowers its path MTU and fragments."""
    t = routed(tmp_path, mtu2=1280)
    server = t.b.udp_endpoint(6)
    server.bind(None, 9000)
    client = t.a.udp_endpoint(6)
    payload = b"p" * 1400
    client.sendto(payload, (B6, 9000))
    t.net.run(duration=1.0)
    assert not server.queue
    assert t.r.stats()["ipv6"]["dropped.too-big"] == 1
    ptb = [p for p in t.link1() if p.haslayer(ICMPv6PacketTooBig)]
    assert len(ptb) == 1
    assert (ptb[0][IPv6].src, ptb[0][IPv6].dst) == (R16, A6)
    assert ptb[0][ICMPv6PacketTooBig].mtu == 1280
    assert ptb[0][IPerror6].dst == B6
    assert len(ptb[0][IPv6]) <= 1280
    assert_checksums(ptb[0])
    assert t.a.pmtu[ip(B6)][0] == 1280
    assert t.a.find_route(ip(B6)).mtu == 1280
    assert t.a.find_route(ip(R16)).mtu == 1500  # other destinations keep the link MTU
    client.sendto(payload, (B6, 9000))
    assert t.net.run(until=lambda: bool(server.queue), timeout=5)
    assert server.recvfrom()[0] == payload
    assert t.a.stats()["ipv6"]["fragments-sent"] == 2
    assert all(len(p[IPv6]) <= 1280 for p in t.link2() if p.haslayer(IPv6))


def test_router_does_not_forward_link_local_or_broadcast(tmp_path: Path) -> None:
    net = VirtualNetwork(seed=9)
    r, _, wire = wired_stack(net, forwarding=True)
    r2, _ = link.pipe(l2=True, seed=9)
    r.add_nic(r2, [f"{R24}/24", f"{R26}/64"])
    # RFC 2644: directed broadcasts for another subnet are not forwarded by default
    wire.inject(to_stack(IP(src="198.18.0.2", dst="198.19.0.255") / UDP(dport=9)))
    wire.inject(to_stack(IP(src="198.18.0.2", dst="224.0.0.251") / UDP(dport=5353)))
    # RFC 4291 §2.5.6: link-local source or destination never leaves the link
    wire.inject(to_stack(IPv6(src="fe80::2", dst="fd00:2::77") / UDP(dport=9)))
    wire.inject(to_stack(IPv6(src="fd00::2", dst="fe80::1234") / UDP(dport=9)))
    net.run(duration=1.0)
    s4, s6 = r.stats()["ipv4"], r.stats()["ipv6"]
    assert s4.get("forwarded", 0) == 0
    assert s6.get("forwarded", 0) == 0
    assert s4["dropped.not-forwardable"] == 1
    assert s4["dropped.multicast-not-joined"] == 1
    assert s6["dropped.not-forwardable"] == 2
    assert r.stats()["nics"]["nic3"]["tx_frames"] == 0
    assert wire.take() == []


def test_router_refragments_keeping_ident_and_offsets() -> None:
    """A fragment too big for the next link is split again: same ident, offsets continue, MF
    stays set on every piece of a non-final fragment (RFC 791 §3.2)."""
    net = VirtualNetwork(seed=6)
    r, _, wire = wired_stack(net, forwarding=True)
    r2, b_end = link.pipe(l2=True, mtu=576, seed=6,
                          macs=(bytes.fromhex("000000000203"), bytes.fromhex("000000000204")))
    r.add_nic(r2, [f"{R24}/24"])
    r.add_neighbour(B4, "00:00:00:00:02:04", 3)
    wire_b = Wire(net, b_end)
    whole = IP(src="198.18.0.2", dst=B4, id=0x5151, ttl=20) / UDP(sport=7, dport=7) / Raw(
        bytes(range(256)) * 6)  # 1536 bytes of UDP
    pieces = fragment(IP(bytes(whole)), 1000)  # 1000 + 544 bytes of IP payload
    assert len(pieces) == 2
    for p in pieces:
        wire.inject(to_stack(p))
    out = [Ether(f)[IP] for f in wire_b.take()]
    assert [(f.frag * 8, len(f) - 20, bool(f.flags.MF)) for f in out] == [
        (0, 552, True), (552, 448, True), (1000, 544, False)]
    assert {f.id for f in out} == {0x5151}
    assert {f.ttl for f in out} == {19}
    rebuilt = IP(bytes(defragment(out)[0]))
    assert bytes(rebuilt[UDP]) == bytes(whole[UDP])
    assert r.stats()["ipv4"]["fragments-sent"] == 2
