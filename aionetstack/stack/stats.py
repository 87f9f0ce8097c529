"""Counters in the style of gVisor's ``tcpip.Stats``.

One ``Counters`` per protocol.  Drops carry a reason: ``drop("no-route")`` bumps both ``dropped``
and ``dropped.no-route``; malformed input bumps ``malformed`` and ``malformed.<reason>``.  Reading
(``Stack.stats()``) returns plain nested dicts, safe to serialise.
"""

from __future__ import annotations

PROTOCOLS = ("link", "ethernet", "arp", "ipv4", "ipv6", "icmpv4", "icmpv6", "ndp", "udp", "tcp",
             "fragment", "neighbour")


class Counters(dict[str, int]):
    """A counter per name; a name never counted reads as 0 (like ``collections.Counter``).

    A plain ``dict`` subclass with ``__missing__``: ``c[name] += 1`` on the hot path costs half
    what it does on a ``Counter`` subclass.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0

    def drop(self, reason: str, n: int = 1) -> None:
        self["dropped"] += n
        self["dropped." + reason] += n

    def malformed(self, reason: str) -> None:
        self["malformed"] += 1
        self["malformed." + reason] += 1


class Stats:
    __slots__ = PROTOCOLS

    link: Counters
    ethernet: Counters
    arp: Counters
    ipv4: Counters
    ipv6: Counters
    icmpv4: Counters
    icmpv6: Counters
    ndp: Counters
    udp: Counters
    tcp: Counters
    fragment: Counters
    neighbour: Counters

    def __init__(self) -> None:
        for name in PROTOCOLS:
            setattr(self, name, Counters())

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {name: dict(sorted(getattr(self, name).items())) for name in PROTOCOLS}
