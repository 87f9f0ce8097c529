"""Coverage-guided fuzzing of the whole ingress path with atheris (libFuzzer for Python).

Each input is one Ethernet frame handed to ``NIC.link_deliver`` of a stack that verifies every
checksum, has UDP and TCP listeners, an established TCP connection, forwarding on and a second
NIC; the first input byte (``data[0] & 3``) also lets virtual time pass (0, 0.5 s, 31 s) so
reassembly timeouts, retransmissions and neighbour timers run.  Any exception is a crash.

    pip install -e '.[fuzz]'
    python fuzz/atheris_ingress.py tests/fuzz/corpus -max_total_time=600   # see fuzz/README.md

``TestOneInput`` is importable without atheris (``tests/fuzz/test_fuzz_atheris.py`` drives it
over the checked-in corpus plus random mutations).  ``python fuzz/atheris_ingress.py
--write-corpus DIR`` regenerates the seed corpus with scapy.
"""

from __future__ import annotations

import base64
import random
import sys
from pathlib import Path
from typing import Any

try:  # instrument the stack's code when fuzzing under atheris
    import atheris

    with atheris.instrument_imports(include=["aionetstack"]):
        from aionetstack.errors import ConnectStarted
        from aionetstack.link.pipe import pipe
        from aionetstack.stack.stack import CoreStack
        from aionetstack.testing import VirtualNetwork
except ImportError:  # pragma: no cover - exercised when atheris is absent
    atheris = None
    from aionetstack.errors import ConnectStarted
    from aionetstack.link.pipe import pipe
    from aionetstack.stack.stack import CoreStack
    from aionetstack.testing import VirtualNetwork

STACK_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
STACK4, PEER4 = "198.18.0.1", "198.18.0.2"
STACK6, PEER6 = "fd00::1", "fd00::2"
#: The stack is rebuilt after this many inputs so that state cannot grow across a long run.
RESET_EVERY = 5000
ADVANCE = (0.0, 0.0, 0.5, 31.0)


class _Sink:
    """The far end of the pipe: swallows whatever the stack sends."""

    def __init__(self, end: Any, net: VirtualNetwork) -> None:
        self.end = end
        self.net = net
        self.frames = 0

    def link_deliver(self, frame: memoryview) -> None:
        self.frames += 1

    def link_wakeup(self, at: float) -> None:
        if at <= self.net.now:
            self.end.poll()


class Harness:
    def __init__(self) -> None:
        self.net = VirtualNetwork(seed=5)
        s = self.net.stack(forwarding=True)
        self.stack: CoreStack = s
        se, we = pipe(l2=True, macs=(STACK_MAC, PEER_MAC), seed=5)
        self.nic = s.add_nic(se, [f"{STACK4}/24", f"{STACK6}/64"])
        self.nic.rx_trusted = False
        self.nic.tx_offload = False
        self.sink = _Sink(we, self.net)
        we.attach(self.sink, self.net.clock)
        far, _ = pipe(l2=True, seed=6)
        s.add_nic(far, ["198.19.0.1/24", "fd00:2::1/64"])
        s.add_neighbour(PEER4, PEER_MAC, self.nic)
        s.add_neighbour(PEER6, PEER_MAC, self.nic)
        s.add_route("0.0.0.0/0", gateway=PEER4)
        s.add_route("::/0", gateway=PEER6)
        s.tcp.isn_override = 0x10000  # the corpus's TCP segments aim at this connection
        self.udp = []
        self.tcp = []
        for family in (4, 6):
            u = s.udp_endpoint(family)
            u.bind(None, 9)
            self.udp.append(u)
            t = s.tcp_endpoint(family)
            t.bind(None, 80)
            t.listen(8)
            self.tcp.append(t)
        c = s.tcp_endpoint(4)
        try:
            c.connect(PEER4, 5555)
        except ConnectStarted:
            pass
        self.tcp.append(c)
        self.count = 0

    def feed(self, data: bytes) -> None:
        self.count += 1
        self.nic.link_deliver(memoryview(data))
        self.net.settle()
        advance = ADVANCE[data[0] & 3] if data else 0.0
        if advance:
            self.net.run(duration=advance)
        self.sink.end.poll()
        for u in self.udp:
            while u.queue:
                u.recvfrom()
            u.error = None
        for t in self.tcp[:2]:
            while True:
                try:
                    t.accept().abort()
                except Exception:  # WouldBlock: nothing (more) to accept
                    break


