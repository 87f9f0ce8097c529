"""TIME-WAIT without the endpoint (as Linux's ``inet_timewait_sock``).

A connection that the user has closed and that reaches TIME-WAIT has nothing left to do for
2*MSL but answer segments of the old incarnation (RFC 9293 §3.10.7.4):

* a retransmitted FIN (below RCV.NXT, so unacceptable) is acknowledged and restarts the 2*MSL
  timeout; any other unacceptable segment but a RST is acknowledged (PAWS, RFC 7323 §5.3,
  first);
* a RST with SEG.SEQ == RCV.NXT ends TIME-WAIT, any other acceptable one draws a challenge ACK,
  as does a SYN (RFC 5961 §3.2, §4.2), and an ACK of something never sent or too old
  (RFC 5961 §5.2); an acceptable ACK refreshes TS.Recent (RFC 7323 §4.3) and is otherwise
  ignored;
* a SYN whose sequence number is beyond the old connection's, or whose timestamp is newer
  (RFC 1122 §4.2.2.13, RFC 6191), ends TIME-WAIT and goes to the listener (``TcpProtocol``).

So ``TimeWait`` keeps only the numbers those answers need, and the endpoint's buffers, timers,
sender, receiver and estimators are released when it takes over: a client making thousands of
short connections holds one small record per 4-tuple for 2*MSL instead of a whole endpoint,
and the garbage collector has a few objects to look at instead of a few dozen.  The port stays
reserved until the record ends.  The endpoint object the user may still hold reads TIME-WAIT
until then and CLOSED after: it refers to its record (``_tw``) and looks at it when its state is
read, while the record holds only the endpoint's waiter queue (notified when it ends), never the
endpoint, so an endpoint nobody holds is freed at once.

Every record of a stack waits in one heap with one timer (``TimeWaitTable``): 2*MSL restarts
only move a record's ``expires``, and its heap entry re-queues itself when it comes due.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from aionetstack.errors import NetstackError
from aionetstack.stack.ports import Reservation
from aionetstack.stack.route import Route
from aionetstack.stack.routing import send_ip
from aionetstack.stack.waiter import EVENT_HUP, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.seqnum import MASK, seq_gt, seq_le, seq_lt
from aionetstack.wire.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    TcpHeader,
    fill_tcp_checksum,
    pack_tcp,
    pack_tcp_ts,
)

if TYPE_CHECKING:
    from aionetstack.transport.tcp.endpoint import TcpEndpoint
    from aionetstack.transport.tcp.protocol import TcpProtocol

ConnKey = tuple[bytes, int, bytes, int]


class TimeWait:
    """One connection in TIME-WAIT: its 4-tuple, route and the sequence-space numbers."""

    __slots__ = ("ended", "expires", "key", "last_ack_sent", "max_snd_wnd", "rcv_nxt",
                 "rcv_wnd", "reservation", "route", "snd_nxt", "ts_offset", "ts_recent", "ttl",
                 "waiter", "window")

    def __init__(self, ep: TcpEndpoint, key: ConnKey, route: Route, expires: float) -> None:
        snd, rcv = ep.snd, ep.rcv
        self.key = key
        self.route = route
        self.ttl = ep.ttl
        self.expires = expires
        # our FIN is acknowledged (SND.UNA == SND.MAX): every ACK we send carries SND.MAX
        self.snd_nxt = snd.snd_max
        self.max_snd_wnd = max(snd.max_snd_wnd, 1)
        self.rcv_nxt = rcv.rcv_nxt
        # nothing more is received, so the window on our ACKs no longer moves: the field the
        # endpoint's next ACK would have carried, once
        self.window = rcv.advertise()
        self.rcv_wnd = rcv.rcv_wnd
        self.last_ack_sent = ep.last_ack_sent
        self.ts_recent: int | None = ep.ts_recent if ep.ts_enabled else None
        self.ts_offset = ep.ts_offset
        self.reservation: Reservation | None = ep.reservation
        self.waiter: WaiterQueue | None = ep.waiter  # told when the record ends
        self.ended = False

    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 §3.10.7.4 acceptability test (as ``Receiver.acceptable``)."""
        nxt, wnd = self.rcv_nxt, self.rcv_wnd
        if wnd == 0:
            return seq == nxt
        if ((seq - nxt) & MASK) < wnd:
            return True
        return seg_len > 0 and ((seq + seg_len - 1 - nxt) & MASK) < wnd

    def __repr__(self) -> str:
        return f"<TimeWait {self.key[1]} -> {self.key[3]} expires={self.expires:.3f}>"


