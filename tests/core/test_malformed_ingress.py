"""Malformed and hostile input through the whole ingress path.

Each frame is injected over a pipe into a stack that verifies every checksum; it must be dropped,
counted under the right ``stats()`` key, answered by nothing, and never raise.  A hypothesis test
then feeds random bytes and mutated valid frames straight into ``NIC.link_deliver``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest
from core_helpers import (
    PEER4,
    PEER6,
    PEER_MAC,
    STACK4,
    STACK6,
    STACK_MAC,
    Wire,
    to_stack,
    wired_stack,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from aionetstack import link
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

ETH = bytes(Ether(src=PEER_MAC, dst=STACK_MAC, type=0x0800))[:12]


def eth(ethertype: int, payload: bytes) -> bytes:
    return ETH + struct.pack("!H", ethertype) + payload


def ipv4_raw(*, options: bytes = b"", payload: bytes = b"", src: str = PEER4,
             dst: str = STACK4, proto: int = 17, total: int | None = None,
             ihl: int | None = None, good_checksum: bool = True) -> bytes:
    """An IPv4 header built by hand (scapy would 'fix' what we want broken)."""
    hl = 20 + len(options)
    assert hl % 4 == 0
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl if ihl is not None else hl // 4),
                                0, total if total is not None else hl + len(payload), 1, 0, 64,
                                proto, 0, _a(src), _a(dst)))
    hdr += options
    csum = checksum(bytes(hdr))
    hdr[10:12] = struct.pack("!H", csum if good_checksum else csum ^ 0x5555)
    return bytes(hdr) + payload


def _a(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def v6(*layers: object, src: str = PEER6, dst: str = STACK6, hlim: int = 64) -> IPv6:
    pkt = IPv6(src=src, dst=dst, hlim=hlim)
    for layer in layers:
        pkt = pkt / layer
    return pkt


def many_dest_opts(n: int) -> bytes:
    pkt: object = IPv6(src=PEER6, dst=STACK6)
    for _ in range(n):
        pkt = pkt / IPv6ExtHdrDestOpt()  # type: ignore[operator]
    return bytes(pkt / UDP(sport=1, dport=9))  # type: ignore[operator]


# (id, builder, kind, stats protocol, counter).  kind: "frame" (a whole Ethernet frame, L2 only),
# "v4"/"v6" (an IP packet carried as that ethertype on L2, bare on L3), or "v4-l2"/"v6-l2"
# (as "v4"/"v6" but L2 only)
Case = tuple[str, Callable[[], bytes], str, str, str]

UDP_OK = bytes(UDP(sport=1, dport=9))

CASES: list[Case] = [
    # -- link / Ethernet / ARP (L2 only; the builder returns a whole frame)
    ("eth-truncated", lambda: bytes(Ether(src=PEER_MAC, dst=STACK_MAC))[:10], "frame",
     "ethernet", "malformed.truncated"),
    ("eth-vlan-truncated", lambda: eth(0x8100, b"\x00"), "frame", "ethernet",
     "malformed.truncated"),
    ("eth-unknown-type", lambda: eth(0x88B5, b"\x00" * 46), "frame", "ethernet",
     "dropped.unknown-ethertype"),
    ("eth-not-for-us", lambda: bytes(Ether(src=PEER_MAC, dst="02:00:00:00:00:77")
                                     / IP(src=PEER4, dst=STACK4) / UDP()), "frame", "ethernet",
     "dropped.not-for-us"),
    ("arp-truncated", lambda: bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / ARP(
        op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst=STACK4))[:14 + 20], "frame", "arp",
     "malformed.truncated"),
    ("arp-truncated-fixed", lambda: eth(0x0806, b"\x00\x01"), "frame", "arp",
     "malformed.truncated"),
    ("arp-unsupported", lambda: bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / ARP(
        hwtype=6, op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst=STACK4)), "frame", "arp",
     "malformed.unsupported"),
    # -- IPv4
    ("ipv4-truncated", lambda: ipv4_raw(payload=UDP_OK)[:12], "v4", "ipv4",
     "malformed.truncated"),
    ("ipv4-ihl-too-small", lambda: ipv4_raw(payload=UDP_OK, ihl=4), "v4", "ipv4",
     "malformed.bad-length"),
    ("ipv4-ihl-past-end", lambda: ipv4_raw(payload=b"", ihl=15), "v4", "ipv4",
     "malformed.truncated"),
    ("ipv4-total-length-past-frame", lambda: ipv4_raw(payload=UDP_OK, total=200), "v4",
     "ipv4", "malformed.bad-length"),
    ("ipv4-total-length-below-header", lambda: ipv4_raw(payload=UDP_OK, total=12), "v4",
     "ipv4", "malformed.bad-length"),
    ("ipv4-bad-header-checksum", lambda: ipv4_raw(payload=UDP_OK, good_checksum=False), "v4",
     "ipv4", "malformed.bad-checksum"),
    ("ipv4-option-length-1", lambda: ipv4_raw(options=b"\x07\x01\x00\x00", payload=UDP_OK),
     "v4", "ipv4", "malformed.bad-option"),
    ("ipv4-option-length-0", lambda: ipv4_raw(options=b"\x44\x00\x00\x00", payload=UDP_OK),
     "v4", "ipv4", "malformed.bad-option"),
    ("ipv4-option-past-header", lambda: ipv4_raw(options=b"\x01\x07\x08\x00", payload=UDP_OK),
     "v4", "ipv4", "malformed.bad-option"),
    ("ipv4-option-no-length", lambda: ipv4_raw(options=b"\x01\x01\x01\x83", payload=UDP_OK),
     "v4", "ipv4", "malformed.bad-option"),
    ("ipv4-bad-version-in-ipv4-frame", lambda: b"\x55" + ipv4_raw(payload=UDP_OK)[1:], "v4",
     "ipv4", "malformed.bad-version"),
    ("ipv4-land", lambda: ipv4_raw(src=STACK4, payload=UDP_OK), "v4", "ipv4",
     "dropped.martian-source"),
    ("ipv4-land-foreign", lambda: ipv4_raw(src="198.18.0.9", dst="198.18.0.9", payload=UDP_OK),
     "v4", "ipv4", "dropped.martian-source"),
    ("ipv4-src-multicast", lambda: ipv4_raw(src="224.0.0.5", payload=UDP_OK), "v4", "ipv4",
     "dropped.martian-source"),
    ("ipv4-src-broadcast", lambda: ipv4_raw(src="255.255.255.255", payload=UDP_OK), "v4",
     "ipv4", "dropped.martian-source"),
    ("ipv4-src-directed-broadcast", lambda: ipv4_raw(src="198.18.0.255", payload=UDP_OK), "v4",
     "ipv4", "dropped.martian-source"),
    ("ipv4-src-loopback", lambda: ipv4_raw(src="127.0.0.1", payload=UDP_OK), "v4", "ipv4",
     "dropped.martian-source"),
    ("ipv4-dst-loopback", lambda: ipv4_raw(dst="127.0.0.1", payload=UDP_OK), "v4", "ipv4",
     "dropped.martian-source"),
    ("ipv4-src-zero-not-udp", lambda: bytes(IP(src="0.0.0.0", dst=STACK4) / ICMP()), "v4",
     "ipv4", "dropped.martian-source"),
    # -- IPv6
    ("ipv6-truncated", lambda: bytes(v6(UDP()))[:30], "v6", "ipv6", "malformed.truncated"),
    ("ipv6-payload-length-past-frame", lambda: bytes(v6(UDP(), Raw(b"x" * 8)))[:-4], "v6",
     "ipv6", "malformed.bad-length"),
    ("ipv6-bad-version-in-ipv6-frame", lambda: b"\x45" + bytes(v6(UDP()))[1:], "v6-l2", "ipv6",
     "malformed.bad-version"),
    ("ipv6-ext-runs-off-end", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=60) / Raw(b"\x11"
                                                                                      * 4)),
     "v6", "ipv6", "malformed.truncated"),
    ("ipv6-ext-length-past-end", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=60)
                                               / Raw(b"\x11\x05" + b"\x01\x04" + b"\0" * 4)),
     "v6", "ipv6", "malformed.truncated"),
    ("ipv6-fragment-header-truncated", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=44)
                                                     / Raw(b"\x11\x00\x00")), "v6", "ipv6",
     "malformed.truncated"),
    ("ipv6-option-past-header", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=60)
                                              / Raw(b"\x11\x00" + b"\x01\x09" + b"\0" * 4)
                                              / UDP_OK), "v6", "ipv6", "malformed.bad-option"),
    ("ipv6-17-extension-headers", lambda: many_dest_opts(17), "v6", "ipv6",
     "malformed.bad-header"),
    ("ipv6-hop-by-hop-not-first", lambda: bytes(v6(IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop(),
                                                   UDP())), "v6", "ipv6",
     "malformed.bad-header"),
    ("ipv6-land", lambda: bytes(v6(UDP(), src=STACK6)), "v6", "ipv6", "dropped.martian-source"),
    ("ipv6-src-multicast", lambda: bytes(v6(UDP(), src="ff02::1")), "v6", "ipv6",
     "dropped.martian-source"),
    ("ipv6-src-loopback", lambda: bytes(v6(UDP(), src="::1")), "v6", "ipv6",
     "dropped.martian-source"),
    ("ipv6-dst-loopback", lambda: bytes(v6(UDP(), dst="::1")), "v6", "ipv6",
     "dropped.martian-source"),
    ("ipv6-multicast-not-joined", lambda: bytes(v6(UDP(), dst="ff02::1:ff99:9999")), "v6",
     "ipv6", "dropped.multicast-not-joined"),
    ("ipv6-not-for-us", lambda: bytes(v6(UDP(), dst="fd00::99")), "v6", "ipv6",
     "dropped.not-for-us"),
    # -- UDP
    ("udp-truncated-v4", lambda: ipv4_raw(payload=UDP_OK[:4]), "v4", "udp",
     "malformed.truncated"),
    ("udp-truncated-v6", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=17) / Raw(UDP_OK[:5])),
     "v6", "udp", "malformed.truncated"),
    ("udp-length-past-ip", lambda: ipv4_raw(payload=bytes(UDP(sport=1, dport=9, len=40))),
     "v4", "udp", "malformed.bad-length"),
    ("udp-length-below-header", lambda: ipv4_raw(payload=bytes(UDP(sport=1, dport=9, len=4))),
     "v4", "udp", "malformed.bad-length"),
    # -- ICMP
    ("icmpv4-truncated", lambda: ipv4_raw(proto=1, payload=b"\x08\x00\xf7"), "v4", "icmpv4",
     "malformed.truncated"),
    ("icmpv6-truncated", lambda: bytes(IPv6(src=PEER6, dst=STACK6, nh=58) / Raw(b"\x80\x00")),
     "v6", "icmpv6", "malformed.truncated"),
    ("icmpv6-bad-quote", lambda: bytes(v6(ICMPv6DestUnreach(), Raw(b"\x60" + b"\0" * 10))),
     "v6", "icmpv6", "malformed.bad-quote"),
    # -- NDP
    ("ndp-option-length-0", lambda: bytes(v6(ICMPv6ND_NS(tgt=STACK6), Raw(b"\x01\x00" + b"\0" * 6),
                                             hlim=255)), "v6", "ndp", "malformed.bad-option"),
    ("ndp-option-past-end", lambda: bytes(v6(ICMPv6ND_NS(tgt=STACK6), Raw(b"\x01\x02" + b"\0" * 6),
                                             hlim=255)), "v6", "ndp", "malformed.bad-option"),
    ("ndp-ns-hop-limit-254", lambda: bytes(v6(ICMPv6ND_NS(tgt=STACK6),
                                              ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC), hlim=254)),
     "v6", "ndp", "dropped.bad-hop-limit-or-code"),
    ("ndp-na-hop-limit-254", lambda: bytes(v6(ICMPv6ND_NA(tgt=PEER6, S=1, O=1),
                                              ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC), hlim=254)),
     "v6", "ndp", "dropped.bad-hop-limit-or-code"),
    ("ndp-ns-code-1", lambda: bytes(v6(ICMPv6ND_NS(tgt=STACK6, code=1), hlim=255)), "v6", "ndp",
     "dropped.bad-hop-limit-or-code"),
    ("ndp-ns-multicast-target", lambda: bytes(v6(ICMPv6ND_NS(tgt="ff02::1"), hlim=255)), "v6",
     "ndp", "malformed.bad-header"),
    ("ndp-ns-truncated", lambda: bytes(IPv6(src=PEER6, dst=STACK6, hlim=255, nh=58)
                                          / Raw(b"\x87\x00\x00\x00" + b"\0" * 8)),
     "v6", "ndp", "malformed.truncated"),
    ("ndp-solicited-na-to-multicast", lambda: bytes(v6(ICMPv6ND_NA(tgt=PEER6, S=1, O=1),
                                                       ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC),
                                                       dst="ff02::1", hlim=255)), "v6", "ndp",
     "malformed.bad-advert"),
]


def _fix_icmpv6(pkt: bytes) -> bytes:
    """Raw ICMPv6 bodies (type 135 in a Raw layer) get their checksum computed by scapy."""
    p = IPv6(pkt)
    if p.nh == 58 and isinstance(p.payload, Raw):
        from scapy.layers.inet6 import in6_chksum

        body = bytearray(bytes(p.payload))
        body[2:4] = b"\0\0"
        body[2:4] = struct.pack("!H", in6_chksum(58, p, bytes(body)))
        return bytes(p)[:40] + bytes(body)
    return pkt


@pytest.mark.parametrize("l2", [True, False], ids=["l2", "l3"])
@pytest.mark.parametrize(("name", "build", "kind", "proto", "counter"), CASES,
                         ids=[c[0] for c in CASES])
def test_malformed_frame_is_dropped_and_counted(name: str, build: Callable[[], bytes],
                                                kind: str, proto: str, counter: str,
                                                l2: bool) -> None:
    if not l2 and (kind == "frame" or kind.endswith("-l2")):
        pytest.skip("link-layer case")
    net = VirtualNetwork(seed=41)
    s, _nic, wire = wired_stack(net, l2=l2)
    ep4, ep6 = s.udp_endpoint(4), s.udp_endpoint(6)
    ep4.bind(None, 9)
    ep6.bind(None, 9)
    data = build()
    if kind == "frame":
        frame = data
    else:
        if kind.startswith("v6") and name.startswith(("ndp-", "icmpv6-")):
            data = _fix_icmpv6(data)
        frame = eth(0x0800 if kind.startswith("v4") else 0x86DD, data) if l2 else data
    if not l2 and "bad-version" in name:
        proto, counter = "link", "malformed.bad-version"  # an L3 NIC reads the version nibble
    before = s.stats()
    wire.inject(frame)
    net.run(duration=5.0)
    after = s.stats()
    assert after[proto].get(counter, 0) == before[proto].get(counter, 0) + 1, after[proto]
    assert wire.take() == []  # nothing answered, nothing forwarded
    assert not ep4.queue and not ep6.queue
    assert after["udp"].get("delivered", 0) == 0
    assert after["icmpv4"].get("error-sent.3", 0) == 0


def test_l3_nic_rejects_empty_and_unknown_version() -> None:
    net = VirtualNetwork(seed=41)
    s, nic, _wire = wired_stack(net, l2=False)
    nic.link_deliver(memoryview(b""))
    nic.link_deliver(memoryview(b"\x70" + bytes(39)))
    st = s.stats()["link"]
    assert (st["malformed.empty"], st["malformed.bad-version"]) == (1, 1)
    assert st["rx-frames"] == 2


def test_fragments_of_malformed_sizes() -> None:
    """Fragment-level nonsense: a non-final IPv6 fragment not a multiple of 8 gets a parameter
    problem (RFC 8200 §4.5); a ping of death is dropped."""
    net = VirtualNetwork(seed=41)
    s, _nic, wire = wired_stack(net)
    odd = v6(IPv6ExtHdrFragment(nh=17, m=1, offset=0, id=7), Raw(b"x" * 13))
    wire.inject(to_stack(odd))
    out = [Ether(f) for f in wire.take()]
    assert len(out) == 1 and out[0][IPv6].nh == 58
    assert bytes(out[0][IPv6].payload)[:2] == b"\x04\x00"  # param problem code 0
    assert s.stats()["ipv6"]["dropped.bad-fragment-length"] == 1
    big = IP(src=PEER4, dst=STACK4, id=99, proto=1) / Raw(b"x" * 1480)
    head = IP(bytes(big))
    head.flags = "MF"
    wire.inject(to_stack(head))
    tail = IP(src=PEER4, dst=STACK4, id=99, proto=1, frag=65528 // 8) / Raw(b"y" * 100)
    wire.inject(to_stack(tail))
    assert wire.take() == []
    assert s.stats()["fragment"].get("reassembled", 0) == 0


# -- property: arbitrary bytes never raise --------------------------------------------------------


def _valid_frames() -> list[bytes]:
    ns = v6(ICMPv6ND_NS(tgt=STACK6), ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
            dst="ff02::1:ff00:1", hlim=255)
    pkts: list[object] = [
        IP(src=PEER4, dst=STACK4) / UDP(sport=1, dport=9) / Raw(b"hello"),
        IP(src=PEER4, dst=STACK4) / UDP(sport=1, dport=10) / Raw(b"closed"),
        IP(src=PEER4, dst=STACK4) / ICMP(type=8, id=1, seq=1) / Raw(b"ping"),
        IP(src=PEER4, dst=STACK4) / ICMP(type=3, code=4, nexthopmtu=600)
        / Raw(bytes(IP(src=STACK4, dst="203.0.113.1") / UDP(sport=9, dport=1))),
        IP(src=PEER4, dst="203.0.113.1", ttl=1) / UDP(sport=1, dport=2),
        IP(src=PEER4, dst="198.19.0.5") / UDP(sport=1, dport=2) / Raw(b"fwd" * 500),
        IP(src=PEER4, dst="255.255.255.255") / UDP(sport=1, dport=9),
        IP(src=PEER4, dst=STACK4, options=[b"\x07\x07\x04\0\0\0\0\0"]) / UDP(sport=1, dport=9),
        *fragment(IP(src=PEER4, dst=STACK4) / UDP(sport=1, dport=9) / Raw(b"f" * 3000), 1000),
        v6(UDP(sport=1, dport=9), Raw(b"hello6")),
        v6(ICMPv6EchoRequest(id=1, seq=2, data=b"ping6")),
        v6(IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x9E, optdata=b"ab")]),
           UDP(sport=1, dport=9)),
        v6(IPv6ExtHdrRouting(addresses=["fd00::5"], segleft=1), UDP(sport=1, dport=9)),
        v6(IPv6ExtHdrFragment(nh=17, m=1, offset=0, id=5), Raw(bytes(UDP(sport=1, dport=9,
                                                                           len=24)) + b"x" * 8)),
        v6(IPv6ExtHdrFragment(nh=17, m=0, offset=2, id=5), Raw(b"y" * 8)),
        v6(ICMPv6DestUnreach(code=4), Raw(bytes(v6(UDP(sport=9, dport=1), src=STACK6,
                                                   dst="2001:db8::1")))),
        v6(UDP(sport=1, dport=2), dst="fd00:2::5"),
        ns,
        v6(ICMPv6ND_NA(tgt=PEER6, S=1, O=1), ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC), hlim=255),
    ]
    frames = [bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / p) for p in pkts]  # type: ignore[operator]
    frames.append(bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst=STACK4)))
    frames.append(bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / ARP(
        op=2, hwsrc=PEER_MAC, psrc=PEER4, hwdst=STACK_MAC, pdst=STACK4)))
    frames.append(bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / Dot1Q(vlan=5)
                        / IP(src=PEER4, dst=STACK4) / UDP(sport=1, dport=9)))
    return frames


VALID = _valid_frames()


class Rig:
    """Stacks kept across hypothesis examples (state accumulating is part of the test)."""

    def __init__(self, l2: bool, verify: bool) -> None:
        self.net = VirtualNetwork(seed=42)
        self.stack: CoreStack
        self.nic: NIC
        self.wire: Wire
        self.stack, self.nic, self.wire = wired_stack(self.net, l2=l2, verify=verify,
                                                      forwarding=True)
        far, _ = link.pipe(l2=l2, seed=1)
        self.stack.add_nic(far, ["198.19.0.1/24", "fd00:2::1/64"])
        self.stack.add_route("0.0.0.0/0", gateway=PEER4)
        self.stack.add_route("::/0", gateway=PEER6)
        for family in (4, 6):
            ep = self.stack.udp_endpoint(family)
            ep.bind(None, 9)
            c = self.stack.udp_endpoint(family)
            c.connect("203.0.113.1" if family == 4 else "2001:db8::1", 1)

    def feed(self, frame: bytes, advance: float) -> None:
        self.nic.link_deliver(memoryview(frame))
        self.net.settle()
        if advance:
            self.net.run(duration=advance)
        self.wire.take()
        for ep in list(self.stack.udp._endpoints):
            while ep.queue:
                ep.recvfrom()
            ep.error = None


RIGS: dict[tuple[bool, bool], Rig] = {}


def rig(l2: bool, verify: bool) -> Rig:
    key = (l2, verify)
    if key not in RIGS:
        RIGS[key] = Rig(l2, verify)
    return RIGS[key]


def _as_l3(frame: bytes) -> bytes:
    return frame[18:] if frame[12:14] == b"\x81\x00" else frame[14:]


@st.composite
def mutated(draw: st.DrawFn, l2: bool) -> bytes:
    base = draw(st.sampled_from(VALID))
    frame = bytearray(base if l2 else _as_l3(base))
    for _ in range(draw(st.integers(0, 6))):
        if not frame:
            break
        pos = draw(st.integers(0, len(frame) - 1))
        frame[pos] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    if draw(st.integers(0, 4)) == 0:
        frame += draw(st.binary(max_size=64))
    return bytes(frame)


frames_l2 = st.one_of(st.binary(max_size=200), mutated(True))
frames_l3 = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v, b: bytes([v]) + b, st.sampled_from([0x45, 0x46, 0x4F, 0x60]),
              st.binary(max_size=120)),
    mutated(False),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames_l2, verify=st.booleans(), advance=st.sampled_from([0.0, 0.0, 0.5, 31.0]))
def test_random_and_mutated_frames_never_raise_l2(frame: bytes, verify: bool,
                                                  advance: float) -> None:
    rig(True, verify).feed(frame, advance)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames_l3, verify=st.booleans(), advance=st.sampled_from([0.0, 0.0, 0.5, 31.0]))
def test_random_and_mutated_frames_never_raise_l3(frame: bytes, verify: bool,
                                                  advance: float) -> None:
    rig(False, verify).feed(frame, advance)


def test_valid_corpus_is_accepted() -> None:
    """The corpus the mutations start from is itself valid: most of it is delivered."""
    r = Rig(True, True)
    for f in VALID:
        r.nic.link_deliver(memoryview(f))
        r.net.settle()
    st_ = r.stack.stats()
    assert st_["udp"]["delivered"] >= 4
    assert st_["ipv4"].get("malformed", 0) == 0
    assert st_["ipv6"].get("malformed", 0) == 0
    assert st_["ethernet"] == {}
    assert st_["fragment"]["reassembled"] >= 1
