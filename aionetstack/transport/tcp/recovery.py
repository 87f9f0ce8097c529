"""Loss recovery for SACK connections: RACK-TLP (RFC 8985), PRR (RFC 6937) and D-SACK undo.

``LossRecovery`` is the base of ``Sender`` and holds what a SACK connection adds to it: the
retransmission queue (``rtxqueue``) with per-transmission times, the RACK and TLP state, the
proportional rate reduction counters and the undo state.  The non-SACK path (NewReno, RFC 6582)
stays in ``sender``.

Loss detection (RFC 8985 §6.2). Every ACK feeds the entries it newly acknowledges (cumulatively or
selectively) to RACK: ``rack_order`` follows the most recently *sent* delivered entry (by
transmission number, ``rack_xmit`` its time), ``rack_rtt`` its RTT (a retransmitted entry whose RTT
is below ``min_rtt`` is skipped: the ACK may be for the original). An entry sent before that one
and not delivered is lost once ``rack_rtt + reo_wnd`` has passed since it was sent; an entry still
inside that allowance arms the reordering timer (``reo_at``). ``reo_wnd`` is 0 in recovery and once
``DUP_THRESH`` segments are SACKed while no reordering has been seen (§6.2 step 4), else
``min(reo_mult * min_rtt / 4, SRTT)``; ``reo_mult`` grows by one per round trip with D-SACKs and
falls back to 1 after 16 recoveries without (§6.2 step 3). The first loss so marked starts fast
recovery. A SACK connection whose peer sends three duplicate ACKs without SACK blocks falls back to
marking the first segment lost (RFC 5681 §3.2). ``min_rtt`` is the smallest RTT seen (no windowed
filter), at least the clock granularity (RFC 6298 G): a smaller value says nothing about
reordering.

Tail loss probe (RFC 8985 §7).  In the open state (no recovery, nothing SACKed, no probe out)
the probe timer is (re)armed after new data is sent and after an ACK of new data:
``PTO = 2 SRTT``, plus ``WC_DEL_ACK`` when only one segment is in flight, never later than the
RTO (§7.2).  When it fires, one new segment goes out if the peer's window allows, else the last
segment is sent again, regardless of cwnd (§7.3); its ACK either lets RACK find the loss, or,
for a retransmitted probe, says whether the probe repaired a loss (the ACK goes beyond it
without a D-SACK for it: cwnd is reduced once, §7.4) or nothing was lost (a D-SACK).

Recovery. In fast recovery the sender retransmits entries marked lost, lowest first, then new data,
while ``pipe`` (RFC 6675 §4, ``RtxQueue.pipe``) is below ``cwnd``; PRR (RFC 6937 §3, with the
slow-start reduction bound) sets ``cwnd = pipe + sndcnt`` on each ACK so that the window comes down
to ``ssthresh`` gradually and the fast retransmission always goes (``sndcnt`` is at least one SMSS
while nothing was sent yet). Recovery ends once the cumulative ACK reaches ``recover`` (SND.MAX at
entry), with the controller's ``on_recovery_exit(pipe)`` and then at least ``cwnd = ssthresh``
(RFC 6937 §3.1). A retransmission timeout marks every
entry not SACKed lost (§6.3) and resends them in order under slow start from one segment (RTO
recovery, until ``recover``); lost retransmissions are found by RACK there too. RFC 6675's rescue
retransmission is not needed: the probe covers the tail.

Undo (RFC 2883 §4 D-SACK, RFC 3708 §3 "Using D-SACK to detect spurious retransmissions"): each
recovery episode (fast or timeout) remembers the window before it and the ranges it retransmitted
(up to ``UNDO_RANGES``); a D-SACK covering one of them says the receiver had it already.  When
every retransmission of the episode comes back D-SACKed, nothing was lost and the window is
restored (as Linux ``tcp_try_undo_dsack``; a D-SACK for data never resent, a duplicate made by
the network, does not count).
"""

from __future__ import annotations

import math
from typing import Final

from aionetstack.stack.timers import Timer
from aionetstack.transport.tcp.congestion import CongestionControl
from aionetstack.transport.tcp.rtt import CLOCK_GRANULARITY, RttEstimator
from aionetstack.transport.tcp.rtxqueue import LOST, RETRANS, SACKED, Delivered, RtxQueue
from aionetstack.wire.seqnum import (
    _HALF,
    MASK,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
    seq_sub,
)

DUP_THRESH: Final = 3
WC_DEL_ACK: Final = 0.2  # RFC 8985 §7.2 WCDelAckT: the worst-case delayed-ACK time
REO_PERSIST: Final = 16
UNDO_RANGES: Final = 256  # retransmissions tracked per recovery episode for undo


