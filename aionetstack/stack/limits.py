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

__all__ = ["Limits"]


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

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_half_open", "reassembly_bytes",
                     "neighbour_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.reassembly_timeout4 <= 0 or self.reassembly_timeout6 <= 0:
            raise ValueError("reassembly timeouts must be positive")
