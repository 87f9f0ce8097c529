"""Malformed and never-valid TCP segments through the whole ingress path.

Complements ``tests/core/test_malformed_ingress.py`` (link, IP, UDP, ICMP, NDP) with TCP: each
frame goes over a pipe into a stack that verifies every checksum and listens on port 80 (IPv4 and
IPv6); it must be dropped and counted under exactly one ``stats()`` key, answered by nothing,
create no connection, and never raise.  Fragment attacks follow: fragments that never complete
(memory freed at the timeout) and tiny overlapping fragments (teardrop, RFC 1858 §4 header
rewriting).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
import stackrig  # noqa: F401 - puts tests/core on sys.path
from core_helpers import PEER4, PEER6, PEER_MAC, STACK4, STACK6, STACK_MAC, wired_stack
from scapy.layers.inet import ICMP, IP, TCP, in4_chksum
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, in6_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from aionetstack.testing import VirtualNetwork

BCAST_MAC = "ff:ff:ff:ff:ff:ff"


def tcp_bytes(*, flags: int = 0x02, doff: int | None = None, opts: bytes = b"",
              payload: bytes = b"", sport: int = 4000, dport: int = 80, seq: int = 1000,
              ack: int = 0) -> bytes:
    """A TCP header built by hand, checksum zero (scapy would 'fix' what we want broken)."""
    words = doff if doff is not None else 5 + (len(opts) + 3) // 4
    opts += b"\x00" * (-len(opts) % 4)
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (words << 12) | flags, 65535, 0,
                       0) + opts + payload


def v4(seg: bytes, *, src: str = PEER4, dst: str = STACK4, good: bool = True) -> bytes:
    ip = IP(src=src, dst=dst, proto=6)
    csum = in4_chksum(6, ip / Raw(seg), seg) ^ (0 if good else 0x1234)
    seg = seg[:16] + struct.pack("!H", csum) + seg[18:] if len(seg) >= 18 else seg
    return bytes(ip / Raw(seg))


def v6(seg: bytes, *, src: str = PEER6, dst: str = STACK6) -> bytes:
    ip = IPv6(src=src, dst=dst, nh=6)
    csum = in6_chksum(6, ip / Raw(seg), seg)
    seg = seg[:16] + struct.pack("!H", csum) + seg[18:] if len(seg) >= 18 else seg
    return bytes(ip / Raw(seg))


def frame(pkt: bytes, dst_mac: str = STACK_MAC) -> bytes:
    ethertype = 0x0800 if pkt[0] >> 4 == 4 else 0x86DD
    return bytes(Ether(src=PEER_MAC, dst=dst_mac, type=ethertype)) + pkt


SYN, FIN, RST, PSH, ACK, URG = 0x02, 0x01, 0x04, 0x08, 0x10, 0x20

# (id, builder of a whole Ethernet frame, stats protocol, exact counter)
Case = tuple[str, Callable[[], bytes], str, str]
CASES: list[Case] = [
    # never-valid flag combinations
    ("syn-fin", lambda: frame(v4(tcp_bytes(flags=SYN | FIN))), "tcp", "dropped.bad-flags"),
    ("syn-rst", lambda: frame(v4(tcp_bytes(flags=SYN | RST))), "tcp", "dropped.bad-flags"),
    ("syn-fin-ack", lambda: frame(v4(tcp_bytes(flags=SYN | FIN | ACK))), "tcp",
     "dropped.bad-flags"),
    ("syn-rst-ack", lambda: frame(v4(tcp_bytes(flags=SYN | RST | ACK))), "tcp",
     "dropped.bad-flags"),
    ("no-flags", lambda: frame(v4(tcp_bytes(flags=0))), "tcp", "dropped.bad-flags"),
    ("fin-only", lambda: frame(v4(tcp_bytes(flags=FIN))), "tcp", "dropped.bad-flags"),
    ("xmas-no-ack", lambda: frame(v4(tcp_bytes(flags=FIN | PSH | URG))), "tcp",
     "dropped.bad-flags"),
    ("all-flags", lambda: frame(v4(tcp_bytes(flags=0xFF))), "tcp", "dropped.bad-flags"),
    ("syn-fin-v6", lambda: frame(v6(tcp_bytes(flags=SYN | FIN))), "tcp", "dropped.bad-flags"),
    ("no-flags-v6", lambda: frame(v6(tcp_bytes(flags=0))), "tcp", "dropped.bad-flags"),
    # header and data offset
    ("truncated-header", lambda: frame(v4(tcp_bytes()[:19])), "tcp", "malformed.truncated"),
    ("doff-0", lambda: frame(v4(tcp_bytes(doff=0))), "tcp", "malformed.bad-length"),
    ("doff-4", lambda: frame(v4(tcp_bytes(doff=4))), "tcp", "malformed.bad-length"),
    ("doff-beyond-packet", lambda: frame(v4(tcp_bytes(doff=15))), "tcp",
     "malformed.bad-length"),
    ("doff-6-in-20-bytes", lambda: frame(v4(tcp_bytes(doff=6))), "tcp",
     "malformed.bad-length"),
    ("doff-beyond-packet-v6", lambda: frame(v6(tcp_bytes(doff=9, opts=b"\x01" * 4))), "tcp",
     "malformed.bad-length"),
    ("bad-checksum", lambda: frame(v4(tcp_bytes(), good=False)), "tcp",
     "malformed.bad-checksum"),
    # options
    ("option-len-0-loop", lambda: frame(v4(tcp_bytes(opts=b"\xfe\x00\x00\x00"))), "tcp",
     "malformed.bad-option"),
    ("option-len-1", lambda: frame(v4(tcp_bytes(opts=b"\x02\x01\x05\xb4"))), "tcp",
     "malformed.bad-option"),
    ("option-past-header", lambda: frame(v4(tcp_bytes(opts=b"\x01\x01\xfe\x08"))), "tcp",
     "malformed.bad-option"),
    ("option-no-length-byte", lambda: frame(v4(tcp_bytes(opts=b"\x01\x01\x01\x03"))), "tcp",
     "malformed.bad-option"),
    ("mss-length-3", lambda: frame(v4(tcp_bytes(opts=b"\x02\x03\x05\x01"))), "tcp",
     "malformed.bad-option"),
    ("wscale-length-4", lambda: frame(v4(tcp_bytes(opts=b"\x03\x04\x07\x00"))), "tcp",
     "malformed.bad-option"),
    ("timestamp-length-9", lambda: frame(v4(tcp_bytes(opts=b"\x08\x09" + bytes(7) + b"\0"))),
     "tcp", "malformed.bad-option"),
    ("sack-length-11", lambda: frame(v4(tcp_bytes(flags=ACK, opts=b"\x05\x0b" + bytes(10)))),
     "tcp", "malformed.bad-option"),
    ("sack-5-blocks", lambda: frame(v4(tcp_bytes(flags=ACK, opts=b"\x05\x2a" + bytes(38)))),
     "tcp", "malformed.bad-option"),
    ("option-len-0-v6", lambda: frame(v6(tcp_bytes(opts=b"\x1e\x00\x00\x00"))), "tcp",
     "malformed.bad-option"),
    # addresses
    ("land", lambda: frame(v4(tcp_bytes(), src=STACK4)), "ipv4", "dropped.martian-source"),
    ("land-v6", lambda: frame(v6(tcp_bytes(), src=STACK6)), "ipv6", "dropped.martian-source"),
    ("syn-from-zero", lambda: frame(v4(tcp_bytes(), src="0.0.0.0")), "ipv4",
     "dropped.martian-source"),
    ("syn-from-multicast", lambda: frame(v4(tcp_bytes(), src="224.0.0.9")), "ipv4",
     "dropped.martian-source"),
    ("syn-to-directed-broadcast", lambda: frame(v4(tcp_bytes(), dst="198.18.0.255"),
                                                BCAST_MAC), "tcp", "dropped.not-unicast"),
    ("syn-to-limited-broadcast", lambda: frame(v4(tcp_bytes(), dst="255.255.255.255"),
                                               BCAST_MAC), "tcp", "dropped.not-unicast"),
    ("syn-to-all-hosts", lambda: frame(v4(tcp_bytes(), dst="224.0.0.1"), "01:00:5e:00:00:01"),
     "tcp", "dropped.not-unicast"),
    ("syn-to-all-nodes-v6", lambda: frame(v6(tcp_bytes(), dst="ff02::1"), "33:33:00:00:00:01"),
     "tcp", "dropped.not-unicast"),
    ("syn-port-zero", lambda: frame(v4(tcp_bytes(dport=0))), "tcp", "dropped.port-zero"),
    ("syn-from-port-zero", lambda: frame(v4(tcp_bytes(sport=0))), "tcp", "dropped.port-zero"),
]


def _rig():  # type: ignore[no-untyped-def]
    net = VirtualNetwork(seed=43)
    s, _nic, wire = wired_stack(net)
    listeners = []
    for family in (4, 6):
        lst = s.tcp_endpoint(family)
        lst.bind(None, 80)
        lst.listen(8)
        listeners.append(lst)
    return net, s, wire, listeners


@pytest.mark.parametrize(("name", "build", "proto", "counter"), CASES, ids=[c[0] for c in CASES])
def test_malformed_tcp_is_dropped_and_counted(name: str, build: Callable[[], bytes], proto: str,
                                              counter: str) -> None:
    net, s, wire, listeners = _rig()
    before = s.stats()
    wire.inject(build())
    net.run(duration=5.0)
    after = s.stats()
    assert after[proto].get(counter, 0) == before[proto].get(counter, 0) + 1, after[proto]
    # exactly one drop/malformed reason was counted, over every protocol
    changed = {(p, k) for p in ("ipv4", "ipv6", "tcp") for k, v in after[p].items()
               if (k.startswith(("dropped.", "malformed."))) and v != before[p].get(k, 0)}
    assert changed == {(proto, counter)}, changed
    assert wire.take() == []  # no RST, no SYN-ACK, no ICMP
    assert s.tcp.connections == {}
    assert all(not lst.listen_queue.syn_queue for lst in listeners)


def test_the_same_segments_with_valid_flags_are_accepted() -> None:
    """Control: the corpus is wrong only where it means to be -- a plain SYN gets a SYN-ACK."""
    _net, s, wire, _ = _rig()
    wire.inject(frame(v4(tcp_bytes(flags=SYN, opts=b"\x02\x04\x05\xb4"))))
    wire.inject(frame(v6(tcp_bytes(flags=SYN))))
    replies = [Ether(f) for f in wire.take()]
    assert [r[TCP].flags for r in replies] == ["SA", "SA"]
    assert len(s.tcp.connections) == 2


def test_closed_port_answers_no_control_segments_but_not_syn_fin() -> None:
    """RFC 9293 §3.10.7.1: a closed port resets any non-RST segment, flagless scans included
    (a FIN/NULL/Xmas scan learns the port is closed, as from any RFC host); SYN+FIN and SYN+RST
    are dropped everywhere."""
    _net, s, wire, _ = _rig()
    for flags in (0, FIN, FIN | PSH | URG):
        wire.inject(frame(v4(tcp_bytes(flags=flags, dport=81, seq=50, payload=b"ab"))))
        (r,) = [Ether(f) for f in wire.take()]
        assert r[TCP].flags == "RA" and r[TCP].ack == 50 + 2 + (flags & FIN)
    for flags in (SYN | FIN, SYN | RST):
        wire.inject(frame(v4(tcp_bytes(flags=flags, dport=81))))
        assert wire.take() == []
    st = s.stats()["tcp"]
    assert st["dropped.no-endpoint"] == 3 and st["dropped.bad-flags"] == 2


# -- fragments ------------------------------------------------------------------------------------

def _first_fragment(ident: int) -> bytes:
    """The first 1480 bytes of a 2 KB TCP SYN; the rest never comes."""
    body = tcp_bytes(flags=SYN) + b"x" * 2000
    return bytes(IP(src=PEER4, dst=STACK4, id=ident, proto=6, flags="MF", frag=0)
                 / Raw(body[:1480]))


def test_fragments_that_never_complete_are_freed_at_the_timeout() -> None:
    net, s, wire, _ = _rig()
    r4, r6 = s.ipv4.reassembler, s.ipv6.reassembler
    for i in range(50):
        wire.inject(frame(_first_fragment(100 + i)))
    six = IPv6(src=PEER6, dst=STACK6) / IPv6ExtHdrFragment(nh=6, m=1, offset=0, id=9) / Raw(
        tcp_bytes() + b"y" * 1004)
    wire.inject(frame(bytes(six)))
    assert len(r4) == 50 and r4.pending_bytes >= 50 * 1480
    assert len(r6) == 1 and r6.pending_bytes > 1000
    wire.take()
    net.run(duration=31.0)
    assert len(r4) == 0 and r4.pending_bytes == 0 and r4.next_deadline() is None
    assert s.stats()["fragment"]["timeout"] == 50
    # RFC 792 / RFC 1122 §3.3.2: time exceeded (fragment reassembly), once per datagram
    icmp = [Ether(f) for f in wire.take()]
    assert len(icmp) == 50 and all(p[ICMP].type == 11 and p[ICMP].code == 1 for p in icmp)
    net.run(duration=30.0)
    assert len(r6) == 0 and r6.pending_bytes == 0 and r6.next_deadline() is None
    assert s.stats()["fragment"]["timeout"] == 51
    assert s.tcp.connections == {}


def _frag(ident: int, offset: int, data: bytes, more: bool) -> bytes:
    return frame(bytes(IP(src=PEER4, dst=STACK4, id=ident, proto=6, flags="MF" if more else 0,
                          frag=offset // 8) / Raw(data)))


def test_teardrop_overlapping_fragments_are_dropped() -> None:
    _net, s, wire, _ = _rig()
    r4 = s.ipv4.reassembler
    seg = tcp_bytes(flags=SYN) + b"z" * 40
    # classic teardrop: the second fragment lies inside the first
    wire.inject(_frag(1, 0, seg[:32], True))
    wire.inject(_frag(1, 8, seg[8:16], True))
    assert r4.stats()["overlap"] == 1 and r4.pending_bytes == 0 and len(r4) == 0
    # partial overlap past the end of the first
    wire.inject(_frag(2, 0, seg[:24], True))
    wire.inject(_frag(2, 16, seg[16:60], False))
    assert r4.stats()["overlap"] == 2 and r4.pending_bytes == 0
    assert wire.take() == [] and s.tcp.connections == {}


def test_tiny_overlapping_fragments_cannot_rewrite_the_tcp_header() -> None:
    """RFC 1858 §4: an innocent first fragment (an ACK to port 80), then an overlapping tiny
    fragment rewriting the flags to SYN.  The datagram is discarded: no connection, no reply."""
    _net, s, wire, _ = _rig()
    innocent = tcp_bytes(flags=ACK, seq=5, ack=7)
    evil = tcp_bytes(flags=SYN, seq=5)
    wire.inject(_frag(3, 0, innocent[:16], True))
    wire.inject(_frag(3, 8, evil[8:20], False))
    r4 = s.ipv4.reassembler
    assert r4.stats()["overlap"] == 1 and r4.pending_bytes == 0
    assert s.stats()["fragment"].get("reassembled", 0) == 0
    assert wire.take() == [] and s.tcp.connections == {}


def test_figures() -> None:
    print(f"\nmalformed TCP cases: {len(CASES)} frames + 4 fragment attacks")
