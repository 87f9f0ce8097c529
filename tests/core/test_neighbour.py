"""The neighbour cache with ARP (RFC 826) and NDP (RFC 4861 §7.3): resolution, retries, the
pending-packet queue, NUD (REACHABLE → STALE → DELAY → PROBE) and the size cap.

The stack under test talks to a hand-driven pipe end; scapy builds what the "peer" says and
checks every solicitation the stack sends, and when.
"""

from __future__ import annotations

import pytest
from core_helpers import (
    PEER4,
    PEER6,
    PEER_MAC,
    STACK4,
    STACK6,
    STACK_MAC,
    Wire,
    ip,
    mac,
    to_stack,
    wired_stack,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from aionetstack import errors
from aionetstack.stack.neighbour import NeighbourCache, NudState
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

PEER = {4: PEER4, 6: PEER6}
OTHER_MAC = "02:00:00:00:00:99"


def setup(**options: object) -> tuple[VirtualNetwork, CoreStack, NIC, Wire]:
    net = VirtualNetwork(seed=31)
    s, nic, wire = wired_stack(net, static_peer=False, **options)  # type: ignore[arg-type]
    return net, s, nic, wire


def cache(nic: NIC, family: int) -> NeighbourCache:
    c = nic.neigh4 if family == 4 else nic.neigh6
    assert c is not None
    return c


def is_solicitation(f: Ether, family: int) -> bool:
    return f.haslayer(ARP) and f[ARP].op == 1 if family == 4 else f.haslayer(ICMPv6ND_NS)


def answer(wire: Wire, family: int, *, solicited: bool = True, override: bool = True,
           lladdr: str = PEER_MAC, target: str | None = None) -> None:
    """The peer answers: an ARP reply, or a Neighbor Advertisement."""
    if family == 4:
        wire.inject(Ether(src=lladdr, dst=STACK_MAC) / ARP(
            op=2, hwsrc=lladdr, psrc=target or PEER4, hwdst=STACK_MAC, pdst=STACK4))
    else:
        wire.inject(Ether(src=lladdr, dst=STACK_MAC) / IPv6(src=target or PEER6, dst=STACK6,
                                                              hlim=255)
                    / ICMPv6ND_NA(tgt=target or PEER6, S=int(solicited), O=int(override), R=0)
                    / ICMPv6NDOptDstLLAddr(lladdr=lladdr))


def check_multicast_solicitation(f: Ether, family: int, target: str) -> None:
    if family == 4:
        assert f[Ether].dst == "ff:ff:ff:ff:ff:ff"
        assert (f[ARP].op, f[ARP].pdst, f[ARP].psrc, f[ARP].hwsrc) == (1, target, STACK4,
                                                                       STACK_MAC)
    else:
        low = ip(target)[13:]
        assert f[Ether].dst == "33:33:ff:" + low.hex(":")
        assert ip(f[IPv6].dst) == ip("ff02::1:ff00:0")[:13] + low
        assert f[IPv6].hlim == 255
        assert f[ICMPv6ND_NS].tgt == target
        assert f[ICMPv6NDOptSrcLLAddr].lladdr == STACK_MAC


def udp_to(s: CoreStack, family: int, dst: str, payload: bytes, port: int = 9) -> None:
    ep = s.udp_endpoint(family)
    ep.sendto(payload, (dst, port))
    ep.close()


# -- resolution -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_incomplete_then_reachable_on_reply(family: int) -> None:
    _net, s, nic, wire = setup()
    udp_to(s, family, PEER[family], b"waiting")
    frames = [Ether(f) for f in wire.take()]
    assert len(frames) == 1
    check_multicast_solicitation(frames[0], family, PEER[family])
    c = cache(nic, family)
    assert c.state(ip(PEER[family])) == NudState.INCOMPLETE
    assert c.lookup(ip(PEER[family])) is None
    answer(wire, family)
    assert c.state(ip(PEER[family])) == NudState.REACHABLE
    assert c.lookup(ip(PEER[family])) == mac(PEER_MAC)
    out = [Ether(f) for f in wire.take()]
    assert len(out) == 1  # the queued datagram, now framed for the peer
    assert out[0][Ether].dst == PEER_MAC
    assert bytes(out[0][UDP].payload) == b"waiting"
    # a reachable entry is used directly, no further solicitation
    udp_to(s, family, PEER[family], b"direct")
    out = [Ether(f) for f in wire.take()]
    assert [bytes(f[UDP].payload) for f in out] == [b"direct"]
    assert s.stats()["neighbour"]["solicit-sent"] == 1


@pytest.mark.parametrize("family", [4, 6])
def test_three_solicitations_then_unreachable(family: int) -> None:
    net, s, nic, wire = setup()
    t0 = net.now
    ping = s.icmp_echo_endpoint(family)
    ping.send(ip(PEER[family]), 1, b"hello?")
    conn = s.udp_endpoint(family)
    conn.connect(PEER[family], 53)
    conn.send(b"q1")
    conn.send(b"q2")
    err_events: list[int] = []
    conn.waiter.register(err_events.append)
    net.run(duration=10.0)
    sent = [(t - t0, Ether(f)) for t, f in wire.take_timed()]
    assert [t for t, _ in sent] == [0.0, 1.0, 2.0]  # RFC 4861 RETRANS_TIMER, 3 tries
    for _, f in sent:
        check_multicast_solicitation(f, family, PEER[family])
    assert cache(nic, family).state(ip(PEER[family])) is None
    with pytest.raises(errors.HostUnreachable) as exc_info:
        ping.recv()
    assert isinstance(exc_info.value, OSError)
    with pytest.raises(errors.HostUnreachable):
        conn.recvfrom()
    assert err_events == [8]  # EVENT_ERR
    st = s.stats()["neighbour"]
    assert st["failed"] == 1
    assert st["solicit-sent"] == 3
    assert st["dropped.unresolved"] == 3  # the echo request and both datagrams


def test_unresolved_gateway_reported_for_destinations_behind_it() -> None:
    net, s, _nic, wire = setup()
    s.add_route("0.0.0.0/0", gateway=PEER4)
    far = "203.0.113.1"
    ping = s.icmp_echo_endpoint(4)
    ping.send(ip(far), 1)
    conn = s.udp_endpoint(4)
    conn.connect(far, 53)
    conn.send(b"x")
    net.run(duration=10.0)
    arps = [Ether(f) for f in wire.take()]
    assert len(arps) == 3
    assert {f[ARP].pdst for f in arps} == {PEER4}  # the gateway is resolved, not `far`
    with pytest.raises(errors.HostUnreachable):
        ping.recv()
    with pytest.raises(errors.HostUnreachable):
        conn.recvfrom()


@pytest.mark.parametrize("family", [4, 6])
def test_pending_queue_is_capped(family: int) -> None:
    _net, s, _nic, wire = setup()
    ep = s.udp_endpoint(family)
    for i in range(100):
        ep.sendto(i.to_bytes(2, "big"), (PEER[family], 9))
    assert len(wire.take()) == 1  # one solicitation, however many packets wait
    answer(wire, family)
    out = [Ether(f) for f in wire.take()]
    assert len(out) == 32
    # the newest are kept (Linux's unresolved queue drops from the head)
    assert [int.from_bytes(bytes(f[UDP].payload), "big") for f in out] == list(range(68, 100))
    assert s.stats()["neighbour"]["dropped.queue-full"] == 68


# -- neighbour unreachability detection -----------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_reachable_stale_delay_probe_deleted(family: int) -> None:
    net, s, nic, wire = setup()
    peer = ip(PEER[family])
    c = cache(nic, family)
    udp_to(s, family, PEER[family], b"1")
    answer(wire, family)
    wire.take()
    t0 = net.now
    assert c.state(peer) == NudState.REACHABLE
    net.run(duration=29.9)
    assert c.state(peer) == NudState.REACHABLE
    net.run(duration=0.2)
    assert c.state(peer) == NudState.STALE  # REACHABLE_TIME 30 s
    assert c.lookup(peer) == mac(PEER_MAC)  # still usable
    net.run(duration=100)  # STALE has no timer
    assert c.state(peer) == NudState.STALE
    assert wire.take() == []
    t1 = net.now
    udp_to(s, family, PEER[family], b"2")  # sent at once, through the stale entry ...
    out = [Ether(f) for f in wire.take()]
    assert [bytes(f[UDP].payload) for f in out] == [b"2"]
    assert c.state(peer) == NudState.DELAY  # ... which now waits for a confirmation
    net.run(duration=20)
    probes = [(t - t1, Ether(f)) for t, f in wire.take_timed()]
    assert [t for t, _ in probes] == [5.0, 6.0, 7.0]  # DELAY_FIRST_PROBE_TIME, then RETRANS
    for _, f in probes:  # unicast probes to the cached address
        assert f[Ether].dst == PEER_MAC
        if family == 4:
            assert (f[ARP].op, f[ARP].pdst, f[ARP].psrc) == (1, PEER4, STACK4)
        else:
            assert (f[IPv6].dst, f[IPv6].hlim, f[ICMPv6ND_NS].tgt) == (PEER6, 255, PEER6)
    assert c.state(peer) is None  # unanswered: deleted
    st = s.stats()["neighbour"]
    assert st["failed"] == 1
    assert st["solicit-sent"] == 4
    assert t0 < t1


@pytest.mark.parametrize("family", [4, 6])
def test_probe_answered_becomes_reachable(family: int) -> None:
    net, s, nic, wire = setup()
    peer = ip(PEER[family])
    c = cache(nic, family)
    udp_to(s, family, PEER[family], b"1")
    answer(wire, family)
    net.run(duration=31)
    udp_to(s, family, PEER[family], b"2")
    net.run(duration=5.5)
    assert c.state(peer) == NudState.PROBE
    wire.take()
    answer(wire, family)
    assert c.state(peer) == NudState.REACHABLE
    net.run(duration=10)
    assert wire.take() == []  # no more probes
    assert s.stats()["neighbour"].get("failed", 0) == 0


def test_delay_confirmed_before_probing() -> None:
    net, s, nic, wire = setup()
    c = cache(nic, 4)
    udp_to(s, 4, PEER4, b"1")
    answer(wire, 4)
    net.run(duration=31)
    udp_to(s, 4, PEER4, b"2")
    assert c.state(ip(PEER4)) == NudState.DELAY
    net.run(duration=2)
    answer(wire, 4)
    assert c.state(ip(PEER4)) == NudState.REACHABLE
    wire.take()
    net.run(duration=10)
    assert wire.take() == []


def test_max_entries_evicts_the_oldest_dynamic_entry() -> None:
    _net, s, nic, _wire = setup()
    c = cache(nic, 4)
    s.add_neighbour("198.18.0.50", "02:00:00:00:00:50", nic)  # static: never evicted
    c.max_entries = 3
    for host in (10, 11, 12, 13):
        udp_to(s, 4, f"198.18.0.{host}", b"x")
    assert len(c) == 3
    assert c.state(ip("198.18.0.50")) == NudState.STATIC
    assert c.state(ip("198.18.0.10")) is None  # the oldest went first ...
    assert c.state(ip("198.18.0.11")) is None  # ... and then the next
    assert c.state(ip("198.18.0.13")) == NudState.INCOMPLETE
    st = s.stats()["neighbour"]
    assert st["evicted"] == 2
    assert st["dropped.unresolved"] == 2  # their queued datagrams


# -- ARP details ----------------------------------------------------------------------------------


def test_arp_request_for_us_is_answered_and_teaches_the_sender() -> None:
    _net, _s, nic, wire = setup()
    wire.inject(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst=STACK4))
    r = [Ether(f) for f in wire.take()]
    assert len(r) == 1
    a = r[0]
    assert (a[Ether].src, a[Ether].dst) == (STACK_MAC, PEER_MAC)
    assert (a[ARP].op, a[ARP].hwsrc, a[ARP].psrc, a[ARP].hwdst, a[ARP].pdst) == (
        2, STACK_MAC, STACK4, PEER_MAC, PEER4)
    c = cache(nic, 4)
    assert c.state(ip(PEER4)) == NudState.STALE  # RFC 4861 §7.2.3 semantics
    assert c.lookup(ip(PEER4)) == mac(PEER_MAC)


