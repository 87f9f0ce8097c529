"""Per-stack resource limits: everything a remote peer can make the stack allocate is capped.

A network stack faces hostile input by definition, so every table that grows on behalf of a
packet from the wire has a bound.  ``Limits`` gathers the per-stack ones in one place; pass one
to ``CoreStack(limits=Limits(...))`` or ``Stack(limits=...)``.  The TCP limits are read when they
are checked (every SYN, every out-of-order segment), so changing ``stack.limits.max_connections``
later takes effect at once; the reassembly limits are read when the stack is created and
``neighbour_entries`` when a NIC is added.  The defaults are what a user would expect from a
general-purpose host (Linux-like where Linux has an equivalent) and are far above what a
well-behaved workload needs.

Each limit has a counter that shows when it bites: ``stack.stats()[proto][name]`` below (a drop
reason ``r`` is counted as both ``dropped`` and ``dropped.r``).  TCP's running totals are in
``stack.tcp.memory`` (a ``TcpMemory``: ``buffered``, ``ooo`` and their peaks).

======================  ========================  ==============================================
field                   default                   what happens at the limit (counter)
======================  ========================  ==============================================
``max_connections``     16384                     a SYN (or a SYN-cookie ACK) that would create
                                                  one more TCP connection (any state but LISTEN
                                                  and CLOSED, TIME-WAIT included) is refused
                                                  with a RST; established connections keep
                                                  working (``tcp`` ``dropped.connection-limit``)
``max_half_open``       4096                      SYN-RECEIVED children over all listeners; past
                                                  it new SYNs are answered statelessly with SYN
                                                  cookies (``tcp`` ``syncookies-sent``) or, with
                                                  cookies off, dropped (``tcp``
                                                  ``dropped.half-open-limit``).  Each listener's
                                                  SYN queue is also capped by its ``backlog``
                                                  (``dropped.syn-queue-overflow`` without
                                                  cookies), and so is its accept queue (a SYN
                                                  is dropped: ``dropped.listen-overflow``).
``max_buffer_bytes``    256 MiB                   TCP bytes in send buffers, receive buffers
                                                  and out-of-order queues over all connections
                                                  (``stack.tcp.memory.buffered``).  At or past
                                                  it new connections are refused with a RST
                                                  like ``max_connections`` (``tcp``
                                                  ``dropped.memory-limit``) and out-of-order
                                                  segments are dropped (``tcp``
                                                  ``dropped.ooo-budget``); established
                                                  connections keep sending and receiving.
``max_ooo_bytes``       32 MiB                    out-of-order TCP bytes over all connections
                                                  (``stack.tcp.memory.ooo``).  A segment that
                                                  would queue more is dropped (``tcp``
                                                  ``dropped.ooo-budget``); queued bytes are
                                                  never dropped (no reneging on SACKed data),
                                                  in-order data is always taken, the sender
                                                  retransmits what was refused.
``reassembly_bytes``    4 MiB per IP version      pending fragment bytes; the oldest incomplete
                                                  datagrams are evicted (``fragment``
                                                  ``evicted.ipv4`` / ``evicted.ipv6``; also
                                                  ``evicted`` in
                                                  ``stack.ipv4.reassembler.stats()``)
``reassembly_timeout4`` 30 s (IPv4)               incomplete datagrams are freed (``fragment``
``reassembly_timeout6`` 60 s (IPv6)               ``timeout``)
``neighbour_entries``   1024 per NIC and family   ARP/NDP cache; the oldest non-static entry is
                                                  evicted (``neighbour`` ``evicted``)
======================  ========================  ==============================================

Fixed bounds that go with these (not in ``Limits``):

* a datagram is reassembled from at most 1024 fragments and 65535 bytes (``too-many-fragments``,
  ``too-big`` in the reassembler's stats); packets waiting for address resolution are capped
  at 32 packets / 256 KiB per neighbour entry, the oldest dropped (``neighbour``
  ``dropped.queue-full``).
* TCP per connection: the send and receive buffers (``stack.tcp.sndbuf`` / ``rcvbuf``, 256 KiB
  each, or ``TcpEndpoint.set_buffer_sizes``).  They bite as flow control, not drops: a full
  receive buffer closes the advertised window, a full send buffer makes ``write`` accept less
  (WouldBlock).  In-order plus out-of-order receive bytes never exceed the window last
  offered (``rcvbuf`` plus less than one window-scale unit), so that cap is per connection and
  tied to the receive window; out-of-order *blocks* are capped at ``max(64, rcvbuf // 1024)``
  so that a peer sending one byte in every other sequence number cannot buy ~150 bytes of
  bookkeeping per byte (``tcp`` ``dropped.ooo-block-limit``).
* TCP timers free connections a peer holds open: persist probes go on while the window stays
  at zero (RFC 9293 §3.8.6.1 -- the window being closed is no reason to drop the connection),
  until ``TcpEndpoint.user_timeout`` (TCP_USER_TIMEOUT) or 15 unanswered retransmissions
  (``stack.tcp.data_retries``) time it out (``tcp`` ``timeouts``; the endpoint fails with
  TimedOut); a closed endpoint in FIN-WAIT-2 is freed after ``stack.tcp.fin_timeout`` (60 s).
* Challenge ACKs are rate-limited by ``stack.tcp.challenge_ack_limit`` (1000/s,
  ``dropped.challenge-ack-limit``, RFC 5961 §7); the MSS a peer announces is clamped to at
  least 64 bytes, so a tiny-MSS peer cannot make a transfer cost a segment per byte.
* UDP: each socket's receive queue holds ``stack.udp.rcvbuf`` bytes (208 KiB; ``udp``
  ``dropped.receive-buffer-full``).

How much memory this bounds.  What a remote peer alone can make TCP hold is the out-of-order
queues (at most ``max_ooo_bytes`` in all) and, while the application does not read, each
connection's receive buffer (at most ``rcvbuf`` each, since the peer may only send inside the
window it was offered); send buffers fill only as fast as the application writes.  So the
worst case is ``max_connections * (rcvbuf + sndbuf)`` (8 GiB with the defaults) only if the
application itself writes that much and reads nothing.  ``max_buffer_bytes`` is the global
memory budget on top: like Linux's ``tcp_mem`` it is the point past which the stack stops
taking on new work (new connections, out-of-order data) while the established connections --
each held to its own buffers -- carry on and drain.  It is not a hard cap on what established
connections buffer: refusing in-order data they were offered a window for would shrink that
window, which RFC 9293 §3.8.6.2.1 strongly discourages.
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
