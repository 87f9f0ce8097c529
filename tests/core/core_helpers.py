"""Shared harness for the sans-IO core tests (imported as a plain module).

Everything runs on virtual time: stacks come from a ``VirtualNetwork`` sharing one
``ManualClock``.  A ``Wire`` is the far end of a pipe driven by the test itself: it records every
frame the stack sends (with the virtual time it left) and injects frames crafted with scapy.
Scapy is the independent oracle: frames the stack emits are parsed and checked with it.
"""

from __future__ import annotations

import ipaddress
import logging
import warnings
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from aionetstack import link
from aionetstack.link.pipe import PipeEnd
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

logging.getLogger("scapy").setLevel(logging.ERROR)
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"scapy(\..*)?")

STACK_MAC = "02:00:00:00:00:01"
PEER_MAC = "02:00:00:00:00:02"
STACK4, PEER4 = "198.18.0.1", "198.18.0.2"
STACK6, PEER6 = "fd00::1", "fd00::2"


def ip(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Wire:
    """The far end of a pipe, driven by hand.

    ``frames`` holds ``(time, frame)`` for every frame the stack sent, in order.  The pipe must be
    unimpaired (or impaired without delay), so a frame is due the moment the stack sends it.
    """

    def __init__(self, net: VirtualNetwork, end: PipeEnd) -> None:
        self.net = net
        self.end = end
        self.frames: list[tuple[float, bytes]] = []
        end.attach(self, net.clock)

    # LinkReceiver
    def link_deliver(self, frame: memoryview) -> None:
        self.frames.append((self.net.now, bytes(frame)))

    def link_wakeup(self, at: float) -> None:
        if at <= self.net.now:
            self.end.poll()

    def inject(self, frame: Packet | bytes) -> None:
        """Hand ``frame`` to the stack and run everything due now."""
        self.end.send(bytes(frame))
        self.net.settle()

    def take(self) -> list[bytes]:
        """The frames sent since the last ``take`` (the list is cleared)."""
        self.end.poll()
        out = [f for _, f in self.frames]
        self.frames.clear()
        return out

    def take_timed(self) -> list[tuple[float, bytes]]:
        self.end.poll()
        out = list(self.frames)
        self.frames.clear()
        return out


def wired_stack(
    net: VirtualNetwork,
    *,
    l2: bool = True,
    addresses: tuple[str, ...] = (f"{STACK4}/24", f"{STACK6}/64"),
    verify: bool = True,
    mtu: int = 1500,
    static_peer: bool = True,
    corrupt: float = 0.0,
    peer: tuple[str, str] = (PEER4, PEER6),
    **options: Any,
) -> tuple[CoreStack, NIC, Wire]:
    """One stack whose only NIC is a pipe to a ``Wire`` the test drives.

    ``verify``: the NIC verifies every checksum it receives and fills every checksum it sends
    (an in-memory pipe otherwise lets it skip both).  ``static_peer``: the peer's addresses are
    in the neighbour cache, so no ARP/NDP happens.
    """
    s = net.stack(**options)
    macs = (mac(STACK_MAC), mac(PEER_MAC))
    se, we = link.pipe(l2=l2, mtu=mtu, macs=macs, seed=7, corrupt=corrupt)
    nic = s.add_nic(se, list(addresses))
    if verify:
        nic.rx_trusted = False
        nic.tx_offload = False
    wire = Wire(net, we)
    if l2 and static_peer:
        for addr in peer:
            s.add_neighbour(addr, PEER_MAC, nic)
    return s, nic, wire


def to_stack(pkt: Packet, *, l2: bool = True, dst_mac: str = STACK_MAC) -> bytes:
    """Frame an IP packet from the peer for the stack."""
    return bytes(Ether(src=PEER_MAC, dst=dst_mac) / pkt) if l2 else bytes(pkt)


def parse(frame: bytes, *, l2: bool = True) -> Packet:
    if l2:
        return Ether(frame)
    return IP(frame) if frame[0] >> 4 == 4 else IPv6(frame)


def _checksummed(pkt: Packet) -> list[type[Packet]]:
    """The classes of the layers whose checksum scapy can recompute, outermost first, up to and
    including the first ICMP/ICMPv6 layer (a quoted packet belongs to its original sender)."""
    out: list[type[Packet]] = []
    layer: Packet = pkt
    while layer and layer.__class__.__name__ not in ("Raw", "Padding", "NoPayload"):
        cls = layer.__class__
        icmp6 = cls.__name__.startswith("ICMPv6")
        if cls in (IP, UDP, TCP, ICMP) or icmp6:
            out.append(cls)
        if cls is ICMP or icmp6:
            break
        layer = layer.payload
    return out


def assert_checksums(pkt: Packet) -> None:
    """Every checksum scapy can recompute (IPv4 header, UDP, TCP, ICMP, ICMPv6) is valid."""
    classes = _checksummed(pkt)
    assert classes, f"nothing to check in {pkt.summary()}"
    copy = pkt.copy()
    for cls in classes:
        setattr(copy[cls], "cksum" if cls.__name__.startswith("ICMPv6") else "chksum", None)
    rebuilt = pkt.__class__(bytes(copy))
    for cls in classes:
        field = "cksum" if cls.__name__.startswith("ICMPv6") else "chksum"
        got, want = getattr(pkt[cls], field), getattr(rebuilt[cls], field)
        assert got == want, f"{cls.__name__} checksum {got:#06x}, scapy computes {want:#06x}"


def drops(s: CoreStack) -> int:
    """Every frame a stack threw away as malformed or undeliverable, summed over protocols."""
    st = s.stats()
    total = 0
    for proto in ("link", "ethernet", "arp", "ipv4", "ipv6", "icmpv4", "icmpv6", "ndp", "udp"):
        total += st[proto].get("malformed", 0) + st[proto].get("dropped", 0)
    return total