def test_arp_not_for_us_creates_nothing_but_refreshes() -> None:
    _net, s, nic, wire = setup()
    c = cache(nic, 4)
    wire.inject(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst="198.18.0.77"))
    assert c.state(ip(PEER4)) is None
    assert wire.take() == []
    # an unsolicited reply creates nothing either
    answer(wire, 4)
    assert c.state(ip(PEER4)) is None
    # once the entry exists, a gratuitous ARP with a new address updates it (STALE)
    udp_to(s, 4, PEER4, b"x")
    answer(wire, 4)
    assert c.state(ip(PEER4)) == NudState.REACHABLE
    wire.inject(Ether(src=OTHER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=OTHER_MAC, psrc=PEER4, pdst=PEER4))
    assert c.lookup(ip(PEER4)) == mac(OTHER_MAC)
    assert c.state(ip(PEER4)) == NudState.STALE


def test_arp_from_own_or_bad_mac_is_dropped() -> None:
    _net, s, nic, wire = setup()
    wire.inject(Ether(src=STACK_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=STACK_MAC, psrc=PEER4, pdst=STACK4))
    wire.inject(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc="01:00:5e:00:00:01", psrc=PEER4, pdst=STACK4))
    wire.inject(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=9, hwsrc=PEER_MAC, psrc=PEER4, pdst=STACK4))
    assert wire.take() == []
    st = s.stats()["arp"]
    assert (st["dropped.own-frame"], st["dropped.bad-sender-mac"], st["dropped.unknown-op"]) == (
        1, 1, 1)
    assert cache(nic, 4).state(ip(PEER4)) is None