def reopens_time_wait(ts_recent: int | None, rcv_nxt: int, h: TcpHeader) -> bool:
    """May this SYN end TIME-WAIT and start a new incarnation of the 4-tuple?  Its sequence
    number is beyond the old connection's (RFC 1122 §4.2.2.13), or, when the old connection used
    timestamps (``ts_recent`` not None), its TSval is newer (RFC 6191); a SYN whose TSval is
    older fails PAWS (Linux ``tcp_timewait_state_process``)."""
    ts = h.options.timestamp if ts_recent is not None else None
    if ts is not None and ts_recent is not None and seq_lt(ts[0], ts_recent):
        return False
    return seq_gt(h.seq, rcv_nxt) or (
        ts is not None and ts_recent is not None and seq_gt(ts[0], ts_recent))


class TimeWaitTable:
    """The stack's TIME-WAIT records by 4-tuple, and their expiry."""

    __slots__ = ("_heap", "_seq", "_timer", "proto", "records")

    def __init__(self, proto: TcpProtocol) -> None:
        self.proto = proto
        self.records: dict[ConnKey, TimeWait] = {}
        self._heap: list[tuple[float, int, TimeWait]] = []
        self._seq = 0
        self._timer = proto.stack.timers.timer(self._expire)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def get(self, key: ConnKey) -> TimeWait | None:
        return self.records.get(key)

    # -- taking over from an endpoint --------------------------------------------------------
    def take_over(self, ep: TcpEndpoint, expires: float) -> None:
        """``ep`` (user-closed, in TIME-WAIT until ``expires``) hands its 4-tuple and port to a
        record and releases everything else; it stays in TIME-WAIT until the record ends."""
        local, remote, route = ep.local, ep.remote, ep.route
        proto = self.proto
        key = (local[0], local[1], remote[0], remote[1]) if local and remote else None
        if route is None or key is None or proto.connections.get(key) is not ep:
            # not a connection of the table (cannot happen in TIME-WAIT): the endpoint waits
            ep._linger_timer.schedule(expires)
            return
        rec = TimeWait(ep, key, route, expires)
        del proto.connections[key]
        self.records[key] = rec
        ep.reservation = None  # the record's now
        ep._tw = rec
        ep._release()
        proto.endpoints.discard(ep)
        heap = self._heap
        self._seq += 1
        heapq.heappush(heap, (expires, self._seq, rec))
        if heap[0][2] is rec:
            self._timer.schedule(expires)

    # -- segment arrival ----------------------------------------------------------------------
    def segment_arrived(self, rec: TimeWait, h: TcpHeader) -> None:
        """RFC 9293 §3.10.7.4 in TIME-WAIT (see the module docstring); a SYN that reopens the
        4-tuple never gets here."""
        proto = self.proto
        flags = h.flags
        seq = h.seq
        ts = h.options.timestamp if rec.ts_recent is not None else None
        # PAWS (RFC 7323 §5.3)
        if ts is not None and rec.ts_recent is not None and not flags & RST and seq_lt(
                ts[0], rec.ts_recent):
            proto.stats.drop("paws")
            self._send_ack(rec)
            return
        # 1. sequence number check
        seg_len = len(h.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if not rec.acceptable(seq, seg_len):
            if not flags & RST:
                if flags & FIN:  # a retransmitted FIN: ACK it and restart the 2*MSL timeout
                    rec.expires = proto.stack.now() + 2 * proto.msl
                self._send_ack(rec)
            return
        # 2. RST (RFC 5961 §3.2)
        if flags & RST:
            if seq == rec.rcv_nxt:
                self.end(rec)
            else:
                self._challenge_ack(rec)
            return
        # 4. SYN in a synchronized state (RFC 5961 §4.2)
        if flags & SYN:
            self._challenge_ack(rec)
            return
        # 5. ACK: of something never sent, or too old (RFC 5961 §5.2)
        if not flags & ACK:
            return
        ack = h.ack
        if seq_gt(ack, rec.snd_nxt) or seq_lt(ack, (rec.snd_nxt - rec.max_snd_wnd) & MASK):
            self._challenge_ack(rec)
            return
        if ts is not None and seq_le(seq, rec.last_ack_sent):
            rec.ts_recent = ts[0]  # RFC 7323 §4.3
        # nothing else happens in TIME-WAIT: no text is taken, the FIN is no longer new

    def _challenge_ack(self, rec: TimeWait) -> None:
        proto = self.proto
        if proto.challenge_ack_allowed():
            proto.stats["challenge-acks"] += 1
            self._send_ack(rec)

    def _send_ack(self, rec: TimeWait) -> None:
        """The pure ACK the endpoint would send: the same bytes (``EndpointCore._emit``)."""
        proto = self.proto
        stack = proto.stack
        route = rec.route
        off = route.headroom
        _, sport, _, dport = rec.key
        ack = rec.rcv_nxt
        if rec.ts_recent is not None:
            l4 = 32
            buf = route.new_packet(l4)
            tsval = (int(stack.now() * 1000) + rec.ts_offset) & MASK
            pack_tcp_ts(buf, off, sport, dport, rec.snd_nxt, ack, ACK, rec.window, tsval,
                        rec.ts_recent)
            if not route.nic.tx_offload:
                fill_tcp_checksum(buf, off, l4, route.local, route.remote)
        else:
            l4 = 20
            buf = route.new_packet(l4)
            pack_tcp(buf, off, src=route.local, dst=route.remote, sport=sport, dport=dport,
                     seq=rec.snd_nxt, ack=ack, flags=ACK, window=rec.window,
                     checksum=not route.nic.tx_offload)
        try:
            send_ip(stack, route, buf, l4, PROTO_TCP, ttl=rec.ttl, df=True)
        except NetstackError as exc:  # e.g. the NIC went down: the segment is simply lost
            proto.stats.drop(f"send-{type(exc).__name__}")
            return
        proto.stats["sent"] += 1
        rec.last_ack_sent = ack

    # -- the end ----------------------------------------------------------------------------
    def end(self, rec: TimeWait) -> None:
        """End TIME-WAIT now: forget the 4-tuple, release the port, the endpoint (if someone
        still holds it) goes to CLOSED."""
        if self.records.get(rec.key) is rec:
            del self.records[rec.key]
            if not self.records:  # nothing left to expire: no stale heap entry keeps the timer
                self._heap.clear()
                self._timer.cancel()
        if rec.reservation is not None:
            self.proto.stack.ports.release(rec.reservation)
            rec.reservation = None
        rec.ended = True  # the endpoint, if someone still holds it, reads CLOSED from now on
        waiter, rec.waiter = rec.waiter, None
        if waiter is not None:
            waiter.notify(EVENT_IN | EVENT_OUT | EVENT_HUP)

    def forget(self, ep: TcpEndpoint) -> None:
        """``ep`` left TIME-WAIT by itself (an abort): end the record that took over from it."""
        rec, ep._tw = ep._tw, None
        if rec is not None and not rec.ended:
            self.end(rec)

    def _expire(self, now: float) -> None:
        heap = self._heap
        records = self.records
        while heap and heap[0][0] <= now:
            _, _, rec = heapq.heappop(heap)
            if records.get(rec.key) is not rec:
                continue  # ended early
            if rec.expires > now:  # restarted by a retransmitted FIN: wait on
                self._seq += 1
                heapq.heappush(heap, (rec.expires, self._seq, rec))
                continue
            self.end(rec)
        if heap:
            self._timer.schedule(heap[0][0])

    def close_all(self) -> None:
        for rec in list(self.records.values()):
            self.end(rec)
