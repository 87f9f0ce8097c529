"""Passive open: the LISTEN state, the SYN queue and the accept queue (RFC 9293 §3.10.7.2).

A listening endpoint answers segments for which no connection exists yet:

* RST -- ignored;
* ACK -- if the SYN queue overflowed in the last two minutes and the ACK carries a valid SYN
  cookie (``isn.SynCookies``), the connection is created straight into the accept queue;
  otherwise it is answered with ``<SEQ=SEG.ACK><CTL=RST>``;
* SYN -- a child endpoint is created in SYN-RECEIVED, registered in the connection table and put
  on the *SYN queue*; it answers with SYN-ACK.  When the handshake completes the child moves to
  the *accept queue* and the listener's waiters get ``EVENT_IN``; ``accept`` pops it.
* anything else -- dropped.

``backlog`` bounds each queue.  A SYN arriving with a full accept queue is dropped (the peer
retries it later); with a full SYN queue it is answered statelessly with a SYN cookie
(RFC 4987 §3.6) when ``TcpProtocol.syncookies`` is on (the default, as on Linux), else dropped.
``stack.limits`` bounds all listeners together: past ``max_half_open`` SYN-RECEIVED children a
SYN is treated as if its SYN queue were full, and past ``max_connections`` entries in the
connection table, or with ``max_buffer_bytes`` buffered over all connections, a SYN (or a valid
SYN-cookie ACK) is refused with a RST (``dropped.connection-limit`` / ``dropped.memory-limit``)
while established connections carry on.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from aionetstack.errors import NetstackError
from aionetstack.network.packet import PacketInfo
from aionetstack.stack.routing import find_route, send_ip
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.seqnum import MASK
from aionetstack.wire.tcp import ACK, RST, SYN, TcpHeader, TcpOptions, pack_tcp

if TYPE_CHECKING:
    from aionetstack.transport.tcp.endpoint import TcpEndpoint
    from aionetstack.transport.tcp.protocol import TcpProtocol


class ListenQueue:
    __slots__ = ("accept_queue", "backlog", "last_overflow", "syn_queue")

    def __init__(self, backlog: int) -> None:
        self.backlog = max(backlog, 1)
        self.syn_queue: list[TcpEndpoint] = []
        self.accept_queue: deque[TcpEndpoint] = deque()
        self.last_overflow: float | None = None

    def accept_full(self) -> bool:
        return len(self.accept_queue) >= self.backlog

    def syn_full(self) -> bool:
        return len(self.syn_queue) >= self.backlog

    def established(self, child: TcpEndpoint) -> None:
        if child in self.syn_queue:
            self.syn_queue.remove(child)
        self.accept_queue.append(child)

    def forget(self, child: TcpEndpoint) -> None:
        if child in self.syn_queue:
            self.syn_queue.remove(child)
        try:
            self.accept_queue.remove(child)
        except ValueError:
            pass

    def children(self) -> list[TcpEndpoint]:
        return [*self.syn_queue, *self.accept_queue]


def listen_input(listener: TcpEndpoint, pkt: PacketInfo, h: TcpHeader) -> None:
    proto = listener.proto
    flags = h.flags
    q = listener.listen_queue
    assert q is not None
    if flags & RST:
        return
    now = proto.stack.now()
    if flags & ACK:
        if (not flags & SYN and q.last_overflow is not None and now - q.last_overflow < 120
                and not q.accept_full()):
            irs = (h.seq - 1) & MASK
            mss = proto.cookies.check((h.ack - 1) & MASK, pkt.dst, h.dport, pkt.src, h.sport,
                                      irs, now)
            if mss is not None:
                if over_limits(proto):  # stack.limits: refuse with a RST
                    proto.send_reset(pkt, h)
                    return
                proto.stats["syncookies-accepted"] += 1
                listener.spawn_child(pkt, h, cookie=((h.ack - 1) & MASK, mss))
                return
        proto.send_reset(pkt, h)
        return
    if not flags & SYN:
        proto.stats.drop("listen-no-syn")
        return
    if q.accept_full():
        proto.stats.drop("listen-overflow")
        return
    if over_limits(proto):  # stack.limits: refuse with a RST
        proto.send_reset(pkt, h)
        return
    limits = proto.stack.limits
    half_full = q.syn_full()
    if not half_full and len(proto.connections) >= limits.max_half_open:  # cheap pre-check
        half_full = half_open(proto) >= limits.max_half_open
    if half_full:
        if proto.syncookies:
            q.last_overflow = now
            send_cookie(listener, pkt, h, now)
        else:
            proto.stats.drop("syn-queue-overflow" if q.syn_full() else "half-open-limit")
        return
    child = listener.spawn_child(pkt, h)
    if child is not None:
        q.syn_queue.append(child)


def over_limits(proto: TcpProtocol) -> bool:
    """Must a new connection be refused (``max_connections``, ``max_buffer_bytes``)?  Counts
    the reason when it must."""
    if len(proto.connections) + len(proto.time_wait) >= proto.stack.limits.max_connections:
        proto.stats.drop("connection-limit")
        return True
    if proto.memory.over():
        proto.stats.drop("memory-limit")
        return True
    return False


def half_open(proto: TcpProtocol) -> int:
    """SYN-RECEIVED children over every listener (``Limits.max_half_open``)."""
    return sum(len(lst.listen_queue.syn_queue) for lst in proto.listeners.values()
               if lst.listen_queue is not None)


def send_cookie(listener: TcpEndpoint, pkt: PacketInfo, h: TcpHeader, now: float) -> None:
    """Answer a SYN statelessly with a SYN-ACK whose ISN is a cookie (RFC 4987 §3.6)."""
    proto = listener.proto
    try:
        route = find_route(proto.stack, pkt.src, pkt.dst)
    except NetstackError:
        return
    from aionetstack.transport.tcp.endpoint import local_mss

    ours = local_mss(route.mtu, route.family)
    if listener.user_mss is not None:
        ours = min(ours, listener.user_mss)
    mss = min(h.options.mss or (536 if route.family == 4 else 1220), ours)
    cookie = proto.cookies.make(pkt.dst, h.dport, pkt.src, h.sport, h.seq, mss, now)
    opts = TcpOptions(mss=ours)
    l4 = 20 + opts.packed_len()
    buf = route.new_packet(l4)
    pack_tcp(buf, route.headroom, src=route.local, dst=route.remote, sport=h.dport,
             dport=h.sport, seq=cookie, ack=(h.seq + 1) & MASK, flags=SYN | ACK,
             window=min(listener.rcv.capacity, 0xFFFF), options=opts,
             checksum=not route.nic.tx_offload)
    try:
        send_ip(proto.stack, route, buf, l4, PROTO_TCP)
    except NetstackError:
        return
    proto.stats["syncookies-sent"] += 1
