"""The send side: send buffer, segmentation, ACK processing and loss recovery.

State (RFC 9293 §3.3.1 names): ``iss``, ``snd_una``, ``snd_nxt``, ``snd_wnd``, ``snd_wl1``,
``snd_wl2``; plus ``snd_max`` (highest sequence number sent: ``snd_nxt`` is pulled back to
``snd_una`` after a retransmission timeout, go-back-N style, RFC 5681 §3.1 / RFC 6298 §5.4).

``buffer`` holds every byte from ``buf_seq`` (== ``snd_una`` once the SYN is acknowledged) that is
unacknowledged or unsent; a queued FIN sits at ``buf_seq + len(buffer)``.

Output (``output``) sends while the usable window ``min(snd_wnd, cwnd) - flight`` allows,
segmenting to ``mss``, with Nagle (RFC 9293 §3.7.4: a short segment only when nothing is in
flight, unless ``nodelay``) and sender-side SWS avoidance (RFC 9293 §3.8.6.2.1).  A zero
window with data queued and nothing in flight arms the persist timer; its expiry sends one byte
past the window as a probe (RFC 9293 §3.8.6.1).

ACK processing (``on_ack``): window update per RFC 9293 §3.10.7.4 (SND.WL1/WL2 rule, scaled by
``snd_wscale``, RFC 7323 §2.3); cumulative ACK trims the buffer; RTT sampling from the echoed
timestamp or, without timestamps, from one timed segment (Karn's rule); duplicate ACK counting
and NewReno fast retransmit / fast recovery (RFC 5681 §3.2, RFC 6582 §3.2), with limited
transmit (RFC 3042) on the first two duplicate ACKs.

With SACK (RFC 2018) loss detection and recovery are RACK-TLP (RFC 8985), RFC 6675 with PRR
(RFC 6937) and D-SACK undo: see ``recovery``; the ``Scoreboard`` keeps the SACKed ranges above
``snd_una`` (the resend after a zero-window probe or a path MTU drop skips them).  Sending for a
SACK connection counts the RFC 6675 ``pipe`` (SACKed and lost data leave it) against ``cwnd``,
which also gives limited transmit (RFC 3042) for ACKs that SACK new data.
"""

from __future__ import annotations

from collections.abc import Callable

from aionetstack.stack.limits import TcpMemory
from aionetstack.transport.tcp.bytequeue import ByteQueue, Pieces
from aionetstack.transport.tcp.congestion import CongestionControl, Reno
from aionetstack.transport.tcp.recovery import LossRecovery
from aionetstack.transport.tcp.rtt import RttEstimator
from aionetstack.wire.seqnum import (
    _HALF,
    MASK,
    seq_add,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    seq_max,
    seq_sub,
)
from aionetstack.wire.tcp import ACK, FIN, PSH

Emit = Callable[[int, int, bytes | memoryview | Pieces], None]  # (seq, flags, payload)


