"""Two stacks ping each other over an in-memory pipe; scapy reads the capture.

On an L2 pipe the first echo request is preceded by address resolution on the wire: ARP who-has /
is-at for IPv4 (RFC 826), and for IPv6 a Neighbor Solicitation to the target's solicited-node
multicast group answered by a solicited, override Neighbor Advertisement (RFC 4861 §7.2), both
with hop limit 255.  On an L3 pipe only the echo traffic appears.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from core_helpers import assert_checksums, ip
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap
from scapy.utils6 import in6_mactoifaceid

from aionetstack import link
from aionetstack.link.pcap import PcapLink
from aionetstack.stack.neighbour import NudState
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

A4, B4, A6, B6 = "198.18.0.1", "198.18.0.2", "fd00::1", "fd00::2"


def two_stacks(
    tmp_path: Path, *, l2: bool
) -> tuple[VirtualNetwork, CoreStack, CoreStack, PcapLink, bytes, bytes]:
    net = VirtualNetwork(seed=3)
    a, b = net.stack(), net.stack()
    ea, eb = link.pipe(l2=l2, seed=3)
    cap = link.pcap(ea, tmp_path / "a.pcap")
    a.add_nic(cap, [f"{A4}/24", f"{A6}/64"])
    b.add_nic(eb, [f"{B4}/24", f"{B6}/64"])
    mac_a = ea.caps.mac or b""
    mac_b = eb.caps.mac or b""
    return net, a, b, cap, mac_a, mac_b


def ping(net: VirtualNetwork, s: CoreStack, family: int, dst: str, seq: int,
         payload: bytes) -> tuple[bytes, int, bytes, float]:
    ep = s.icmp_echo_endpoint(family)
    sent_at = net.now
    ep.send(ip(dst), seq, payload)
    assert net.run(until=lambda: bool(ep.replies), timeout=5.0)
    reply = ep.recv()
    assert reply == (ip(dst), seq, payload, sent_at)  # zero-delay pipe: same instant
    ep.close()
    return reply


def hexmac(m: bytes) -> str:
    return m.hex(":")


def test_l2_ping_ipv4_resolves_with_arp_on_the_wire(tmp_path: Path) -> None:
    net, a, b, cap, mac_a, mac_b = two_stacks(tmp_path, l2=True)
    ping(net, a, 4, B4, 7, b"ping over ethernet")
    cap.flush()
    pkts = rdpcap(str(tmp_path / "a.pcap"))
    assert [type(p.payload).__name__ for p in pkts] == ["ARP", "ARP", "IP", "IP"]
    who_has, is_at, req, rep = pkts
    assert who_has[Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert who_has[Ether].src == hexmac(mac_a)
    w = who_has[ARP]
    assert (w.op, w.hwsrc, w.psrc, w.pdst) == (1, hexmac(mac_a), A4, B4)
    assert w.hwdst == "00:00:00:00:00:00"
    assert is_at[Ether].dst == hexmac(mac_a)
    r = is_at[ARP]
    assert (r.op, r.hwsrc, r.psrc, r.hwdst, r.pdst) == (2, hexmac(mac_b), B4, hexmac(mac_a), A4)
    assert req[Ether].dst == hexmac(mac_b)
    assert (req[IP].src, req[IP].dst, req[IP].ttl, req[IP].proto) == (A4, B4, 64, 1)
    assert (req[ICMP].type, req[ICMP].code, req[ICMP].seq) == (8, 0, 7)
    assert bytes(req[ICMP].payload) == b"ping over ethernet"
    assert (rep[IP].src, rep[IP].dst) == (B4, A4)
    assert (rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == (0, req[ICMP].id, 7)
    assert bytes(rep[ICMP].payload) == b"ping over ethernet"
    for p in (req, rep):
        assert_checksums(p)
    # the caches: a learnt b from the reply (REACHABLE); b learnt a from the request (STALE) and
    # then used the entry to reply (DELAY, RFC 4861 §7.3.3)
    nic_a = next(n for n in a.nics.values() if not n.loopback)
    nic_b = next(n for n in b.nics.values() if not n.loopback)
    assert nic_a.neigh4 is not None and nic_b.neigh4 is not None
    assert nic_a.neigh4.lookup(ip(B4)) == mac_b
    assert nic_a.neigh4.state(ip(B4)) == NudState.REACHABLE
    assert nic_b.neigh4.lookup(ip(A4)) == mac_a
    assert nic_b.neigh4.state(ip(A4)) == NudState.DELAY
    sa, sb = a.stats(), b.stats()
    assert sa["arp"] == {"received": 1, "reply-received": 1, "request-sent": 1}
    assert sb["arp"] == {"received": 1, "request-received": 1, "reply-sent": 1}
    assert sa["icmpv4"]["echo-request-sent"] == 1
    assert sb["icmpv4"]["echo-reply-sent"] == 1
    # a second ping needs no resolution
    ping(net, a, 4, B4, 8, b"again")
    cap.flush()
    assert len(rdpcap(str(tmp_path / "a.pcap"))) == 6
    assert a.stats()["arp"]["request-sent"] == 1


def test_l2_ping_ipv6_resolves_with_ndp_on_the_wire(tmp_path: Path) -> None:
    net, a, b, cap, mac_a, mac_b = two_stacks(tmp_path, l2=True)
    ping(net, a, 6, B6, 1, b"ping6")
    cap.flush()
    pkts = rdpcap(str(tmp_path / "a.pcap"))
    assert len(pkts) == 4
    ns, na, req, rep = pkts
    # NS: to the solicited-node group of fd00::2, from our global address, SLLA option
    assert ns[Ether].dst == "33:33:ff:00:00:02"
    assert ns[Ether].src == hexmac(mac_a)
    assert (ns[IPv6].src, ns[IPv6].dst, ns[IPv6].hlim) == (A6, "ff02::1:ff00:2", 255)
    assert ns.haslayer(ICMPv6ND_NS)
    assert (ns[ICMPv6ND_NS].code, ns[ICMPv6ND_NS].tgt) == (0, B6)
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == hexmac(mac_a)
    # NA: unicast back, solicited + override, not router, TLLA option
    assert na[Ether].dst == hexmac(mac_a)
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (B6, A6, 255)
    adv = na[ICMPv6ND_NA]
    assert (adv.R, adv.S, adv.O, adv.tgt) == (0, 1, 1, B6)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == hexmac(mac_b)
    assert req.haslayer(ICMPv6EchoRequest)
    assert (req[IPv6].src, req[IPv6].dst, req[IPv6].hlim) == (A6, B6, 64)
    assert (req[ICMPv6EchoRequest].seq, bytes(req[ICMPv6EchoRequest].data)) == (1, b"ping6")
    assert rep.haslayer(ICMPv6EchoReply)
    assert (rep[IPv6].src, rep[IPv6].dst) == (B6, A6)
    assert rep[ICMPv6EchoReply].id == req[ICMPv6EchoRequest].id
    assert (rep[ICMPv6EchoReply].seq, bytes(rep[ICMPv6EchoReply].data)) == (1, b"ping6")
    for p in pkts:
        assert_checksums(p)
    nic_a = next(n for n in a.nics.values() if not n.loopback)
    assert nic_a.neigh6 is not None
    assert nic_a.neigh6.state(ip(B6)) == NudState.REACHABLE
    assert nic_a.neigh6.lookup(ip(B6)) == mac_b
    sa, sb = a.stats(), b.stats()
    assert sa["ndp"] == {"na-received": 1, "ns-sent": 1, "received": 1}
    assert sb["ndp"] == {"na-sent": 1, "ns-received": 1, "received": 1}
    assert sb["icmpv6"]["echo-reply-sent"] == 1


def test_l2_ping_link_local(tmp_path: Path) -> None:
    """The automatic fe80:: address (modified EUI-64 from the MAC) answers pings."""
    net, a, b, cap, _mac_a, mac_b = two_stacks(tmp_path, l2=True)
    ll_b = str(ipaddress.ip_address("fe80::" + in6_mactoifaceid(hexmac(mac_b))))
    assert ll_b in b.local_addresses()
    ping(net, a, 6, ll_b, 2, b"ll")
    cap.flush()
    ns = rdpcap(str(tmp_path / "a.pcap"))[0]
    assert ns[IPv6].src.startswith("fe80::")  # link-local target, link-local source
    assert ns[IPv6].hlim == 255


@pytest.mark.parametrize("family", [4, 6])
def test_l3_ping_has_no_address_resolution(tmp_path: Path, family: int) -> None:
    net, a, b, cap, _, _ = two_stacks(tmp_path, l2=False)
    dst = B4 if family == 4 else B6
    for seq in range(3):
        ping(net, a, family, dst, seq, bytes([seq]) * 10)
    cap.flush()
    pkts = rdpcap(str(tmp_path / "a.pcap"))
    assert len(pkts) == 6
    assert not any(p.haslayer(ARP) or p.haslayer(ICMPv6ND_NS) or p.haslayer(ICMPv6ND_NA)
                   for p in pkts)
    if family == 4:
        assert [p[ICMP].type for p in pkts] == [8, 0] * 3
        assert [p[ICMP].seq for p in pkts] == [0, 0, 1, 1, 2, 2]
    else:
        assert [type(p[IPv6].payload) for p in pkts] == [ICMPv6EchoRequest, ICMPv6EchoReply] * 3
    for p in pkts:
        assert_checksums(p)
    assert a.stats()["arp"] == {} and a.stats()["ndp"] == {}
    assert b.stats()["arp"] == {} and b.stats()["ndp"] == {}


def test_ping_sequence_and_identifier_demux() -> None:
    """Two echo endpoints on one stack each get only their own replies."""
    net = VirtualNetwork(seed=5)
    a, b = net.stack(), net.stack()
    ea, eb = link.pipe(l2=True, seed=5)
    a.add_nic(ea, [f"{A4}/24"])
    b.add_nic(eb, [f"{B4}/24"])
    e1, e2 = a.icmp_echo_endpoint(4), a.icmp_echo_endpoint(4)
    assert e1.ident != e2.ident
    for i in range(5):
        e1.send(ip(B4), i, b"one")
        e2.send(ip(B4), 100 + i, b"two")
    assert net.run(until=lambda: len(e1.replies) == 5 and len(e2.replies) == 5, timeout=5)
    assert [r[1] for r in e1.replies] == list(range(5))
    assert {r[2] for r in e1.replies} == {b"one"}
    assert [r[1] for r in e2.replies] == list(range(100, 105))
    assert {r[2] for r in e2.replies} == {b"two"}
    assert b.stats()["icmpv4"]["echo-reply-sent"] == 10
