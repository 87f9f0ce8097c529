"""Passive open: the LISTEN state, the SYN queue and the accept queue (RFC 9293 §3.10.7.2).

A listening endpoint answers segments for which no connection exists yet:

* RST -- ignored;
* ACK -- answered with ``<SEQ=SEG.ACK><CTL=RST>`` (no SYN cookies in this increment);
* SYN -- a child endpoint is created in SYN-RECEIVED, registered in the connection table and put
  on the *SYN queue*; it answers with SYN-ACK.  When the handshake completes the child moves to
  the *accept queue* and the listener's waiters get ``EVENT_IN``; ``accept`` pops it.
* anything else -- dropped.

``backlog`` bounds both queues together (Linux bounds them separately; one bound is simpler and
still keeps a SYN flood from growing memory without limit): a SYN arriving when
``len(syn_queue) + len(accept_queue) >= backlog`` is dropped, so the peer retries it later.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from aionetstack.network.packet import PacketInfo
from aionetstack.wire.tcp import ACK, RST, SYN, TcpHeader

if TYPE_CHECKING:
    from aionetstack.transport.tcp.endpoint import TcpEndpoint


class ListenQueue:
    __slots__ = ("accept_queue", "backlog", "syn_queue")

    def __init__(self, backlog: int) -> None:
        self.backlog = max(backlog, 1)
        self.syn_queue: list[TcpEndpoint] = []
        self.accept_queue: deque[TcpEndpoint] = deque()

    def full(self) -> bool:
        return len(self.syn_queue) + len(self.accept_queue) >= self.backlog

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
    if flags & RST:
        return
    if flags & ACK:
        proto.send_reset(pkt, h)
        return
    if not flags & SYN:
        proto.stats.drop("listen-no-syn")
        return
    q = listener.listen_queue
    assert q is not None
    if q.full():
        proto.stats.drop("listen-overflow")
        return
    child = listener.spawn_child(pkt, h)
    if child is not None:
        q.syn_queue.append(child)
