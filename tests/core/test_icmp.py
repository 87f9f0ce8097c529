"""ICMPv4 (RFC 792, RFC 1122 §3.2.2) and ICMPv6 (RFC 4443): packets injected with scapy into a
stack through a hand-driven pipe end, and the exact reply (or silence) checked with scapy."""

from __future__ import annotations

import random

import pytest
from core_helpers import (
    PEER4,
    PEER6,
    PEER_MAC,
    STACK4,
    STACK6,
    STACK_MAC,
    Wire,
    assert_checksums,
    ip,
    to_stack,
    wired_stack,
)
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from aionetstack import errors
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork


def setup(**options: object) -> tuple[VirtualNetwork, CoreStack, Wire]:
    net = VirtualNetwork(seed=21)
    s, _, wire = wired_stack(net, **options)  # type: ignore[arg-type]
    return net, s, wire


def one(wire: Wire) -> Ether:
    frames = wire.take()
    assert len(frames) == 1, [Ether(f).summary() for f in frames]
    return Ether(frames[0])


# -- echo -----------------------------------------------------------------------------------------


def test_echo_reply_ipv4() -> None:
    _net, s, wire = setup()
    data = random.Random(1).randbytes(100)
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4, ttl=17, id=99) / ICMP(type=8, id=0xBEEF, seq=42)
                         / Raw(data)))
    r = one(wire)
    assert (r[Ether].src, r[Ether].dst) == (STACK_MAC, PEER_MAC)
    assert (r[IP].src, r[IP].dst, r[IP].ttl, r[IP].proto) == (STACK4, PEER4, 64, 1)
    assert (r[ICMP].type, r[ICMP].code, r[ICMP].id, r[ICMP].seq) == (0, 0, 0xBEEF, 42)
    assert bytes(r[ICMP].payload) == data
    assert_checksums(r)
    st = s.stats()["icmpv4"]
    assert st == {"received": 1, "echo-reply-sent": 1}


def test_echo_reply_ipv6() -> None:
    _net, _s, wire = setup()
    wire.inject(to_stack(IPv6(src=PEER6, dst=STACK6, hlim=3) / ICMPv6EchoRequest(
        id=0x0102, seq=3, data=b"six")))
    r = one(wire)
    assert (r[IPv6].src, r[IPv6].dst, r[IPv6].hlim) == (STACK6, PEER6, 64)
    assert r.haslayer(ICMPv6EchoReply)
    e = r[ICMPv6EchoReply]
    assert (e.id, e.seq, bytes(e.data)) == (0x0102, 3, b"six")
    assert_checksums(r)


def test_echo_to_all_nodes_is_answered_from_a_unicast_address() -> None:
    """RFC 4443 §4.2: the reply to a multicast echo comes from a unicast address."""
    _net, _s, wire = setup()
    wire.inject(to_stack(IPv6(src=PEER6, dst="ff02::1") / ICMPv6EchoRequest(id=1, seq=1),
                         dst_mac="33:33:00:00:00:01"))
    r = one(wire)
    assert r[IPv6].src == STACK6
    assert r[IPv6].dst == PEER6
    assert r.haslayer(ICMPv6EchoReply)


def test_echo_replies_can_be_turned_off() -> None:
    _net, s, wire = setup()
    s.icmp.echo_reply_enabled = False
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / ICMP(type=8, id=1, seq=1)))
    assert wire.take() == []
    assert s.stats()["icmpv4"]["dropped.echo-not-unicast"] == 1


@pytest.mark.parametrize("echo", [False, True])
def test_echo_to_any_address_on_a_transparent_nic_only_with_echo(echo: bool) -> None:
    _net, s, wire = setup()
    s.set_transparent(s.nics[max(s.nics)], echo=echo)
    other = "198.18.0.77"
    wire.inject(to_stack(IP(src=PEER4, dst=other) / ICMP(type=8, id=3, seq=4) / Raw(b"hi")))
    if not echo:
        assert wire.take() == []
        assert s.stats()["icmpv4"]["dropped.echo-not-local"] == 1
        return
    r = one(wire)
    assert (r[IP].src, r[IP].dst, r[ICMP].type, r[ICMP].id, r[ICMP].seq) == (
        other, PEER4, 0, 3, 4)
    assert bytes(r[ICMP].payload) == b"hi"
    assert_checksums(r)


