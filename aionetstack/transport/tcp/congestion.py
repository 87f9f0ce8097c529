"""Congestion control (RFC 5681 Reno; recovery hooks for RFC 6582 NewReno).

``CongestionControl`` is the small interface the sender talks to, so CUBIC (RFC 9438) can be
dropped in later.  The sender owns loss *detection* (duplicate ACKs, the NewReno ``recover``
point, the retransmission timer); the controller only decides ``cwnd`` and ``ssthresh``:

* ``on_ack(acked, rtt)`` -- new data acknowledged outside recovery: slow start below
  ``ssthresh`` (RFC 5681 §3.1, +min(acked, SMSS), i.e. RFC 3465 ABC with L=1), otherwise
  congestion avoidance (+SMSS*SMSS/cwnd per ACK, RFC 5681 eq. 3).
* ``on_loss(flight)`` -- third duplicate ACK: ``ssthresh = max(flight/2, 2*SMSS)``,
  ``cwnd = ssthresh + 3*SMSS`` (RFC 5681 §3.2 steps 2-3).
* ``on_dupack()`` -- further duplicate ACKs in recovery inflate cwnd by SMSS (step 4).
* ``on_partial_ack(acked)`` -- RFC 6582 §3.2 step 5: deflate by the amount acked, add back SMSS.
* ``on_recovery_exit(flight)`` -- full ACK: ``cwnd = min(ssthresh, max(flight, SMSS) + SMSS)``.
* ``on_rto(flight)`` -- timeout: ``ssthresh = max(flight/2, 2*SMSS)``, ``cwnd = 1 SMSS``
  (RFC 5681 §3.1 eq. 4 and the loss window).

The initial window is ten segments (RFC 6928), like Linux.
"""

from __future__ import annotations


class CongestionControl:
    """Interface (and no-op defaults) every congestion controller implements."""

    __slots__ = ("cwnd", "mss", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = 10 * mss
        self.ssthresh = 1 << 30

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = 10 * mss

    def on_ack(self, acked: int, rtt: float | None) -> None:
        raise NotImplementedError

    def on_loss(self, flight: int) -> None:
        raise NotImplementedError

    def on_dupack(self) -> None:
        raise NotImplementedError

    def on_partial_ack(self, acked: int) -> None:
        raise NotImplementedError

    def on_recovery_exit(self, flight: int) -> None:
        raise NotImplementedError

    def on_rto(self, flight: int) -> None:
        raise NotImplementedError


class Reno(CongestionControl):
    __slots__ = ()

    def on_ack(self, acked: int, rtt: float | None) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, self.mss)
        else:
            self.cwnd += max(1, self.mss * self.mss // self.cwnd)

    def on_loss(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_dupack(self) -> None:
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        self.cwnd = max(self.cwnd - acked, 0) + (self.mss if acked >= self.mss else 0)
        self.cwnd = max(self.cwnd, self.mss)

    def on_recovery_exit(self, flight: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)

    def on_rto(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