# -- NDP details ----------------------------------------------------------------------------------


def test_neighbor_solicitation_for_us_is_answered() -> None:
    _net, _s, nic, wire = setup()
    ns = IPv6(src=PEER6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=STACK6) / \
        ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC)
    wire.inject(to_stack(ns, dst_mac="33:33:ff:00:00:01"))
    r = [Ether(f) for f in wire.take()]
    assert len(r) == 1
    na = r[0]
    assert (na[Ether].dst, na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (
        PEER_MAC, STACK6, PEER6, 255)
    adv = na[ICMPv6ND_NA]
    assert (adv.R, adv.S, adv.O, adv.tgt) == (0, 1, 1, STACK6)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == STACK_MAC
    c = cache(nic, 6)
    assert c.state(ip(PEER6)) == NudState.STALE
    assert c.lookup(ip(PEER6)) == mac(PEER_MAC)


def test_dad_probe_is_answered_to_all_nodes() -> None:
    _net, _s, nic, wire = setup()
    ns = IPv6(src="::", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=STACK6)
    wire.inject(to_stack(ns, dst_mac="33:33:ff:00:00:01"))
    r = [Ether(f) for f in wire.take()]
    assert len(r) == 1
    assert (r[0][Ether].dst, r[0][IPv6].dst) == ("33:33:00:00:00:01", "ff02::1")
    assert (r[0][ICMPv6ND_NA].S, r[0][ICMPv6ND_NA].O) == (0, 1)
    assert cache(nic, 6).state(ip("::")) is None


def test_neighbor_solicitation_for_someone_else_is_ignored() -> None:
    _net, s, _nic, wire = setup()
    ns = IPv6(src=PEER6, dst="ff02::1:ff00:77", hlim=255) / ICMPv6ND_NS(tgt="fd00::77") / \
        ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC)
    wire.inject(to_stack(ns, dst_mac="33:33:ff:00:00:77"))
    assert wire.take() == []
    # the solicited-node group of fd00::77 is not joined: dropped before NDP sees it
    assert s.stats()["ipv6"]["dropped.multicast-not-joined"] == 1
    ns2 = IPv6(src=PEER6, dst=STACK6, hlim=255) / ICMPv6ND_NS(tgt="fd00::77")
    wire.inject(to_stack(ns2))
    assert wire.take() == []
    assert s.stats()["ndp"]["dropped.not-our-target"] == 1