def test_echo_reply_with_a_bad_checksum_is_not_delivered() -> None:
    _net, s, wire = setup()
    ep = s.icmp_echo_endpoint(4)
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4)
                         / ICMP(type=0, id=ep.ident, seq=1, chksum=0x1234) / Raw(b"x")))
    assert not ep.replies
    assert s.stats()["icmpv4"]["malformed.bad-checksum"] == 1
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / ICMP(type=0, id=ep.ident, seq=2)
                         / Raw(b"y")))
    assert [(r[0], r[1], r[2]) for r in ep.replies] == [(ip(PEER4), 2, b"y")]


def test_truncated_echo_request_is_malformed() -> None:
    _net, s, wire = setup()
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4, proto=1) / Raw(b"\x08\x00\xf7\xff\x00")))
    assert wire.take() == []
    assert s.stats()["icmpv4"]["malformed.truncated"] == 1


@pytest.mark.parametrize("dst", ["255.255.255.255", "198.18.0.255"])
def test_broadcast_echo_is_ignored(dst: str) -> None:
    _net, s, wire = setup()
    wire.inject(to_stack(IP(src=PEER4, dst=dst) / ICMP(type=8, id=1, seq=1),
                         dst_mac="ff:ff:ff:ff:ff:ff"))
    assert wire.take() == []
    assert s.stats()["icmpv4"]["dropped.echo-not-unicast"] == 1


def test_bad_icmp_checksum_is_dropped() -> None:
    _net, s, wire = setup()
    pkt = IP(src=PEER4, dst=STACK4) / ICMP(type=8, id=1, seq=1, chksum=0x1234) / Raw(b"x")
    wire.inject(to_stack(pkt))
    pkt6 = IPv6(src=PEER6, dst=STACK6) / ICMPv6EchoRequest(id=1, seq=1, cksum=0x1234)
    wire.inject(to_stack(pkt6))
    assert wire.take() == []
    assert s.stats()["icmpv4"]["malformed.bad-checksum"] == 1
    assert s.stats()["icmpv6"]["malformed.bad-checksum"] == 1


# -- errors we generate ---------------------------------------------------------------------------


def test_port_unreachable_quotes_the_datagram() -> None:
    _net, _s, wire = setup()
    pkt = IP(src=PEER4, dst=STACK4, id=0x7777) / UDP(sport=5000, dport=9) / Raw(b"q" * 20)
    wire.inject(to_stack(pkt))
    r = one(wire)
    assert (r[IP].src, r[IP].dst) == (STACK4, PEER4)
    assert (r[ICMP].type, r[ICMP].code) == (3, 3)
    assert bytes(r[ICMP].payload) == bytes(pkt)  # the whole (short) datagram is quoted
    assert (r[IPerror].id, r[UDPerror].sport, r[UDPerror].dport) == (0x7777, 5000, 9)
    assert_checksums(r)
    pkt6 = IPv6(src=PEER6, dst=STACK6) / UDP(sport=5000, dport=9) / Raw(b"q" * 1400)
    wire.inject(to_stack(pkt6, l2=True))
    r6 = one(wire)
    assert r6.haslayer(ICMPv6DestUnreach)
    assert r6[ICMPv6DestUnreach].code == 4
    assert len(r6[IPv6]) == 1280  # RFC 4443 §2.4(c): as much as fits in the minimum MTU
    assert r6.original[14 + 48:] == bytes(pkt6)[:1280 - 48]
    assert_checksums(r6)


def test_port_unreachable_for_a_reassembled_datagram() -> None:
    """The error about a datagram that arrived in fragments is sent, quoting its start."""
    _net, s, wire = setup()
    pkt = IP(src=PEER4, dst=STACK4, id=0x4321) / UDP(sport=5000, dport=9) / Raw(b"f" * 3000)
    from scapy.layers.inet import fragment

    frags = fragment(IP(bytes(pkt)), 1480)
    assert len(frags) == 3
    for f in frags:
        wire.inject(to_stack(f))
    assert s.stats()["fragment"]["reassembled"] == 1
    r = one(wire)
    assert (r[ICMP].type, r[ICMP].code) == (3, 3)
    q = r[IPerror]
    assert (q.id, q.frag, q.flags.MF) == (0x4321, 0, 0)
    assert r[UDPerror].dport == 9


