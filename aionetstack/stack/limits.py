"""Per-stack resource limits: everything a remote peer can make the stack allocate is capped.

A network stack faces hostile input by definition, so every table that grows on behalf of a
packet from the wire has a bound.  ``Limits`` gathers them in one place; pass one to
``CoreStack(limits=Limits(...))`` or ``Stack(limits=...)``.  The TCP limits are read on every
SYN, so changing ``stack.limits.max_connections`` later takes effect at once; the reassembly
limits are read when the stack is created and ``neighbour_entries`` when a NIC is added.  The
defaults are what a user would expect from a general-purpose host (Linux-like where Linux has an
equivalent) and are far above what a well-behaved workload needs.

Each limit has a counter in ``stack.stats()`` that shows when it bites:

=====================  =========================  ==============================================
field                  default                    what happens at the limit (counter)
=====================  =========================  ==============================================
``max_connections``    16384                      a SYN (or a SYN-cookie ACK) that would create
                                                  one more TCP connection is refused with a RST;
                                                  established connections keep working
                                                  (``tcp`` ``dropped.connection-limit``)
``max_half_open``      4096                       SYN-RECEIVED children over all listeners; past
                                                  it new SYNs are answered statelessly with SYN
                                                  cookies (``tcp`` ``syncookies-sent``) or, with
                                                  cookies off, dropped (``tcp``
                                                  ``dropped.half-open-limit``).  Each listener's
                                                  SYN queue is also capped by its ``backlog``.
``reassembly_bytes``   4 MiB per IP version       pending fragment bytes; the oldest incomplete
                                                  datagrams are evicted (``fragment``
                                                  ``evicted`` in the reassembler's stats;
                                                  ``stack.ipv4.reassembler.stats()``)
``reassembly_timeout`` 30 s (IPv4) / 60 s (IPv6)  incomplete datagrams are freed (``fragment``
                                                  ``timeout``)
``neighbour_entries``  1024 per NIC and family    ARP/NDP cache; the oldest non-static entry is
                                                  evicted (``neighbour`` ``evicted``)
=====================  =========================  ==============================================

Per-connection limits live with TCP: the send and receive buffers (``stack.tcp.sndbuf`` /
``rcvbuf``, 256 KiB each, or ``TcpEndpoint.set_buffer_sizes``) bound both in-order and
out-of-order bytes, because out-of-order data is only accepted inside the advertised window;
out-of-order *blocks* are capped at ``max(64, rcvbuf // 1024)`` so that a peer sending one byte
in every other sequence number cannot buy ~150 bytes of bookkeeping per byte
(``dropped.ooo-block-limit``);
challenge ACKs are rate-limited by ``stack.tcp.challenge_ack_limit`` (1000/s,
``dropped.challenge-ack-limit``); the MSS a peer announces is clamped to at least 64 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Limits", "TcpMemory"]


@dataclass(slots=True)
class Limits:
    """Resource caps of one stack; see the module docstring for defaults and counters."""

    max_connections: int = 16384
    """TCP connections (every state but LISTEN and CLOSED), accepted or not yet accepted."""
    max_half_open: int = 4096
    """TCP connections in SYN-RECEIVED created by listeners, over all listeners."""
    reassembly_bytes: int = 4 * 1024 * 1024
    """Bytes of fragments held per IP version while datagrams are incomplete."""
    reassembly_timeout4: float = 30.0
    reassembly_timeout6: float = 60.0
    neighbour_entries: int = 1024
    """ARP (and, separately, NDP) cache entries per NIC."""
    max_ooo_bytes: int = 32 * 1024 * 1024
    """Out-of-order TCP bytes held over all connections, waiting for a hole to fill."""
    max_buffer_bytes: int = 256 * 1024 * 1024
    """TCP bytes buffered over all connections (send, receive and out-of-order): past it new
    connections are refused and out-of-order segments dropped."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_half_open", "reassembly_bytes",
                     "neighbour_entries", "max_ooo_bytes", "max_buffer_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.reassembly_timeout4 <= 0 or self.reassembly_timeout6 <= 0:
            raise ValueError("reassembly timeouts must be positive")


class _HasLimits(Protocol):
    @property
    def limits(self) -> Limits: ...


class TcpMemory:
    """Bytes TCP holds for one stack's connections, checked against ``owner.limits``.

    ``buffered`` is every byte in a send buffer, a receive buffer or an out-of-order queue;
    ``ooo`` is the out-of-order part.  The ``Sender`` and ``Receiver`` of every connection charge
    and credit it as their buffers change, and ``release`` it when the connection reaches CLOSED,
    so both are 0 once every connection is gone.  ``peak_*`` are high-water marks.
    """

    __slots__ = ("buffered", "ooo", "owner", "peak_buffered", "peak_ooo")

    def __init__(self, owner: _HasLimits) -> None:
        self.owner = owner
        self.buffered = 0
        self.ooo = 0
        self.peak_buffered = 0
        self.peak_ooo = 0

    def add(self, n: int) -> None:
        """``n`` more (or, negative, fewer) in-order bytes in a send or receive buffer."""
        b = self.buffered = self.buffered + n
        if b > self.peak_buffered:
            self.peak_buffered = b

    def add_ooo(self, n: int) -> None:
        """``n`` more (or fewer) out-of-order bytes."""
        o = self.ooo = self.ooo + n
        if o > self.peak_ooo:
            self.peak_ooo = o
        self.add(n)

    def ooo_fits(self, n: int) -> bool:
        """May ``n`` more out-of-order bytes be queued?"""
        lim = self.owner.limits
        return self.ooo + n <= lim.max_ooo_bytes and self.buffered + n <= lim.max_buffer_bytes

    def over(self) -> bool:
        """Are the buffers at or past ``max_buffer_bytes`` (new connections are refused)?"""
        return self.buffered >= self.owner.limits.max_buffer_bytes

    def snapshot(self) -> dict[str, int]:
        return {"buffered": self.buffered, "ooo": self.ooo, "peak-buffered": self.peak_buffered,
                "peak-ooo": self.peak_ooo}
