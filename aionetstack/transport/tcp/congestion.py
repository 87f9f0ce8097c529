"""Congestion control (RFC 5681 Reno; recovery hooks for RFC 6582 NewReno).

``CongestionControl`` is the small interface the sender talks to, so CUBIC (RFC 9438) can be
dropped in later.  The sender owns loss *detection* (duplicate ACKs, the NewReno ``recover``
point, the retransmission timer); the controller only decides ``cwnd`` and ``ssthresh``:

* ``on_ack(acked, rtt, now)`` -- new data acknowledged outside recovery: slow start below
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

``Cubic`` (RFC 9438) replaces congestion avoidance with the cubic window function
``W(t) = C (t - K)^3 + W_max`` (``C = 0.4``, ``beta = 0.7``, fast convergence, §4.6) and keeps
the Reno-friendly estimate ``W_est`` (§4.3) as a floor; slow start and the recovery hooks are
Reno's, with ``beta = 0.7`` for the multiplicative decrease (§4.6).  ``make_cc(name, mss)``
builds one by name ("reno", "cubic").
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

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
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

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
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


class Cubic(Reno):
    """CUBIC (RFC 9438) in bytes; time in seconds from the stack clock."""

    __slots__ = ("epoch", "k", "origin", "srtt", "w_est", "w_max")

    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.w_max = 0.0  # segments
        self.k = 0.0
        self.origin = 0.0
        self.epoch: float | None = None
        self.w_est = 0.0
        self.srtt = 0.0

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        if rtt is not None:
            self.srtt = rtt if not self.srtt else 0.875 * self.srtt + 0.125 * rtt
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, self.mss)
            return
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        if self.epoch is None:  # first ACK of a congestion-avoidance epoch (§4.2)
            self.epoch = now
            if cwnd_seg < self.w_max:
                self.k = ((self.w_max - cwnd_seg) / self.C) ** (1 / 3)
                self.origin = self.w_max
            else:
                self.k = 0.0
                self.origin = cwnd_seg
            self.w_est = cwnd_seg
        t = now - self.epoch + self.srtt
        target = self.origin + self.C * (t - self.k) ** 3
        alpha = 3 * (1 - self.BETA) / (1 + self.BETA)
        self.w_est += alpha * (acked / mss) / cwnd_seg  # Reno-friendly region (§4.3)
        if target < self.w_est:
            target = self.w_est
        target = min(target, 1.5 * cwnd_seg)  # at most +50% per RTT (§4.4)
        if target > cwnd_seg:
            self.cwnd += max(1, int((target - cwnd_seg) / cwnd_seg * acked))

    def _reduce(self, flight: int) -> None:
        cwnd_seg = self.cwnd / self.mss
        if cwnd_seg < self.w_max:  # fast convergence (§4.7)
            self.w_max = cwnd_seg * (1 + self.BETA) / 2
        else:
            self.w_max = cwnd_seg
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * self.mss)
        self.epoch = None

    def on_loss(self, flight: int) -> None:
        self._reduce(flight)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_rto(self, flight: int) -> None:
        self._reduce(flight)
        self.cwnd = self.mss


def make_cc(name: str, mss: int) -> CongestionControl:
    if name == "reno":
        return Reno(mss)
    if name == "cubic":
        return Cubic(mss)
    raise ValueError(f"unknown congestion control {name!r} (reno, cubic)")