def test_unknown_protocol_ipv4_gets_protocol_unreachable() -> None:
    _net, s, wire = setup()
    pkt = IP(src=PEER4, dst=STACK4, proto=253) / Raw(b"experimental")
    wire.inject(to_stack(pkt))
    r = one(wire)
    assert (r[ICMP].type, r[ICMP].code) == (3, 2)
    assert bytes(r[ICMP].payload) == bytes(pkt)
    assert s.stats()["ipv4"]["dropped.unknown-protocol"] == 1


@pytest.mark.parametrize(
    ("ext", "pointer"),
    [
        ([], 6),
        ([IPv6ExtHdrDestOpt], 40),
        ([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt], 48),
    ],
)
def test_unknown_next_header_ipv6_gets_param_problem_code_1(ext: list[type],
                                                            pointer: int) -> None:
    """RFC 8200 §4: Parameter Problem code 1 pointing at the unrecognised Next Header field."""
    _net, _s, wire = setup()
    pkt = IPv6(src=PEER6, dst=STACK6)
    for i, cls in enumerate(ext):
        pkt = pkt / (cls(nh=253) if i == len(ext) - 1 else cls())
    if not ext:
        pkt.nh = 253
    pkt = pkt / Raw(b"experimental")
    wire.inject(to_stack(pkt))
    r = one(wire)
    assert r.haslayer(ICMPv6ParamProblem)
    pp = r[ICMPv6ParamProblem]
    assert (pp.code, pp.ptr) == (1, pointer)
    assert bytes(pp.payload) == bytes(pkt)
    assert_checksums(r)


@pytest.mark.parametrize("hdr", [IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop])
def test_unrecognized_option_actions(hdr: type) -> None:
    """RFC 8200 §4.2: 00 skip, 01 discard, 10 discard + param problem, 11 same unless multicast."""
    _net, s, wire = setup()
    ep = s.udp_endpoint(6)
    ep.bind(None, 4000)

    def send(otype: int, dst: str = STACK6, dst_mac: str = STACK_MAC) -> bytes:
        pkt = IPv6(src=PEER6, dst=dst) / hdr(options=[HBHOptUnknown(otype=otype,
                                                                    optdata=b"ab")]) / UDP(
            sport=1, dport=4000) / Raw(b"opt%02x" % otype)
        wire.inject(to_stack(pkt, dst_mac=dst_mac))
        return bytes(pkt)

    send(0x1E)  # action 00: skip the option, deliver
    assert ep.recvfrom()[0] == b"opt1e"
    assert wire.take() == []
    send(0x5E)  # action 01: discard silently
    assert wire.take() == []
    sent = send(0x9E)  # action 10: discard, param problem code 2 even for multicast
    r = one(wire)
    pp = r[ICMPv6ParamProblem]
    assert (pp.code, pp.ptr) == (2, 42)  # 40 (IPv6 header) + 2 (next header, length)
    assert bytes(pp.payload) == sent
    assert_checksums(r)
    send(0x9E, dst="ff02::1", dst_mac="33:33:00:00:00:01")
    r = one(wire)
    assert (r[ICMPv6ParamProblem].code, r[IPv6].src) == (2, STACK6)
    send(0xDE)  # action 11: discard + param problem, but ...
    assert one(wire)[ICMPv6ParamProblem].ptr == 42
    send(0xDE, dst="ff02::1", dst_mac="33:33:00:00:00:01")  # ... not for multicast
    assert wire.take() == []
    with pytest.raises(errors.WouldBlock):
        ep.recvfrom()
    assert s.stats()["ipv6"]["dropped.unrecognized-option"] == 5