_HARNESS: list[Harness] = []


def TestOneInput(data: bytes) -> None:
    if not _HARNESS or _HARNESS[0].count >= RESET_EVERY:
        _HARNESS[:] = [Harness()]
    _HARNESS[0].feed(data)


# -- the seed corpus ------------------------------------------------------------------------------

def corpus_frames() -> dict[str, bytes]:
    """A few dozen valid frames (scapy): the starting points for mutation."""
    import logging

    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
    from scapy.layers.inet6 import (
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

    smac, pmac = "02:00:00:00:00:01", "02:00:00:00:00:02"

    def e(p: Any, dst: str = smac) -> bytes:
        return bytes(Ether(src=pmac, dst=dst) / p)

    ip4 = IP(src=PEER4, dst=STACK4)
    ip6 = IPv6(src=PEER6, dst=STACK6)
    iss = 0x10000
    out: dict[str, bytes] = {
        "arp-request": e(ARP(op=1, hwsrc=pmac, psrc=PEER4, pdst=STACK4), "ff:ff:ff:ff:ff:ff"),
        "arp-reply": e(ARP(op=2, hwsrc=pmac, psrc=PEER4, hwdst=smac, pdst=STACK4)),
        "arp-gratuitous": e(ARP(op=1, hwsrc=pmac, psrc=PEER4, pdst=PEER4), "ff:ff:ff:ff:ff:ff"),
        "ipv4-udp": e(ip4 / UDP(sport=1, dport=9) / Raw(b"hello")),
        "ipv4-udp-closed-port": e(ip4 / UDP(sport=1, dport=10) / Raw(b"x")),
        "ipv4-udp-broadcast": e(IP(src=PEER4, dst="255.255.255.255") / UDP(sport=1, dport=9),
                                "ff:ff:ff:ff:ff:ff"),
        "ipv4-icmp-echo": e(ip4 / ICMP(type=8, id=1, seq=1) / Raw(b"ping")),
        "ipv4-icmp-unreach": e(ip4 / ICMP(type=3, code=4, nexthopmtu=600) / Raw(bytes(
            IP(src=STACK4, dst=PEER4) / TCP(sport=80, dport=4000, seq=1)))),
        "ipv4-ttl1-forward": e(IP(src=PEER4, dst="203.0.113.1", ttl=1) / UDP(sport=1, dport=2)),
        "ipv4-forward": e(IP(src=PEER4, dst="198.19.0.5") / UDP(sport=1, dport=2)),
        "ipv4-options": e(IP(src=PEER4, dst=STACK4, options=[b"\x07\x07\x04\0\0\0\0\0"])
                          / UDP(sport=1, dport=9)),
        "ipv4-tcp-syn": e(ip4 / TCP(sport=4000, dport=80, flags="S", seq=1000,
                                    options=[("MSS", 1460), ("SAckOK", b""),
                                             ("Timestamp", (1, 0)), ("NOP", None),
                                             ("WScale", 7)])),
        "ipv4-tcp-syn-bare": e(ip4 / TCP(sport=4001, dport=80, flags="S", seq=5)),
        "ipv4-tcp-ack-to-listener": e(ip4 / TCP(sport=4002, dport=80, flags="A", seq=5,
                                                ack=77)),
        "ipv4-tcp-syn-closed": e(ip4 / TCP(sport=4000, dport=81, flags="S")),
        "ipv4-tcp-synack-client": e(IP(src=PEER4, dst=STACK4) / TCP(
            sport=5555, dport=32768, flags="SA", seq=9000, ack=iss + 1,
            options=[("MSS", 1400), ("SAckOK", b"")])),
        "ipv4-tcp-data": e(ip4 / TCP(sport=4000, dport=80, flags="PA", seq=1001, ack=iss + 1)
                           / Raw(b"GET / HTTP/1.0\r\n\r\n")),
        "ipv4-tcp-fin": e(ip4 / TCP(sport=4000, dport=80, flags="FA", seq=1001, ack=iss + 1)),
        "ipv4-tcp-rst": e(ip4 / TCP(sport=4000, dport=80, flags="R", seq=1001)),
        "ipv4-tcp-sack": e(ip4 / TCP(sport=4000, dport=80, flags="A", seq=1001, ack=iss + 1,
                                     options=[("SAck", (iss + 100, iss + 200))])),
        "ipv6-udp": e(ip6 / UDP(sport=1, dport=9) / Raw(b"hello6")),
        "ipv6-icmp-echo": e(ip6 / ICMPv6EchoRequest(id=1, seq=2, data=b"ping6")),
        "ipv6-tcp-syn": e(ip6 / TCP(sport=4000, dport=80, flags="S", seq=1000,
                                    options=[("MSS", 1440), ("WScale", 2)])),
        "ipv6-tcp-data": e(ip6 / TCP(sport=4000, dport=80, flags="PA", seq=1001, ack=iss + 1)
                           / Raw(b"data")),
        "ipv6-hbh": e(ip6 / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=9)),
        "ipv6-dstopt-routing": e(ip6 / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(
            addresses=["fd00::5"], segleft=0) / UDP(sport=1, dport=9)),
        "ndp-ns": e(IPv6(src=PEER6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=STACK6)
                    / ICMPv6NDOptSrcLLAddr(lladdr=pmac), "33:33:ff:00:00:01"),
        "ndp-na": e(IPv6(src=PEER6, dst=STACK6, hlim=255) / ICMPv6ND_NA(tgt=PEER6, S=1, O=1)
                    / ICMPv6NDOptDstLLAddr(lladdr=pmac)),
        "vlan-udp": bytes(Ether(src=pmac, dst=smac) / Dot1Q(vlan=5) / ip4
                          / UDP(sport=1, dport=9)),
    }
    for i, f in enumerate(fragment(IP(src=PEER4, dst=STACK4, id=77) / UDP(sport=1, dport=9)
                                   / Raw(b"f" * 2000), 800)):
        out[f"ipv4-fragment-{i}"] = e(f)
    for i, f in enumerate(fragment(IP(src=PEER4, dst=STACK4, id=78) / TCP(
            sport=4000, dport=80, flags="S") / Raw(b"t" * 100), 64)):
        out[f"ipv4-tcp-fragment-{i}"] = e(f)
    out["ipv6-fragment-0"] = e(ip6 / IPv6ExtHdrFragment(nh=17, m=1, offset=0, id=5)
                               / Raw(bytes(UDP(sport=1, dport=9, len=24)) + b"x" * 8))
    out["ipv6-fragment-1"] = e(ip6 / IPv6ExtHdrFragment(nh=17, m=0, offset=2, id=5)
                               / Raw(b"y" * 8))
    # found by the fuzzer: a neighbour solicitation without a source link-layer option from a
    # host the stack has no cache entry for (the compiled NDP code raised on it)
    out["ns-without-lladdr-to-unknown-host"] = base64.b64decode(
        "MzP/AAABAgAAAAACht1gAAAAACA6//0AAAAAAAAAAAAAAAD/AAL/AgAAAAAAAAAAAAH/AAABhwB9lwAAAAD9AAAA"
        "AAAAAAAAAAAAAAABAgEAAQAAAAI=")
    return out


def write_corpus(directory: str | Path) -> int:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    frames = corpus_frames()
    for name, frame in frames.items():
        (d / name).write_bytes(frame)
    return len(frames)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-corpus":
        print(f"wrote {write_corpus(argv[2])} frames to {argv[2]}")
        return
    if atheris is None:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]'")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    random.seed(0)
    main(sys.argv)