def dsack_block(blocks: tuple[tuple[int, int], ...], ack: int) -> tuple[int, int] | None:
    """The D-SACK block of an ACK, if any (RFC 2883 §4: the first block is below the
    cumulative ACK, or lies inside the second block)."""
    if not blocks:
        return None
    left, right = blocks[0]
    if not seq_lt(left, right):
        return None
    if seq_le(right, ack):
        return left, right
    if len(blocks) > 1:
        l2, r2 = blocks[1]
        if seq_le(l2, left) and seq_le(right, r2):
            return left, right
    return None


class LossRecovery:
    __slots__ = (
        "dsack_round", "dupacks", "in_recovery", "loss_timer", "min_rtt", "prior_cwnd",
        "prior_ssthresh", "prr_delivered", "prr_out", "pto_at", "rack_end", "rack_fack",
        "rack_order", "rack_rtt", "rack_xmit", "recover", "recover_fs", "reo_at", "reo_mult",
        "reo_persist", "reord", "rq", "rto_recovery", "tlp_end", "tlp_retrans", "undo_marker",
        "undo_ranges",
    )

    # the sender's state (``Sender`` slots)
    snd_una: int
    snd_nxt: int
    snd_max: int
    snd_wnd: int
    mss: int
    cc: CongestionControl
    rtt: RttEstimator
    sack_ok: bool
    dupacks: int
    in_recovery: bool
    recover: int

    def _init_recovery(self, una: int) -> None:
        self.rq = RtxQueue()
        self.rack_xmit: float | None = None
        self.rack_order = 0
        self.rack_end = una
        self.rack_rtt = 0.0
        self.rack_fack = una
        self.min_rtt = math.inf
        self.reord = False
        self.reo_mult = 1
        self.reo_persist = REO_PERSIST
        self.dsack_round: int | None = None
        self.reo_at: float | None = None
        self.pto_at: float | None = None
        self.tlp_end: int | None = None
        self.tlp_retrans = False
        self.prr_delivered = self.prr_out = self.recover_fs = 0
        self.rto_recovery = False
        self.undo_marker: int | None = None
        self.undo_ranges: list[tuple[int, int]] = []
        self.prior_cwnd = self.prior_ssthresh = 0
        self.loss_timer: Timer | None = None  # RACK reordering timer / probe timer (endpoint's)

    # provided by Sender
    def output(self, now: float) -> bool:
        raise NotImplementedError

    def resend(self, seq: int, n: int, now: float) -> int:
        raise NotImplementedError

    def unsent(self) -> int:
        raise NotImplementedError

    def send_new(self, n: int, now: float) -> bool:
        raise NotImplementedError

    # -- bookkeeping of what is sent -------------------------------------------------------------
    def _note_sent(self, seq: int, end: int, now: float) -> None:
        """``[seq, end)`` went out (new data, a retransmission, or both)."""
        snd_max = self.snd_max
        if 0 < (snd_max - seq) & MASK < _HALF:  # seq_lt(seq, snd_max), inline
            top = seq_min(end, snd_max)
            self.rq.resent(seq, top, now)
            if self.undo_marker is not None:
                if len(self.undo_ranges) < UNDO_RANGES:
                    self.undo_ranges.append((seq, top))
                else:
                    self.undo_marker = None  # too many to account for: no undo this time
        if 0 < (end - snd_max) & MASK < _HALF:  # seq_gt(end, snd_max)
            # seq_max(seq, snd_max), inline
            self.rq.sent(snd_max if 0 < (snd_max - seq) & MASK < _HALF else seq, end, now)
        if self.in_recovery:
            self.prr_out += seq_sub(end, seq)

    def pipe(self) -> int:
        return self.rq.pipe(seq_sub(self.snd_max, self.snd_una))

    # -- ACK processing -------------------------------------------------------------------------
    def sack_ack(self, ack: int, acked: int, blocks: tuple[tuple[int, int], ...], dup: bool,
                 now: float) -> bool:
        """Loss detection and recovery state for an acceptable ACK (``snd_una`` already moved
        to ``ack``); returns True when cwnd may grow (open state or RTO recovery)."""
        rq = self.rq
        sacked_before = rq.sacked
        dsack = dsack_block(blocks, ack) if blocks else None
        done: list[Delivered] = []
        if acked > 0:
            done = rq.ack(ack)
        for i, (left, right) in enumerate(blocks):
            if i == 0 and dsack is not None:
                continue
            left, right = seq_max(left, ack), seq_min(right, self.snd_max)
            if seq_lt(left, right):
                done += rq.sack(left, right)
        delivered = acked + rq.sacked - sacked_before  # RFC 6937 DeliveredData
        if acked == 0 and (dup or delivered > 0):
            self.dupacks += 1
        elif acked > 0:
            self.dupacks = 0
        if done:
            self._rack_update(done, now)
        if dsack is not None or self.dsack_round is not None:  # (else nothing to update)
            self._reo_wnd_update(dsack is not None)
        if dsack is not None:
            self._undo_dsack(dsack)
        if self.tlp_end is not None:  # (else no probe to account for)
            self._tlp_ack(ack, dsack, bool(blocks))
        if self.rack_xmit is not None and (rq.sacked or rq.lost or self.in_recovery
                                           or self.rto_recovery):
            self.rack_detect(now)
        elif (acked == 0 and dup and not blocks and self.dupacks == DUP_THRESH and rq.segs
              and not self.in_recovery):
            rq.mark_lost(rq.segs[0])  # a peer that sends no SACK blocks (RFC 5681 §3.2)
        if self.in_recovery and seq_ge(ack, self.recover):
            self._exit_recovery()
        if self.rto_recovery and seq_ge(ack, self.recover):
            self.rto_recovery = False
            self._reo_persist_tick()
        if rq.lost and not self.in_recovery and not self.rto_recovery:
            self._enter_recovery()
        if self.in_recovery:
            self._prr(delivered)
            return False
        return True

    def _rack_update(self, done: list[Delivered], now: float) -> None:
        """RFC 8985 §6.2 steps 1-2 for the entries this ACK delivered: step 1 in the order they
        were sent, step 2 in sequence order."""
        if len(done) == 1:  # the usual case: one segment delivered, nothing to sort
            d = done[0]
            self._rack_sent(d, now)
            self._rack_fack_update(d)
            return
        una = self.snd_una
        for d in sorted(done, key=lambda d: (d[0], seq_sub(d[2], una))):
            self._rack_sent(d, now)
        for d in sorted(done, key=lambda d: seq_sub(d[2], una)):
            self._rack_fack_update(d)

    def _rack_sent(self, d: Delivered, now: float) -> None:
        """§6.2 step 1: RACK.min_RTT, RACK.rtt and the most recently sent delivered entry."""
        order, xmit, end, retrans = d
        rtt = now - xmit
        if retrans and rtt < self.min_rtt:
            return  # the ACK may be for the original transmission
        if not retrans:
            m = self.min_rtt
            if rtt < m:
                m = rtt
            self.min_rtt = m if m > CLOCK_GRANULARITY else CLOCK_GRANULARITY
        self.rack_rtt = rtt
        if self.rack_xmit is None or order > self.rack_order or (
                order == self.rack_order
                and 0 < (end - self.rack_end) & MASK < _HALF):  # RACK_sent_after, seq_gt inline
            self.rack_xmit, self.rack_order, self.rack_end = xmit, order, end

    def _rack_fack_update(self, d: Delivered) -> None:
        """§6.2 step 2: RACK.fack, and reordering seen when an entry below it is delivered."""
        end = d[2]
        dist = (end - self.rack_fack) & MASK
        if 0 < dist < _HALF:  # seq_gt(end, rack_fack), inline
            self.rack_fack = end
        elif dist > _HALF and not d[3]:  # seq_lt(end, rack_fack), not retransmitted
            self.reord = True

    def _reo_wnd_update(self, dsack: bool) -> None:
        """RFC 8985 §6.2 step 3: widen the reordering window after D-SACKs, one step per
        round trip."""
        if self.dsack_round is not None and seq_ge(self.snd_una, self.dsack_round):
            self.dsack_round = None
        if self.dsack_round is None and dsack:
            self.dsack_round = self.snd_max
            self.reo_mult += 1
            self.reo_persist = REO_PERSIST

    def _reo_persist_tick(self) -> None:
        self.reo_persist -= 1
        if self.reo_persist <= 0:
            self.reo_mult = 1

    def reo_wnd(self) -> float:
        """RFC 8985 §6.2 step 4."""
        if not self.reord and (self.in_recovery or self.rto_recovery
                               or self.rq.sacked >= DUP_THRESH * self.mss):
            return 0.0
        srtt = self.rtt.srtt or 0.0
        min_rtt = self.min_rtt if self.min_rtt != math.inf else srtt
        return min(self.reo_mult * min_rtt / 4, srtt)

    def rack_detect(self, now: float) -> bool:
        """RFC 8985 §6.2 step 5: mark lost what was sent before the most recently sent
        delivered entry and is overdue; arm the reordering timer for the rest.  True if
        anything was newly marked lost."""
        rx = self.rack_xmit
        self.reo_at = None
        if rx is None:
            return False
        rq = self.rq
        allowance = self.rack_rtt + self.reo_wnd()
        ro, re = self.rack_order, self.rack_end
        timeout = 0.0
        marked = False
        for s in rq.segs:
            f = s.flags
            if f & SACKED or f & (LOST | RETRANS) == LOST:
                continue
            # sent before the most recently sent delivered entry (RACK_sent_after; one entry
            # is sent at once, its bytes in sequence order)
            if s.order < ro or (s.order == ro and seq_lt(s.end, re)):
                remaining = s.xmit + allowance - now
                if remaining <= 1e-9:
                    rq.mark_lost(s)
                    marked = True
                else:
                    timeout = max(timeout, remaining)
        if timeout > 0:
            self.reo_at = now + timeout
        return marked

    def on_reo_timeout(self, now: float) -> None:
        """The RACK reordering timer fired (RFC 8985 §6.2 step 5, ``RACK_detect_loss_and_
        arm_timer``): mark what is now overdue, start recovery if needed, send."""
        self.reo_at = None
        if self.rack_detect(now) and not self.in_recovery and not self.rto_recovery:
            self._enter_recovery()
            self._prr(0)
        self.output(now)

    # -- fast recovery (RFC 6675 + PRR, RFC 6937) -----------------------------------------------
    def _enter_recovery(self) -> None:
        flight = seq_sub(self.snd_max, self.snd_una)
        self.in_recovery = True
        self.recover = self.snd_max
        self._undo_arm()
        self.cc.on_loss(flight)
        self.prr_delivered = self.prr_out = 0
        self.recover_fs = max(flight, 1)  # RFC 6937: RecoverFS = snd.nxt - snd.una
        self.pto_at = None

    def _prr(self, delivered: int) -> None:
        """RFC 6937 §3: how much may be sent for this ACK; sets ``cwnd = pipe + sndcnt``."""
        self.prr_delivered += delivered
        cc = self.cc
        pipe = self.pipe()
        ssthresh = cc.ssthresh
        if pipe > ssthresh:  # proportional rate reduction
            sndcnt = -(-self.prr_delivered * ssthresh // self.recover_fs) - self.prr_out
        else:  # slow-start reduction bound
            limit = max(self.prr_delivered - self.prr_out, delivered) + self.mss
            sndcnt = min(ssthresh - pipe, limit)
        sndcnt = max(sndcnt, 0)
        if self.prr_out == 0 and sndcnt < self.mss:
            sndcnt = self.mss  # the fast retransmission always goes (RFC 6937 §3, RFC 6675 §5)
        cc.cwnd = pipe + sndcnt

    def _exit_recovery(self) -> None:
        self.in_recovery = False
        # the controller's hook sees the end of recovery, but with PRR the window ends at
        # ssthresh (RFC 6937 §3.1 "cwnd = ssthresh"), not RFC 6582's flight + SMSS
        cc = self.cc
        cc.on_recovery_exit(self.pipe())
        cc.cwnd = max(cc.cwnd, cc.ssthresh, 2 * self.mss)
        self._reo_persist_tick()

    def retransmit_lost(self, now: float) -> bool:
        """Resend entries marked lost, lowest first, while ``pipe < cwnd`` (RFC 6675 §5
        step (C), NextSeg rule 1).  True if anything was sent."""
        rq = self.rq
        if not rq.lost:
            return False
        sent = False
        cwnd = self.cc.cwnd
        flight = seq_sub(self.snd_max, self.snd_una)
        segs = rq.segs
        i = 0
        while i < len(segs) and rq.pipe(flight) < cwnd:
            s = segs[i]
            if s.flags & (LOST | RETRANS) == LOST:
                if not self.resend(s.start, min(len(s), self.mss), now):
                    break
                sent = True
            i += 1
        return sent

    # -- retransmission timeout ------------------------------------------------------------------
    def rto_sack(self, now: float, renege: bool) -> None:
        """RFC 8985 §6.3, RFC 6298 §5.4-5.6 for a SACK connection: everything not SACKed is lost
        (``renege``: SACKed data too, RFC 2018 §8), cwnd drops to one segment, and the lost
        data goes out again in order under slow start."""
        cc = self.cc
        if not self.rto_recovery:
            if not self.in_recovery:
                self._undo_arm()
            cc.on_rto(seq_sub(self.snd_max, self.snd_una))
            self.rto_recovery = True
        else:
            # RFC 5681 §3.1: further timeouts of the same data hold ssthresh
            cc.cwnd = self.mss
        self.in_recovery = False
        self.recover = self.snd_max
        self.rq.mark_all_lost(renege)
        self.dupacks = 0
        self.tlp_end = None
        self.reo_at = self.pto_at = None
        if not self.retransmit_lost(now) and self.rq.segs:
            s = self.rq.segs[0]
            self.resend(s.start, min(len(s), self.mss), now)

    # -- tail loss probe (RFC 8985 §7) -----------------------------------------------------------
    def schedule_pto(self, now: float, rto_at: float | None) -> None:
        """RFC 8985 §7.2: (re)arm the probe timer, in the open state only."""
        self.pto_at = None
        if (not self.sack_ok or self.in_recovery or self.rto_recovery or self.tlp_end is not None
                or self.snd_una == self.snd_max or self.rq.sacked or self.reo_at is not None
                or not self.snd_wnd):
            return  # (a closed window is the persist timer's business, RFC 9293 §3.8.6.1)
        srtt = self.rtt.srtt
        if srtt is None:
            pto = 1.0
        else:
            pto = 2 * srtt
            if (self.snd_max - self.snd_una) & MASK <= self.mss:  # (snd_una != snd_max here)
                pto += WC_DEL_ACK
        at = now + pto
        self.pto_at = at if rto_at is None or at < rto_at else rto_at

    def send_probe(self, now: float) -> bool:
        """RFC 8985 §7.3: one new segment if the peer's window allows, else the last segment
        again; True if a probe went out."""
        self.pto_at = None
        if self.tlp_end is not None or self.snd_una == self.snd_max or not self.rq.segs:
            return False
        unsent = self.unsent()
        n = min(unsent, self.mss)
        if (unsent > 0 and self.snd_nxt == self.snd_max
                and seq_sub(self.snd_nxt, self.snd_una) + n <= self.snd_wnd
                and self.send_new(n, now)):
            self.tlp_retrans = False
        else:
            last = self.rq.segs[-1]
            start = last.start if len(last) <= self.mss else (last.end - self.mss) & 0xFFFFFFFF
            if not self.resend(start, seq_sub(last.end, start), now):
                return False
            self.tlp_retrans = True
        self.tlp_end = self.snd_max
        return True

    def _tlp_ack(self, ack: int, dsack: tuple[int, int] | None, has_sack: bool) -> None:
        """RFC 8985 §7.4.2: did the probe repair a loss?"""
        end = self.tlp_end
        if end is None or not seq_ge(ack, end):
            return
        if not self.tlp_retrans:
            self.tlp_end = None  # a probe of new data: RACK sees any loss
        elif dsack is not None and seq_le(dsack[1], end) and seq_gt(dsack[1], end - self.mss):
            self.tlp_end = None  # the probe was a duplicate: nothing was lost
        elif seq_gt(ack, end) or not has_sack:
            self.tlp_end = None  # the probe repaired a loss: respond to it once
            if not self.in_recovery and not self.rto_recovery:
                self.cc.on_loss(seq_sub(self.snd_max, self.snd_una))
                self.cc.cwnd = max(self.cc.ssthresh, 2 * self.mss)

    # -- undo (RFC 3708 §3 with D-SACK, RFC 2883) ------------------------------------------------
    def _undo_arm(self) -> None:
        self.undo_marker = self.snd_una
        self.undo_ranges = []
        self.prior_cwnd = self.cc.cwnd
        self.prior_ssthresh = self.cc.ssthresh

    def _undo_dsack(self, dsack: tuple[int, int]) -> None:
        """A D-SACK: the retransmissions it covers were not needed; once none is left, undo."""
        if self.undo_marker is None or not self.undo_ranges:
            return
        left, right = dsack
        keep = []
        for start, end in self.undo_ranges:
            if seq_le(left, start) and seq_le(end, right):
                continue  # this retransmission arrived as a duplicate
            keep.append((start, end))
        if len(keep) == len(self.undo_ranges):
            return  # a duplicate of something not resent (the network duplicated it)
        self.undo_ranges = keep
        if keep:
            return
        # every retransmission of the episode reached a receiver that already had the data
        cc = self.cc
        cc.cwnd = max(cc.cwnd, self.prior_cwnd)
        cc.ssthresh = max(cc.ssthresh, self.prior_ssthresh)
        self.undo_marker = None