def test_no_error_about_an_icmp_error() -> None:
    """RFC 1122 §3.2.2 / RFC 4443 §2.4(e.1): never an ICMP error about an ICMP error."""
    _net, s, wire = setup(forwarding=True)
    from aionetstack import link

    r2, _ = link.pipe(l2=True, seed=1)
    s.add_nic(r2, ["198.19.0.1/24", "fd00:2::1/64"])
    quote = bytes(IP(src="198.19.0.5", dst=PEER4) / UDP(sport=1, dport=2))
    # an ICMP error with TTL 1 passing through: no time exceeded about it
    wire.inject(to_stack(IP(src=PEER4, dst="198.19.0.5", ttl=1) / ICMP(type=3, code=3)
                         / Raw(quote)))
    # but an echo request with TTL 1 does get one
    wire.inject(to_stack(IP(src=PEER4, dst="198.19.0.5", ttl=1) / ICMP(type=8)))
    r = one(wire)
    assert (r[ICMP].type, r[ICMP].code, r[IPerror].proto) == (11, 0, 1)
    assert s.stats()["icmpv4"]["error-suppressed.about-error"] == 1
    # IPv6: hop limit 1, and an ICMPv6 error behind a destination options header
    quote6 = bytes(IPv6(src="fd00:2::5", dst=PEER6) / UDP(sport=1, dport=2))
    wire.inject(to_stack(IPv6(src=PEER6, dst="fd00:2::5", hlim=1)
                         / ICMPv6DestUnreach(code=4) / Raw(quote6)))
    wire.inject(to_stack(IPv6(src=PEER6, dst=STACK6)
                         / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9E, optdata=b"ab")])
                         / ICMPv6DestUnreach(code=4) / Raw(quote6)))
    assert wire.take() == []
    assert s.stats()["icmpv6"]["error-suppressed.about-error"] == 2


def test_no_error_for_non_initial_fragment_or_to_broadcast() -> None:
    _net, s, wire = setup(forwarding=True)
    from aionetstack import link

    r2, _ = link.pipe(l2=True, seed=1)
    s.add_nic(r2, ["198.19.0.1/24"])
    # a non-initial fragment whose TTL runs out on the way
    wire.inject(to_stack(IP(src=PEER4, dst="198.19.0.5", ttl=1, frag=10, proto=17)
                         / Raw(b"x" * 16)))
    # an unknown protocol sent to broadcast addresses
    wire.inject(to_stack(IP(src=PEER4, dst="255.255.255.255", proto=253) / Raw(b"x"),
                         dst_mac="ff:ff:ff:ff:ff:ff"))
    wire.inject(to_stack(IP(src=PEER4, dst="198.18.0.255", proto=253) / Raw(b"x"),
                         dst_mac="ff:ff:ff:ff:ff:ff"))
    # a closed port reached from the unspecified source (RFC 1122 §3.2.2: not a unique host)
    wire.inject(to_stack(IP(src="0.0.0.0", dst=STACK4) / UDP(sport=68, dport=67)))
    assert wire.take() == []
    st = s.stats()["icmpv4"]
    assert st["error-suppressed.fragment"] == 1
    assert st["error-suppressed.not-unicast"] == 2
    assert st["error-suppressed.bad-source"] == 1
    assert "error-sent.3" not in st and "error-sent.11" not in st


# -- errors we receive ----------------------------------------------------------------------------


def test_frag_needed_lowers_the_path_mtu() -> None:
    net, s, wire = setup()
    s.add_route("0.0.0.0/0", gateway=PEER4)
    far = "203.0.113.5"
    assert s.find_route(ip(far)).mtu == 1500
    ep = s.udp_endpoint(4)
    ep.sendto(b"x" * 1400, (far, 53))
    sent = one(wire)[IP]
    wire.inject(to_stack(IP(src="192.0.2.1", dst=STACK4) / ICMP(type=3, code=4, nexthopmtu=1000)
                         / Raw(bytes(sent)[:28])))
    assert s.pmtu[ip(far)][0] == 1000
    assert s.pmtu[ip(far)][1] == net.now + 600.0
    assert s.find_route(ip(far)).mtu == 1000
    assert s.find_route(ip(PEER4)).mtu == 1500  # only that destination
    assert ep.error is None  # not an error for UDP (RFC 1122 §4.1.3.3 leaves it to the app)
    ep.sendto(b"y" * 1400, (far, 53))
    frags = [Ether(f)[IP] for f in wire.take()]
    assert [len(f) for f in frags] == [996, 452]  # 20 + 976, 20 + 432 (1408 bytes of UDP)
    assert all(len(f) <= 1000 for f in frags)
    # a larger value never raises it again; a smaller one lowers it further
    for mtu in (1400, 700):
        wire.inject(to_stack(IP(src="192.0.2.1", dst=STACK4)
                             / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(bytes(sent)[:28])))
    assert s.find_route(ip(far)).mtu == 700
    # the entry expires after 10 minutes
    net.run(duration=601)
    assert s.find_route(ip(far)).mtu == 1500
    assert ip(far) not in s.pmtu