def test_advertisement_override_rules() -> None:
    """RFC 4861 §7.2.5: without O a solicited NA does not replace a known address."""
    _net, s, nic, wire = setup()
    c = cache(nic, 6)
    udp_to(s, 6, PEER6, b"x")
    answer(wire, 6)
    assert c.state(ip(PEER6)) == NudState.REACHABLE
    answer(wire, 6, solicited=True, override=False, lladdr=OTHER_MAC)
    assert c.lookup(ip(PEER6)) == mac(PEER_MAC)
    assert c.state(ip(PEER6)) == NudState.STALE
    answer(wire, 6, solicited=False, override=True, lladdr=OTHER_MAC)
    assert c.lookup(ip(PEER6)) == mac(OTHER_MAC)
    assert c.state(ip(PEER6)) == NudState.STALE
    answer(wire, 6, solicited=True, override=True, lladdr=OTHER_MAC)
    assert c.state(ip(PEER6)) == NudState.REACHABLE
    # an advertisement for an unknown neighbour creates nothing
    answer(wire, 6, target="fd00::55")
    assert c.state(ip("fd00::55")) is None


def test_static_entry_is_never_replaced() -> None:
    net, s, nic, wire = setup()
    s.add_neighbour(PEER4, PEER_MAC, nic)
    answer(wire, 4, lladdr=OTHER_MAC)
    wire.inject(Ether(src=OTHER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=OTHER_MAC, psrc=PEER4, pdst=STACK4))
    c = cache(nic, 4)
    assert (c.state(ip(PEER4)), c.lookup(ip(PEER4))) == (NudState.STATIC, mac(PEER_MAC))
    net.run(duration=100)
    assert c.state(ip(PEER4)) == NudState.STATIC
    udp_to(s, 4, PEER4, b"x")
    out = [Ether(f) for f in wire.take() if Ether(f).haslayer(IP)]
    assert out[-1][Ether].dst == PEER_MAC
