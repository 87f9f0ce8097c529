"""TCP segment arrival (RFC 9293 §3.10.7): SYN-SENT processing, then the checks and steps
for the synchronized states (PAWS, acceptability, RST, SYN, ACK, text, FIN)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from aionetstack.errors import (
    ConnectionRefused,
    ConnectionReset,
)
from aionetstack.stack.waiter import EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp.state import (
    CAN_RECEIVE,
    CAN_SEND,
)
from aionetstack.wire.seqnum import MASK, seq_add, seq_ge, seq_gt, seq_le, seq_lt
from aionetstack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader

if TYPE_CHECKING:
    from aionetstack.transport.tcp.endpoint import TcpEndpoint

from aionetstack.transport.tcp.core import _HALF, S
from aionetstack.transport.tcp.timeouts import EndpointTimers


@mypyc_attr(allow_interpreted_subclasses=True)  # applications subclass TcpEndpoint
class SegmentInput(EndpointTimers):
    __slots__ = ()

    # -- segment arrival (RFC 9293 §3.10.7) -------------------------------------------------------
    def segment_arrived(self, h: TcpHeader) -> None:
        now = self.stack.now()
        st = self._state
        if st is S.SYN_SENT:
            self._syn_sent_input(h, now)
        elif st is not S.CLOSED and st is not S.LISTEN:
            self._last_rx = now
            self._ka_probes = 0
            self._input(h, now)
            if self._state is S.TIME_WAIT and self.user_closed:
                # nobody will read or write any more: a compact record answers for 2*MSL
                self.proto.time_wait.take_over(cast("TcpEndpoint", self),
                                               now + 2 * self.proto.msl)

    def _syn_sent_input(self, h: TcpHeader, now: float) -> None:
        flags = h.flags
        snd = self.snd
        if flags & ACK and (seq_le(h.ack, snd.iss) or seq_gt(h.ack, snd.snd_max)):
            if not flags & RST:
                self._emit(h.ack, RST)
            return
        if flags & RST:
            if flags & ACK:
                self._fail(ConnectionRefused("connection refused"))
            return
        if not flags & SYN:
            return
        self.rcv.start(h.seq)
        self.last_ack_sent = h.seq  # nothing of the peer's acknowledged yet
        self._negotiate(h.options)
        if flags & ACK:
            snd.snd_una = h.ack
            snd.snd_wnd = snd.max_snd_wnd = h.window
            snd.snd_wl1, snd.snd_wl2 = h.seq, h.ack
            self._established(now)
            if self._state is S.CLOSED:
                return
            if (h.payload or flags & FIN) and not self._text(
                    seq_add(h.seq, 1), h.payload, bool(flags & FIN), now):
                return
            self._output(now)
            if self._ack_now:
                self._send_ack()
            elif self.last_ack_sent != self.rcv.rcv_nxt:
                # unless data (or a FIN queued in SYN-SENT) carried it, the handshake's ACK
                # (RFC 9293 §3.10.7.3) goes at the end of this turn: a request the application
                # writes as soon as connect returns carries it (Linux delays it likewise when a
                # write is pending)
                self._ack_soon()
        else:
            snd.snd_wnd = snd.max_snd_wnd = h.window
            snd.snd_wl1, snd.snd_wl2 = h.seq, snd.iss
            self._set_state(S.SYN_RECEIVED)
            self._send_syn(ack=True)

    def _text(self, seq: int, payload: memoryview, fin: bool, now: float) -> bool:
        """Steps 7 and 8 of RFC 9293 §3.10.7.4; False if the connection went away."""
        rcv, st = self.rcv, self._state
        if payload and self.user_closed and seq_gt(seq_add(seq, len(payload)), rcv.rcv_nxt):
            # data for an endpoint the user closed: nobody will read it (RFC 9293 §3.10.4)
            self.abort()
            return False
        before = rcv.fin_received
        delivered, out_of_order = rcv.on_data(seq, payload, fin)
        if delivered:
            self.proto.stats["bytes-received"] += delivered
            self.waiter.notify(EVENT_IN)
            if self._state is S.CLOSED:
                return False  # a waiter callback aborted us
            st = self._state  # ... or shut down writing
        if out_of_order or (payload and not delivered):
            self._ack_now = True
        elif payload:
            self._ack_bytes += len(payload)
            if self._ack_bytes > rcv.mss:
                # more than one full segment unacknowledged: ACK (RFC 9293 §3.8.6.3 "at least
                # every second full-sized segment"; Linux __tcp_ack_snd_check) at the end of
                # this turn, so that the rest of a batch read from the link shares the ACK, as
                # a GRO super-segment shares one in Linux; no time passes
                self._ack_soon()
        if rcv.fin_received and not before:
            if st is S.ESTABLISHED:
                self._set_state(S.CLOSE_WAIT)
                # ACK the FIN at the end of this turn: an application that closes (or answers)
                # at once sends its FIN (or data) with the ACK (Linux: delayed in pingpong mode)
                self._ack_soon()
            else:
                self._ack_now = True
                if st is S.FIN_WAIT_1:
                    if self.snd.fin_acked():
                        self._enter_time_wait(now)
                    else:
                        self._set_state(S.CLOSING)
                elif st is S.FIN_WAIT_2:
                    self._linger_timer.cancel()
                    self._enter_time_wait(now)
            self.waiter.notify(EVENT_IN)
        return True

    def _input(self, h: TcpHeader, now: float) -> None:
        flags = h.flags
        seq = h.seq
        rcv, snd = self.rcv, self.snd
        st = self._state
        if flags & SYN and st is S.SYN_RECEIVED and seq == rcv.irs:
            if not flags & ACK:
                if not flags & RST:  # the peer retransmitted its SYN: repeat our SYN-ACK
                    self._send_syn(ack=True)
                return
            seq = seq_add(seq, 1)  # simultaneous open: the SYN of a SYN-ACK is old news
            flags &= ~SYN
        payload = h.payload
        seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        ts = h.options.timestamp if self.ts_enabled else None
        # PAWS (RFC 7323 §5.3)
        if ts is not None and not flags & RST and 0 < (self.ts_recent - ts[0]) & MASK < _HALF:
            # seq_lt(TSval, TS.Recent)
            self.proto.stats.drop("paws")
            self._send_ack()
            return
        # 1. sequence number check
        if not rcv.acceptable(seq, seg_len):
            if payload:
                rcv.duplicate(seq, len(payload))  # reported in a D-SACK block (RFC 2883)
            if not flags & RST:
                if st is S.TIME_WAIT and flags & FIN:
                    self._linger_timer.schedule(now + 2 * self.proto.msl)
                self._send_ack()
            return
        # 2. RST (RFC 5961 §3.2)
        if flags & RST:
            if seq == rcv.rcv_nxt:
                if st is S.SYN_RECEIVED and self.parent is not None:
                    self.user_closed = True
                    self._finish()
                elif st is S.SYN_RECEIVED:
                    self._fail(ConnectionRefused("connection refused"))
                elif st in (S.CLOSING, S.LAST_ACK, S.TIME_WAIT):
                    self._finish()
                else:
                    self._fail(ConnectionReset("connection reset by peer"))
            else:
                self._challenge_ack()
            return
        # 4. SYN in a synchronized state (RFC 5961 §4.2)
        if flags & SYN:
            self._challenge_ack()
            return
        # 5. ACK
        if not flags & ACK:
            return
        ack = h.ack
        if st is S.SYN_RECEIVED:
            if seq_lt(snd.snd_una, ack) and seq_le(ack, snd.snd_max):
                snd.snd_una = ack
                snd.snd_wnd = h.window << snd.snd_wscale
                snd.max_snd_wnd = max(snd.max_snd_wnd, snd.snd_wnd)
                snd.snd_wl1, snd.snd_wl2 = seq, ack
                self._established(now)
                st = self._state
                if st is S.CLOSED:
                    return
            else:
                self._emit(ack, RST)
                return
        if 0 < (ack - snd.snd_max) & MASK < _HALF:  # RFC 5961 §5.2: ACK of unsent data
            self._challenge_ack()
            return
        wnd = snd.max_snd_wnd
        if 0 < (snd.snd_una - (wnd if wnd > 1 else 1) - ack) & MASK < _HALF:
            self._challenge_ack()  # RFC 5961 §5.2: too old an ACK
            return
        if ts is not None and (self.last_ack_sent - seq) & MASK < _HALF:  # seq =< last ACK
            self.ts_recent = ts[0]  # RFC 7323 §4.3
        ts_rtt: float | None = None
        if (ts is not None and ts[1] and 0 < (ack - snd.snd_una) & MASK < _HALF and (
                self._rexmit_ts is None or seq_ge(ts[1], self._rexmit_ts))):
            # an echo older than our latest retransmission is ambiguous (Karn, RFC 6298 §3)
            d = (int(now * 1000) + self.ts_offset - ts[1]) & MASK  # _tsval(now) - TSecr
            if d < 0x80000000:
                ts_rtt = d / 1000.0
        changed = snd.update_window(seq, ack, h.window)
        if snd.snd_wnd:
            self._zwp_since = None
        dup = not payload and not flags & FIN and not changed
        acked = snd.on_ack(ack, now, ts_rtt, dup, h.options.sack_blocks)
        if acked:
            if snd.snd_una != snd.snd_max:  # outstanding()
                self._rto_timer.schedule(now + self.rtt.timeout())
            else:
                self._rto_timer.cancel()
        self._arm_loss_timer(now, acked > 0)
        if acked:
            if (snd.space() > 0 if snd.fin_queued else st in CAN_SEND and snd.writable()):
                # after shutdown_write() too: a caller waiting for the send buffer to drain
                # learns of each ACK (Linux keeps the socket writable after SEND_SHUTDOWN)
                self.waiter.notify(EVENT_OUT)
                if self._state is S.CLOSED:
                    return  # a waiter callback aborted us
                st = self._state  # ... or shut down writing
        elif snd.snd_wnd == 0:
            snd.retries = 0  # the peer answers our probes: a closed window is no failure
        fin_wait_2 = False
        if snd.fin_acked():
            if st is S.FIN_WAIT_1:
                self._set_state(S.FIN_WAIT_2)
                self._rto_timer.cancel()
                fin_wait_2 = self.user_closed  # the FIN-WAIT-2 timeout, unless the peer's FIN
            elif st is S.CLOSING:  # on this very segment ends FIN-WAIT-2 at once (below)
                self._enter_time_wait(now)
            elif st is S.LAST_ACK:
                self._finish()
                return
        st = self._state
        # 7. segment text, 8. FIN
        if ((payload or flags & FIN) and self._state in CAN_RECEIVE
                and not self._text(seq, payload, bool(flags & FIN), now)):
            return
        if self._state is S.CLOSED:
            return  # a waiter callback closed or aborted us while we were notifying
        if fin_wait_2 and self._state is S.FIN_WAIT_2 and self._linger_timer.deadline is None:
            self._linger_timer.schedule(now + self.proto.fin_timeout)
        self._output(now, cork=True)
        if self._ack_now:
            self._send_ack()
        elif self._ack_bytes and not self._delack_timer.armed:
            self._delack_timer.schedule(now + self.proto.delack)