def test_frag_needed_without_mtu_uses_the_plateau_table() -> None:
    """RFC 1191 §5: an old router sends 0; guess the next plateau below the quoted length."""
    _net, s, wire = setup()
    s.add_route("0.0.0.0/0", gateway=PEER4)
    quoted = IP(src=STACK4, dst="203.0.113.6", len=1500) / UDP(sport=1, dport=2)
    wire.inject(to_stack(IP(src="192.0.2.1", dst=STACK4) / ICMP(type=3, code=4)
                         / Raw(bytes(quoted)[:28])))
    assert s.find_route(ip("203.0.113.6")).mtu == 1492


def test_frag_needed_about_someone_elses_packet_is_ignored() -> None:
    _net, s, wire = setup()
    s.add_route("0.0.0.0/0", gateway=PEER4)
    quoted = IP(src="192.0.2.77", dst="203.0.113.7") / UDP(sport=1, dport=2)
    wire.inject(to_stack(IP(src="192.0.2.1", dst=STACK4) / ICMP(type=3, code=4, nexthopmtu=600)
                         / Raw(bytes(quoted)[:28])))
    assert s.find_route(ip("203.0.113.7")).mtu == 1500
    assert ip("203.0.113.7") not in s.pmtu
    assert s.stats()["icmpv4"]["dropped.quote-not-ours"] == 1


def test_packet_too_big_lowers_the_ipv6_path_mtu() -> None:
    _net, s, wire = setup()
    s.add_route("::/0", gateway=PEER6)
    far = "2001:db8::5"
    ep = s.udp_endpoint(6)
    ep.connect(far, 53)
    ep.send(b"x" * 1400)
    sent = one(wire)[IPv6]
    wire.inject(to_stack(IPv6(src="2001:db8::1", dst=STACK6) / ICMPv6PacketTooBig(mtu=1300)
                         / Raw(bytes(sent)[:1232])))
    assert s.find_route(ip(far)).mtu == 1300
    assert ep.error is None
    # below the IPv6 minimum: clamped to 1280 (RFC 8201 §4)
    wire.inject(to_stack(IPv6(src="2001:db8::1", dst=STACK6) / ICMPv6PacketTooBig(mtu=600)
                         / Raw(bytes(sent)[:1232])))
    assert s.find_route(ip(far)).mtu == 1280
    ep.send(b"z" * 1400)
    frags = [Ether(f)[IPv6] for f in wire.take()]
    assert len(frags) == 2
    assert all(f.haslayer(IPv6ExtHdrFragment) and len(f) <= 1280 for f in frags)


@pytest.mark.parametrize(
    ("icmp", "exc"),
    [
        (ICMP(type=3, code=1), errors.HostUnreachable),
        (ICMP(type=3, code=0), errors.NetworkUnreachable),
        (ICMP(type=3, code=13), errors.HostUnreachable),
        (ICMP(type=11, code=0), errors.HostUnreachable),
        (ICMP(type=12, code=0), errors.ProtocolError),
    ],
)
def test_icmpv4_errors_map_to_exceptions(icmp: ICMP, exc: type[Exception]) -> None:
    _net, s, wire = setup()
    ep = s.udp_endpoint(4)
    ep.connect(PEER4, 53)
    ep.send(b"q")
    sent = one(wire)[IP]
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / icmp / Raw(bytes(sent))))
    with pytest.raises(exc):
        ep.recvfrom()