class Sender(LossRecovery):
    __slots__ = (
        "account", "buf_seq", "buffer", "bytes_acked", "bytes_sent", "capacity", "cc", "corked",
        "emit", "fin_queued", "gso_limit", "iss", "max_snd_wnd", "mss",
        "nodelay", "retransmits", "retries", "rtt", "rtt_seq", "rtt_time",
        "sack_ok", "sb", "seg_max", "snd_max", "snd_nxt", "snd_sml", "snd_una", "snd_wl1",
        "snd_wl2", "snd_wnd", "snd_wscale",
    )

    def __init__(self, emit: Emit, capacity: int, rtt: RttEstimator,
                 cc: CongestionControl | None = None) -> None:
        self.emit = emit
        self.capacity = capacity
        self.rtt = rtt
        self.iss = 0
        self.snd_una = self.snd_nxt = self.snd_max = self.buf_seq = 0
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.snd_wscale = 0
        self.max_snd_wnd = 0
        self.mss = 536
        # segmentation offload: ``seg_max`` payload bytes per emitted (super-)segment, a
        # multiple of ``mss`` up to ``gso_limit``; the link cuts it into MSS-sized segments
        self.gso_limit = 0
        self.seg_max = 536
        self.cc: CongestionControl = cc if cc is not None else Reno(self.mss)
        self.buffer = ByteQueue()
        self.account: TcpMemory | None = None  # the stack's TCP memory (Limits)
        self.fin_queued = False
        self.nodelay = False
        self.corked = False  # output() held back a short segment for the end of the turn
        self.dupacks = 0
        self.in_recovery = False
        self.recover = 0
        self.retries = 0  # consecutive timeouts without progress
        self.retransmits = 0  # total retransmitted segments
        self.bytes_sent = 0
        self.bytes_acked = 0
        self.rtt_seq: int | None = None  # the timed segment (no timestamps)
        self.rtt_time = 0.0
        self.sack_ok = False
        self.sb = Scoreboard()
        self._init_recovery(0)

    def start(self, iss: int) -> None:
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = self.snd_max = seq_add(iss, 1)
        self.buf_seq = seq_add(iss, 1)
        self.snd_sml = iss  # end of the last short segment sent (Minshall's Nagle)
        self.recover = iss
        # the rest of the recovery state is as ``__init__`` left it (``start`` comes once, on a
        # new sender): only what counts from the ISN moves, no second RtxQueue is made
        self.rack_end = self.rack_fack = iss

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self.seg_max = max(mss, self.gso_limit // mss * mss)
        self.cc.set_mss(mss)

    # -- queries -----------------------------------------------------------------------------
    @property
    def flight(self) -> int:
        return seq_sub(self.snd_max, self.snd_una)

    @property
    def fin_seq(self) -> int | None:
        return (self.buf_seq + self.buffer.nbytes) & MASK if self.fin_queued else None

    def fin_acked(self) -> bool:
        f = self.fin_seq
        return f is not None and seq_gt(self.snd_una, f)

    def space(self) -> int:
        free = self.capacity - self.buffer.nbytes
        return free if free > 0 else 0

    def writable(self) -> bool:
        """Whether to report the endpoint writable: free space of at least half of what is
        queued (Linux ``sk_stream_is_writeable``), so a writer refills the buffer in large
        pieces rather than by the few bytes each ACK frees.  ``queue`` takes any free space."""
        q = self.buffer.nbytes
        free = self.capacity - q
        return free > 0 and 2 * free >= q

    def unsent(self) -> int:
        off = (self.snd_nxt - self.buf_seq) & MASK  # seq_sub(snd_nxt, buf_seq), inline
        return self.buffer.nbytes - (off - 0x100000000 if off & _HALF else off)

    def outstanding(self) -> bool:
        return self.snd_una != self.snd_max

    # -- user data -------------------------------------------------------------------------------
    def queue(self, data: bytes | bytearray | memoryview) -> int:
        n = min(len(data), self.space())
        if n:
            self.buffer.append(data if n == len(data) else memoryview(data)[:n])
            if self.account is not None:
                self.account.add(n)
        return n

    def release(self) -> None:
        """The connection reached CLOSED: its buffer no longer counts against the stack."""
        if self.account is not None:
            self.account.add(-len(self.buffer))
            self.account = None

    # -- output ------------------------------------------------------------------------------------
    def output(self, now: float, cork: bool = False) -> bool:
        """Send what the windows, Nagle and SWS avoidance allow; True if anything was sent.

        With ``cork``, the last of the queued data is held back (``corked`` says so) when it
        would make a segment shorter than the largest while earlier ones are in flight: the
        caller sends it at the end of the turn, together with whatever the application writes
        meanwhile (Linux "autocorking").  Nothing waits longer than that, and nothing waits
        with ``nodelay``: each write is a segment of its own then.
        """
        sack = self.sack_ok
        rq = self.rq
        sent = bool(sack and rq.lost) and self.retransmit_lost(now)
        buf = self.buffer
        off = (self.snd_nxt - self.buf_seq) & MASK
        if off & _HALF:
            off -= 0x100000000
        queued = buf.nbytes
        if off > queued or (off == queued and not self.fin_queued):
            return sent  # nothing new to send: every call after an ACK that emptied the queue
        while True:
            room = self.seg_max
            nxt = self.snd_nxt
            # seq_sub(nxt, snd_una) and seq_sub(nxt, buf_seq), inline: signed 32-bit distances
            flight = (nxt - self.snd_una) & MASK
            if flight & _HALF:
                flight -= 0x100000000
            if sack and nxt == self.snd_max:
                if rq.sacked or rq.lost or rq.retrans or flight < 0:  # else pipe == flight
                    flight = rq.pipe(flight)  # SACKed and lost data are not in flight
            elif self.sb.blocks and seq_lt(nxt, self.snd_max):
                # resending after a timeout: skip what the receiver holds (SACKed)
                self.snd_nxt, room = self.sb.skip(nxt, self.mss)
                nxt = self.snd_nxt
                flight = seq_sub(nxt, self.snd_una) - self.sb.sacked_below(nxt)
            off = (nxt - self.buf_seq) & MASK
            if off & _HALF:
                off -= 0x100000000
            unsent = buf.nbytes - off
            if unsent < 0:
                break  # FIN already sent
            wnd = self.snd_wnd
            cwnd = self.cc.cwnd
            usable = (cwnd if cwnd < wnd else wnd) - flight  # min(), max() below, inline
            n = room if room < unsent else unsent
            if usable < n:
                n = usable if usable > 0 else 0
            fin = self.fin_queued and n == unsent
            if (cork and 0 < n == unsent and n < self.seg_max and flight > 0 and not fin
                    and not self.nodelay):
                self.corked = True
                break
            if n > self.mss and n % self.mss and (n < unsent or (
                    not fin and not self.nodelay and flight > 0
                    and seq_gt(self.snd_sml, self.snd_una))):
                # a super-segment: whole segments; the short tail waits for more data, or (the
                # last of the data) for Nagle, as the short segment on its own would (Linux
                # ``tcp_mss_split_point``)
                n -= n % self.mss
            if n <= 0 and not fin:
                break
            if n < self.mss and n < unsent:
                # window-limited short segment: sender SWS avoidance
                if flight > 0 and n < self.max_snd_wnd // 2:
                    break
            elif (n == unsent and n < self.mss and not fin and not self.nodelay and flight > 0
                  and seq_gt(self.snd_sml, self.snd_una)):
                # Nagle (RFC 9293 §3.7.4) in Minshall's form, as Linux: a short segment waits
                # while an earlier short segment is unacknowledged
                break
            self._send(off, n, fin, now)
            sent = True
        return sent

    def _send(self, off: int, n: int, fin: bool, now: float) -> None:
        seq = (self.buf_seq + off) & MASK
        buf = self.buffer
        flags = ACK
        if n and off + n == buf.nbytes:
            flags |= PSH
        if fin:
            flags |= FIN
        retrans = 0 < (self.snd_max - seq) & MASK < _HALF  # seq_lt(seq, snd_max)
        self.emit(seq, flags, buf.pieces(off, n))
        end = (seq + n + (1 if fin else 0)) & MASK
        if self.sack_ok:
            self._note_sent(seq, end, now)
        self.snd_nxt = end
        if n % self.mss:
            self.snd_sml = end
        if 0 < (end - self.snd_max) & MASK < _HALF:  # seq_gt(end, snd_max)
            self.snd_max = end
        if retrans:
            self.retransmits += 1
        else:
            self.bytes_sent += n
            if self.rtt_seq is None and n:
                self.rtt_seq, self.rtt_time = seq, now

    def force_send(self, now: float, limit: int) -> None:
        """Send up to ``limit`` bytes at ``snd_nxt`` ignoring the windows (probe, RTO resend)."""
        off = seq_sub(self.snd_nxt, self.buf_seq)
        unsent = len(self.buffer) - off
        if unsent < 0:
            return
        n = min(unsent, limit)
        fin = self.fin_queued and n == unsent
        if n > 0 or fin:
            self._send(off, n, fin, now)

    def retransmit_first(self, now: float) -> None:
        """Resend the segment at ``snd_una`` (fast retransmit, NewReno partial ACK)."""
        off = seq_sub(self.snd_una, self.buf_seq)
        if off < 0:
            return
        sent_len = seq_sub(self.snd_max, self.snd_una)
        n = min(self.mss, len(self.buffer) - off, sent_len)
        fin = self.fin_queued and off + n == len(self.buffer) and seq_gt(
            self.snd_max, seq_add(self.buf_seq, len(self.buffer)))
        if n <= 0 and not fin:
            return
        flags = ACK | (FIN if fin else 0)
        self.emit(self.snd_una, flags, self.buffer.view(off, n))
        self.retransmits += 1
        self.rtt_seq = None  # Karn

    def resend(self, seq: int, n: int, now: float) -> int:
        """Resend up to ``n`` sequence units (<= MSS, a sent FIN included) of already-sent data
        from ``seq``; returns how many went out."""
        off = seq_sub(seq, self.buf_seq)
        if off < 0:
            return 0
        data = max(min(n, len(self.buffer) - off), 0)
        fin = data < n and self.fin_queued and off + data == len(self.buffer) and seq_gt(
            self.snd_max, seq_add(self.buf_seq, len(self.buffer)))
        if data <= 0 and not fin:
            return 0
        self.emit(seq, ACK | (FIN if fin else 0), self.buffer.view(off, data))
        self.retransmits += 1
        self.rtt_seq = None  # Karn
        end = seq_add(seq, data + (1 if fin else 0))
        if self.sack_ok:
            self._note_sent(seq, end, now)
        return seq_sub(end, seq)

    def send_new(self, n: int, now: float) -> bool:
        """Send ``n`` new bytes at ``snd_nxt`` regardless of cwnd (a loss probe)."""
        off = seq_sub(self.snd_nxt, self.buf_seq)
        unsent = len(self.buffer) - off
        n = min(n, unsent)
        if n <= 0:
            return False
        self._send(off, n, self.fin_queued and n == unsent, now)
        return True

    def go_back(self, keep_sack: bool = False) -> None:
        """After a retransmission timeout: resend from ``snd_una`` (RFC 6298 §5.4).

        With ``keep_sack`` the scoreboard survives, so the resend skips what the receiver
        already holds (as Linux does; RFC 6675 §5.1 keeps using the SACK information after a
        timeout).  A receiver may renege (RFC 2018 §8), so the caller clears it on the second
        consecutive timeout.
        """
        self.snd_nxt = self.snd_una if seq_ge(self.snd_una, self.buf_seq) else self.buf_seq
        self.rtt_seq = None  # Karn
        if not keep_sack:
            self.sb.clear()
        self.dupacks = 0
        self.in_recovery = False
        self.recover = self.snd_max

    # -- input ---------------------------------------------------------------------------------
    def update_window(self, seq: int, ack: int, raw_wnd: int) -> bool:
        """RFC 9293 §3.10.7.4 window update rule; True when SND.WND changed."""
        wl1 = self.snd_wl1
        if (0 < (seq - wl1) & MASK < _HALF  # seq_lt(wl1, seq), inline
                or (wl1 == seq and seq_le(self.snd_wl2, ack))):
            wnd = raw_wnd << self.snd_wscale
            changed = wnd != self.snd_wnd
            self.snd_wnd = wnd
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            self.snd_wl1, self.snd_wl2 = seq, ack
            return changed
        return False

    def on_ack(self, ack: int, now: float, ts_rtt: float | None, dup_candidate: bool,
               sack_blocks: tuple[tuple[int, int], ...] = ()) -> int:
        """Process an acceptable cumulative ACK; returns the number of sequence units acked."""
        una = self.snd_una
        acked = (ack - una) & MASK  # seq_sub(ack, una), inline
        if acked & _HALF:
            return 0
        if self.sack_ok:
            flight = (self.snd_max - una) & MASK  # max(seq_sub(snd_max, una), 0), inline
            if flight & _HALF:
                flight = 0
            rq = self.rq
            prev_flight = (flight if not (rq.sacked or rq.lost or rq.retrans)
                           else rq.pipe(flight))
            if acked > 0 and self.sb.blocks:  # (nothing to prune from an empty scoreboard)
                self.sb.prune(ack)
            if sack_blocks:
                self.sb.update(sack_blocks, ack, self.snd_max)
        else:
            prev_flight = seq_sub(self.snd_nxt, una)
            if acked == 0:
                if dup_candidate and self.outstanding():
                    self._dupack(now)
                return 0
        rtt: float | None = None
        if acked > 0:
            self.snd_una = ack
            # min(max(seq_sub(ack, buf_seq), 0), len(buffer)), inline
            buf = self.buffer
            drop = (ack - self.buf_seq) & MASK
            if drop & _HALF:
                drop = 0
            elif drop > buf.nbytes:
                drop = buf.nbytes
            if drop:
                buf.drop(drop)
                if self.account is not None:
                    self.account.add(-drop)
                self.buf_seq = (self.buf_seq + drop) & MASK
                self.bytes_acked += drop
            if 0 < (ack - self.snd_nxt) & MASK < _HALF:  # seq_lt(snd_nxt, ack), inline
                self.snd_nxt = ack
            self.retries = 0
            rtt = ts_rtt
            if rtt is None and self.rtt_seq is not None and seq_gt(ack, self.rtt_seq):
                rtt = now - self.rtt_time
                self.rtt_seq = None
            if rtt is not None:
                self.rtt.sample(rtt)
        if self.sack_ok:
            grow = self.sack_ack(ack, acked, sack_blocks, dup_candidate and self.outstanding(),
                                 now)
            if not grow or acked <= 0:
                return acked
        elif self.in_recovery:
            if seq_ge(ack, self.recover):
                self.in_recovery = False
                self.cc.on_recovery_exit(self.flight)
            else:
                self.cc.on_partial_ack(acked)
                self.retransmit_first(now)
            self.dupacks = 0
            return acked
        cc = self.cc
        # grow cwnd only while it limits us (RFC 7661 spirit; Linux tcp_is_cwnd_limited)
        if prev_flight + self.mss >= cc.cwnd or (
                cc.cwnd < cc.ssthresh and 2 * prev_flight >= cc.cwnd):
            cc.on_ack(acked, rtt, now)
        self.dupacks = 0
        return acked

    def _dupack(self, now: float) -> None:
        """A duplicate ACK on a connection without SACK (RFC 5681 §3.2, RFC 6582 §3.2)."""
        self.dupacks += 1
        if self.in_recovery:
            self.cc.on_dupack()
            self.output(now)
        elif self.dupacks < 3:
            # limited transmit (RFC 3042): a new segment for each of the first two dup ACKs
            saved = self.cc.cwnd
            self.cc.cwnd = seq_sub(self.snd_max, self.snd_una) + self.mss
            self.output(now)
            self.cc.cwnd = max(saved, 0)
        elif self.dupacks == 3 and seq_ge(self.snd_una, self.recover):
            # RFC 6582 §3.2 step 1-2: enter fast recovery unless this loss predates the last;
            # ``recover`` holds snd_max, one past RFC 6582's "highest sequence number sent",
            # so "the cumulative ACK covers more than recover" is snd_una >= recover
            self.recover = self.snd_max
            self.in_recovery = True
            self.cc.on_loss(self.flight)
            self.retransmit_first(now)
            self.output(now)


class Scoreboard:
    """SACKed sequence ranges above SND.UNA: sorted, disjoint ``(start, end)`` pairs."""

    __slots__ = ("blocks", "sacked")

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int]] = []
        self.sacked = 0

    def clear(self) -> None:
        self.blocks = []
        self.sacked = 0

    def prune(self, una: int) -> None:
        """Forget everything below the new cumulative ACK."""
        out = []
        for start, end in self.blocks:
            if seq_le(end, una):
                continue
            out.append((seq_max(start, una), end))
        self._set(out)

    def update(self, blocks: tuple[tuple[int, int], ...], una: int, snd_max: int) -> bool:
        """Merge reported blocks (invalid and D-SACK ones ignored); True if anything is new."""
        before = self.sacked
        cur = list(self.blocks)
        for left, right in blocks:
            if not (seq_lt(left, right) and seq_lt(una, right) and seq_le(right, snd_max)):
                continue  # below SND.UNA (D-SACK, RFC 2883) or beyond what was sent
            cur.append((seq_max(left, una), right))
        cur.sort(key=lambda b: seq_sub(b[0], una))
        merged: list[tuple[int, int]] = []
        for start, end in cur:
            if merged and seq_le(start, merged[-1][1]):
                if seq_gt(end, merged[-1][1]):
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        self._set(merged)
        return self.sacked > before

    def _set(self, blocks: list[tuple[int, int]]) -> None:
        self.blocks = blocks
        self.sacked = sum(seq_sub(e, s) for s, e in blocks)

    def skip(self, seq: int, limit: int) -> tuple[int, int]:
        """``seq`` moved past a SACKed block holding it, and how many bytes (at most
        ``limit``) may follow before the next SACKed block."""
        for start, end in self.blocks:
            if seq_lt(seq, start):
                return seq, min(limit, seq_sub(start, seq))
            if seq_lt(seq, end):
                seq = end
        return seq, limit

    def sacked_below(self, seq: int) -> int:
        n = 0
        for start, end in self.blocks:
            if seq_ge(start, seq):
                break
            n += seq_sub(end if seq_le(end, seq) else seq, start)
        return n

    def holes(self, una: int) -> list[tuple[int, int]]:
        """The unSACKed ranges between SND.UNA and the highest SACKed byte."""
        out = []
        cur = una
        for start, end in self.blocks:
            if seq_gt(start, cur):
                out.append((cur, start))
            if seq_gt(end, cur):
                cur = end
        return out
