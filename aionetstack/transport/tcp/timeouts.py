"""TCP endpoint timers and errors from below.

Retransmission timeout (SYN and data, with the retry limits and the user timeout; zero-window
probes while the peer's window is closed, RFC 9293 §3.8.6.1), delayed ACK, keep-alive
(RFC 9293 §3.8.4), the linger timer (TIME-WAIT and the FIN-WAIT-2 timeout), ICMP errors and path
MTU changes (RFC 1122 §4.2.3.9, RFC 1191, RFC 5927).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from aionetstack.errors import (
    NetstackError,
    TimedOut,
)
from aionetstack.network.packet import IcmpError
from aionetstack.stack.routing import find_route
from aionetstack.transport.tcp.state import (
    SYNCHRONIZED,
)
from aionetstack.wire.seqnum import MASK, seq_le, seq_lt, seq_sub
from aionetstack.wire.tcp import ACK

if TYPE_CHECKING:
    pass

from aionetstack.transport.tcp.core import _OUTPUT_STATES, EndpointCore, S


@mypyc_attr(allow_interpreted_subclasses=True)  # applications subclass TcpEndpoint
class EndpointTimers(EndpointCore):
    __slots__ = ()

    # -- timers -----------------------------------------------------------------------------------
    def _on_rto(self, now: float) -> None:
        st = self._state
        snd = self.snd
        if st is S.SYN_SENT or st is S.SYN_RECEIVED:
            snd.retries += 1
            limit = self.proto.syn_retries if st is S.SYN_SENT else self.proto.synack_retries
            if snd.retries > limit:
                self._fail(self.soft_error or TimedOut("connection attempt timed out"))
                return
            self.rtt.on_expiry()
            snd.retransmits += 1
            self._send_syn(ack=st is S.SYN_RECEIVED)
            self._rto_timer.schedule(now + self.rtt.timeout())
            return
        if st not in _OUTPUT_STATES:
            return
        zero = snd.snd_wnd == 0
        if not snd.outstanding() and snd.unsent() <= 0:
            return
        if (not zero and snd.pto_at is not None and snd.pto_at <= now + 1e-9
                and snd.send_probe(now)):
            # the probe was due with the timeout (the PTO never goes past the RTO, RFC 8985
            # §7.2): it takes the timeout's place, as Linux's one timer does, and re-arms it
            self.proto.stats["loss-probes"] += 1
            self._rto_timer.schedule(now + self.rtt.timeout())
            self._arm_loss_timer(now, False)
            return
        if snd.retries == 0:
            self._rto_since = now
        if zero and self._zwp_since is None:
            self._zwp_since = now
        snd.retries += 1
        self.proto.stats["timeouts"] += 1
        ut = self.user_timeout
        # the user timeout also bounds a window held at zero by a peer that answers every
        # probe (answered probes reset ``retries``), as Linux's TCP_USER_TIMEOUT does
        if snd.retries > self.proto.data_retries or (ut is not None and (
                now - self._rto_since >= ut
                or (zero and self._zwp_since is not None and now - self._zwp_since >= ut))):
            self._fail(self.soft_error or TimedOut("connection timed out"))
            return
        self.rtt.on_expiry()
        if zero:
            # persist: a zero-window probe that uses no sequence space (an old ACK, as Linux
            # sends); the peer answers with its current window (RFC 9293 §3.8.6.1)
            snd.go_back()
            self._emit(seq_sub(snd.snd_una, 1) & MASK, ACK)
        elif snd.sack_ok:
            snd.rto_sack(now, renege=snd.retries >= 2)
            self._arm_loss_timer(now, False)
        else:
            snd.cc.on_rto(snd.flight)
            snd.go_back(keep_sack=snd.retries < 2)
            if not snd.output(now):
                snd.force_send(now, snd.mss)
        self._rto_timer.schedule(now + self.rtt.timeout())

    def _arm_loss_timer(self, now: float, restart_pto: bool) -> None:
        """Arm the RACK reordering timer or (re)arm the tail loss probe (RFC 8985 §6.2, §7.2);
        a SACK connection's second retransmission timer, made on first use."""
        snd = self.snd
        if not snd.sack_ok:
            return
        if restart_pto:
            snd.schedule_pto(now, self._rto_timer.deadline)
        at = snd.reo_at if snd.reo_at is not None else snd.pto_at
        t = snd.loss_timer
        if at is None:
            if t is not None:
                t.cancel()
            return
        if t is None:
            t = snd.loss_timer = self.stack.timers.timer(self._on_loss_timer)
        t.schedule(at)

    def _on_loss_timer(self, now: float) -> None:
        snd = self.snd
        if self._state not in _OUTPUT_STATES:
            return
        if snd.reo_at is not None and now >= snd.reo_at - 1e-9:
            snd.on_reo_timeout(now)
        elif snd.pto_at is not None and now >= snd.pto_at - 1e-9 and snd.send_probe(now):
            self.proto.stats["loss-probes"] += 1
            self._rto_timer.schedule(now + self.rtt.timeout())  # RFC 8985 §7.3: re-arm the RTO
        self._arm_loss_timer(now, False)

    def _on_delack(self, now: float) -> None:
        if self._state not in SYNCHRONIZED or self._state is S.TIME_WAIT:
            return
        if self._corked:  # the end of the turn: send what output() held back
            self._corked = False
            if self._output(now):
                return  # the data carried the ACK
            rcv = self.rcv
            if not (self._ack_bytes or self.last_ack_sent != rcv.rcv_nxt or (
                    rcv.rcv_wnd < rcv.max_window() // 2 and rcv.window_increase() > 0)):
                return  # the timer was armed for the held data alone: no ACK is owed
        self._send_ack()

    def _on_keepalive(self, now: float) -> None:
        if not self._keepalive or self._state not in (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_2):
            return
        snd = self.snd
        if snd.outstanding() or snd.unsent() > 0:
            self._keepalive_timer().schedule(now + self.keepidle)  # the RTO watches this one
            return
        if self._ka_probes == 0 and now - self._last_rx < self.keepidle:
            self._keepalive_timer().schedule(self._last_rx + self.keepidle)
            return
        if self._ka_probes >= self.keepcnt:
            self._fail(TimedOut("keep-alive: the peer stopped answering"))
            return
        self._ka_probes += 1
        self._emit((snd.snd_una - 1) & MASK, ACK)  # RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1
        self._keepalive_timer().schedule(now + self.keepintvl)

    def _on_linger(self, now: float) -> None:
        if self._state is S.TIME_WAIT or self._state is S.FIN_WAIT_2:
            self._finish()

    # -- errors from below ------------------------------------------------------------------------
    def icmp_error(self, err: IcmpError) -> None:
        """RFC 1122 §4.2.3.9 (hard errors abort a connect), RFC 1191/8201 + RFC 5927 (PMTU)."""
        snd = self.snd
        if len(err.l4) >= 8:
            seq = int.from_bytes(err.l4[4:8], "big")
            if not (seq_le(snd.snd_una, seq) and seq_lt(seq, snd.snd_max)):
                self.proto.stats.drop("icmp-stale-seq")  # RFC 5927 §4.1: not in flight
                return
        if err.kind == "frag-needed":
            self._path_mtu_changed()
        elif self._state is S.SYN_SENT and err.hard:
            self._fail(err.exception())
        else:
            self.soft_error = err.exception()  # RFC 1122 §4.2.3.9: report, do not abort

    def _path_mtu_changed(self) -> None:
        if self._state not in _OUTPUT_STATES or self.remote is None or self.local is None:
            return
        try:
            route = find_route(self.stack, self.remote[0], self.local[0])
        except NetstackError:
            return
        self.route = route
        snd = self.snd
        mss = min(self._local_mss(), self.peer_mss) - (12 if self.ts_enabled else 0)
        if mss < snd.mss:
            snd.mss = snd.cc.mss = max(mss, 64)
            snd.seg_max = max(snd.mss, snd.gso_limit // snd.mss * snd.mss)
            snd.go_back()  # resend what was too big, now in smaller segments
            self._output(self.stack.now())

