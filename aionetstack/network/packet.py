"""Per-packet metadata handed from the network layer to transports, and ICMP error reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack import errors

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC

UNICAST = 0
BROADCAST = 1
MULTICAST = 2


class PacketInfo:
    """Where an inbound transport segment came from.

    ``packet`` is the whole IP packet (header first), kept for quoting in ICMP errors.
    ``cast`` is UNICAST, BROADCAST or MULTICAST (by destination address).  ``trusted``: the
    transport checksum needs no verification (the link's checksums are trusted, or GRO verified
    each segment before merging them).
    """

    __slots__ = ("cast", "dst", "family", "first_fragment", "hop_limit", "nic", "packet", "src",
                 "trusted")

    def __init__(self, family: int, src: bytes, dst: bytes, nic: NIC, hop_limit: int,
                 packet: memoryview, cast: int = UNICAST, first_fragment: bool = True,
                 trusted: bool = False) -> None:
        self.family = family
        self.src = src
        self.dst = dst
        self.nic = nic
        self.hop_limit = hop_limit
        self.packet = packet
        self.cast = cast
        self.first_fragment = first_fragment
        self.trusted = trusted


# kind -> (exception class, hard?) for errors about a packet *we* sent (RFC 1122 §4.2.3.9:
# hard errors abort connection attempts; soft ones are only reported).
_KINDS: dict[str, tuple[type[errors.NetstackError], bool]] = {
    "port-unreachable": (errors.ConnectionRefused, True),
    "proto-unreachable": (errors.ConnectionRefused, True),
    "net-unreachable": (errors.NetworkUnreachable, False),
    "host-unreachable": (errors.HostUnreachable, False),
    "admin-prohibited": (errors.HostUnreachable, True),
    "source-route-failed": (errors.HostUnreachable, False),
    "frag-needed": (errors.MessageTooLong, False),
    "time-exceeded": (errors.HostUnreachable, False),
    "param-problem": (errors.ProtocolError, False),
}


class IcmpError:
    """An ICMP error about a packet this stack sent.

    ``src``/``dst`` and ``protocol`` are those of the quoted (original) packet, so ``src`` is one
    of our addresses; ``l4`` holds the quoted transport header (at least 8 bytes: the ports).
    """

    __slots__ = ("code", "dst", "family", "kind", "l4", "mtu", "protocol", "src", "type")

    def __init__(self, family: int, type_: int, code: int, kind: str, src: bytes, dst: bytes,
                 protocol: int, l4: memoryview, mtu: int = 0) -> None:
        self.family = family
        self.type = type_
        self.code = code
        self.kind = kind
        self.src = src
        self.dst = dst
        self.protocol = protocol
        self.l4 = l4
        self.mtu = mtu

    @property
    def ports(self) -> tuple[int, int]:
        b = self.l4
        return (b[0] << 8) | b[1], (b[2] << 8) | b[3]

    @property
    def hard(self) -> bool:
        return _KINDS.get(self.kind, (errors.HostUnreachable, False))[1]

    def exception(self) -> errors.NetstackError:
        cls = _KINDS.get(self.kind, (errors.HostUnreachable, False))[0]
        return cls(f"ICMP {self.kind} from the path to the peer")

    def __repr__(self) -> str:
        return f"<IcmpError v{self.family} {self.kind} type={self.type} code={self.code}>"