def test_icmp_error_for_other_port_is_not_delivered() -> None:
    _net, s, wire = setup()
    ep = s.udp_endpoint(4)
    ep.connect(PEER4, 53)
    quoted = IP(src=STACK4, dst=PEER4) / UDP(sport=ep.local[1], dport=54)  # type: ignore[index]
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / ICMP(type=3, code=3) / Raw(bytes(quoted))))
    assert ep.error is None
    assert s.stats()["udp"]["icmp-error-ignored"] == 1


def test_truncated_quote_is_malformed() -> None:
    _net, s, wire = setup()
    wire.inject(to_stack(IP(src=PEER4, dst=STACK4) / ICMP(type=3, code=3)
                         / Raw(b"\x45" + b"\0" * 10)))
    wire.inject(to_stack(IPv6(src=PEER6, dst=STACK6) / ICMPv6DestUnreach(code=4)
                         / Raw(b"\x60" * 20)))
    assert s.stats()["icmpv4"]["malformed.bad-quote"] == 1
    assert s.stats()["icmpv6"]["malformed.bad-quote"] == 1
    assert wire.take() == []


def test_echo_endpoint_reports_unreachable() -> None:
    _net, s, wire = setup()
    ep = s.icmp_echo_endpoint(6)
    ep.send(ip(PEER6), 1, b"hi")
    sent = one(wire)[IPv6]
    wire.inject(to_stack(IPv6(src=PEER6, dst=STACK6) / ICMPv6DestUnreach(code=3)
                         / Raw(bytes(sent))))
    with pytest.raises(errors.HostUnreachable):
        ep.recv()
    with pytest.raises(errors.WouldBlock):
        ep.recv()


def test_reassembly_timeout_ipv4_sends_time_exceeded_with_the_first_fragment() -> None:
    """RFC 792 / RFC 1122 §3.3.2: time exceeded code 1, quoting the header and 64 bits of the
    first fragment's data (the ports), and only when that first fragment arrived."""
    net, s, wire = setup()
    from scapy.layers.inet import fragment

    whole = IP(src=PEER4, dst=STACK4, id=0x2222) / UDP(sport=4444, dport=9) / Raw(b"t" * 3000)
    first, second, _third = fragment(IP(bytes(whole)), 1480)
    wire.inject(to_stack(first))
    wire.inject(to_stack(second))
    lone = fragment(IP(bytes(IP(src=PEER4, dst=STACK4, id=0x3333) / UDP(sport=1, dport=9)
                             / Raw(b"u" * 3000))), 1480)[1]
    wire.inject(to_stack(lone))  # never gets its first fragment
    t0 = net.now
    net.run(duration=29.0)
    assert wire.take() == []
    net.run(duration=2.0)
    out = wire.take_timed()
    assert len(out) == 1
    assert out[0][0] == t0 + 30.0  # the stack's reassembly timeout
    r = Ether(out[0][1])
    assert (r[ICMP].type, r[ICMP].code) == (11, 1)
    assert (r[IPerror].id, r[IPerror].frag, r[IPerror].flags.MF) == (0x2222, 0, 1)
    assert (r[UDPerror].sport, r[UDPerror].dport) == (4444, 9)
    assert_checksums(r)
    assert s.stats()["fragment"]["timeout"] == 2


def test_reassembly_timeout_ipv6_sends_time_exceeded_with_the_first_fragment() -> None:
    net, _s, wire = setup()
    frag0 = IPv6(src=PEER6, dst=STACK6) / IPv6ExtHdrFragment(nh=17, m=1, offset=0, id=0x77) / Raw(
        bytes(UDP(sport=4444, dport=9, len=1008, chksum=0x1234)) + b"v" * 992)
    wire.inject(to_stack(frag0))
    t0 = net.now
    net.run(duration=59.0)
    assert wire.take() == []
    net.run(duration=2.0)
    out = wire.take_timed()
    assert len(out) == 1
    assert out[0][0] == t0 + 60.0  # RFC 8200 §4.5
    r = Ether(out[0][1])
    assert r.haslayer(ICMPv6TimeExceeded)
    assert r[ICMPv6TimeExceeded].code == 1
    quote = r.original[14 + 48:]
    assert quote[:40] == bytes(frag0)[:40]
    assert quote[40:56] == bytes(frag0)[40:56]  # the fragment header and the UDP header
    assert_checksums(r)
