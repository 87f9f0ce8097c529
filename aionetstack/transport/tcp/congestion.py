"""Congestion control: the interface, Reno (RFC 5681/6582) and CUBIC (RFC 9438, the default).

The interface
-------------
``CongestionControl`` is the small interface the sender talks to.  The sender owns loss
*detection* (duplicate ACKs, SACK, the NewReno ``recover`` point, the retransmission timer); a
controller only decides ``cwnd`` and ``ssthresh`` (both in bytes; ``mss`` is the sender's SMSS):

* ``on_ack(acked, rtt, now)`` -- new data acknowledged outside recovery while the sender is
  cwnd-limited; ``acked`` bytes, ``rtt`` the RTT sample this ACK gave (seconds) or ``None``,
  ``now`` the stack clock (seconds).  **Must be implemented.**
* ``on_loss(flight)`` -- loss detected by duplicate ACKs or SACK (entering fast recovery);
  ``flight`` bytes outstanding.  **Must be implemented.**  (With SACK, PRR (RFC 6937)
  then brings ``cwnd`` down to ``ssthresh``; without it the value set here is used as is.)
* ``on_rto(flight)`` -- the retransmission timer expired.  **Must be implemented.**
* ``on_dupack()`` -- a further duplicate ACK in non-SACK fast recovery; default: inflate by
  SMSS (RFC 5681 §3.2 step 4).  (With SACK, PRR sets ``cwnd`` during recovery instead, RFC 6937;
  ``on_dupack`` and ``on_partial_ack`` are not called.)
* ``on_partial_ack(acked)`` -- RFC 6582 §3.2 step 5 (default: deflate by ``acked``, add SMSS).
* ``on_recovery_exit(flight)`` -- the full ACK ending recovery; default
  ``cwnd = min(ssthresh, max(flight, SMSS) + SMSS)`` (RFC 6582 §3.2 step 6).
* ``set_mss(mss)`` -- the SMSS became known (handshake) or shrank (PMTU); default resets the
  initial window of ten segments (RFC 6928).

Registering your own
--------------------
Subclass ``CongestionControl`` (or ``Reno``) and register a factory taking the SMSS::

    from aionetstack.transport.tcp.congestion import CongestionControl, register_congestion_control

    class Fixed(CongestionControl):
        __slots__ = ()
        def on_ack(self, acked, rtt, now): pass
        def on_loss(self, flight): self.ssthresh = self.cwnd = max(flight // 2, 2 * self.mss)
        def on_rto(self, flight): self.on_loss(flight); self.cwnd = self.mss

    register_congestion_control("fixed", Fixed)
    stack.tcp.congestion_control = "fixed"      # the stack default for new endpoints, or
    ep.congestion_control = "fixed"             # one endpoint (accepted children inherit a
                                                # listener's choice)

``make_cc(name, mss)`` builds a registered controller by name (``available()`` lists them) and
stamps ``name`` on it; an unknown name raises ``InvalidArgument`` (a ``ValueError``).

Reno
----
Slow start below ``ssthresh``, otherwise congestion avoidance, both counting acknowledged bytes
(RFC 3465, as RFC 5681 §3.1 allows): slow start grows by the bytes each ACK acknowledges, up to
``ssthresh``, and congestion avoidance by ``SMSS * acked / cwnd`` (one SMSS per window
acknowledged, RFC 5681 eq. 3 scaled by the bytes acked).  The slow-start increase per ACK is not
capped at one or two SMSS (RFC 3465's ``L``): receivers with receive offload (GRO, Linux's and
ours) send one ACK per merged super-segment, and a cap would make such stretch ACKs slow the
window's growth many times over; Linux does the same (``tcp_slow_start``).  Loss:
``ssthresh = max(flight/2, 2*SMSS)``, ``cwnd = ssthresh + 3*SMSS`` (§3.2 steps 2-3).  Timeout:
``ssthresh = max(flight/2, 2*SMSS)``, ``cwnd = 1 SMSS`` (§3.1 eq. 4 and the loss window).

CUBIC (RFC 9438)
----------------
Windows in segments, time in seconds from the stack clock, ``C = 0.4``, ``beta = 0.7``.
In congestion avoidance, an epoch starts at the first ACK (§4.2): ``cwnd_epoch = cwnd``,
``K = cbrt((W_max - cwnd_epoch) / C)`` (``K = 0`` and ``W_max = cwnd_epoch`` when the window
is already at or above ``W_max``, and for the first epoch after a timeout, §4.8), and the
Reno-friendly estimate ``W_est = cwnd_epoch``.  Per ACK of ``acked`` bytes, with ``t`` the time
since the epoch began and ``RTT`` the smoothed RTT of the samples seen:

* ``W_est += alpha * (acked/SMSS) / cwnd``, ``alpha = 3 (1 - beta) / (1 + beta)`` until
  ``W_est >= cwnd_prior``, then 1 (§4.3);
* if ``W_cubic(t) = C (t - K)^3 + W_max`` is below ``W_est`` (Reno-friendly region) ``cwnd`` is
  set to ``W_est`` (§4.3);
* otherwise ``target = clamp(W_cubic(t + RTT), cwnd, 1.5 cwnd)`` and ``cwnd`` grows by
  ``(target - cwnd) / cwnd`` per SMSS acknowledged (concave and convex regions, §4.4-4.5).

On loss (§4.6, §4.7): ``cwnd_prior = cwnd``; fast convergence
``W_max = cwnd (1 + beta) / 2`` if ``cwnd < W_max`` else ``W_max = cwnd``;
``ssthresh = max(cwnd * beta, 2 SMSS)`` (RFC 9438 allows ``cwnd`` instead of the flight size
because the sender grows ``cwnd`` only while cwnd-limited).  Slow start and the recovery hooks
are Reno's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, cast

from mypy_extensions import mypyc_attr

from aionetstack.errors import InvalidArgument

__all__ = [
    "CongestionControl",
    "Cubic",
    "Reno",
    "available",
    "make_cc",
    "register_congestion_control",
    "unregister_congestion_control",
]


@mypyc_attr(allow_interpreted_subclasses=True)  # applications register their own
class CongestionControl:
    """Interface (and Reno-style recovery defaults) every congestion controller implements."""

    __slots__ = ("cwnd", "mss", "name", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = 10 * mss
        self.ssthresh = 1 << 30
        self.name = type(self).__name__.lower()

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = 10 * mss

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        raise NotImplementedError

    def on_loss(self, flight: int) -> None:
        raise NotImplementedError

    def on_rto(self, flight: int) -> None:
        raise NotImplementedError

    def on_dupack(self) -> None:
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        self.cwnd = max(self.cwnd - acked, 0) + (self.mss if acked >= self.mss else 0)
        self.cwnd = max(self.cwnd, self.mss)

    def on_recovery_exit(self, flight: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)


class Reno(CongestionControl):
    __slots__ = ()

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, self.ssthresh)
        else:
            self.cwnd += max(1, self.mss * acked // self.cwnd)

    def on_loss(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_rto(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss


class Cubic(Reno):
    """CUBIC (RFC 9438) in bytes; time in seconds from the stack clock."""

    __slots__ = ("after_rto", "cwnd_prior", "epoch", "k", "srtt", "w_est", "w_max")

    C: ClassVar[float] = 0.4
    BETA: ClassVar[float] = 0.7
    ALPHA: ClassVar[float] = 3 * (1 - 0.7) / (1 + 0.7)  # §4.3 (BETA): Reno-friendly increase

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.w_max = 0.0  # segments: the window before the last reduction (or the epoch origin)
        self.cwnd_prior = 0.0  # segments: cwnd when ssthresh was last set (§4.3)
        self.k = 0.0
        self.epoch: float | None = None
        self.w_est = 0.0
        self.srtt = 0.0
        self.after_rto = False

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1, in segments: ``C (t - K)^3 + W_max``."""
        return self.C * (t - self.k) ** 3 + self.w_max

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        if rtt is not None:
            self.srtt = rtt if not self.srtt else 0.875 * self.srtt + 0.125 * rtt
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, self.ssthresh)
            return
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        if self.epoch is None:  # first ACK of a congestion-avoidance stage (§4.2)
            self.epoch = now
            if self.after_rto or cwnd_seg >= self.w_max:
                self.k = 0.0  # §4.8 after a timeout; at or above W_max the plateau is here
                self.w_max = cwnd_seg
                self.after_rto = False
            else:
                self.k = ((self.w_max - cwnd_seg) / self.C) ** (1 / 3)
            self.w_est = cwnd_seg
        t = now - self.epoch
        alpha = 1.0 if self.w_est >= self.cwnd_prior else self.ALPHA
        self.w_est += alpha * (acked / mss) / cwnd_seg
        if self.w_cubic(t) < self.w_est:  # Reno-friendly region (§4.3)
            self.cwnd = max(self.cwnd, int(self.w_est * mss))
            return
        target = min(max(self.w_cubic(t + self.srtt), cwnd_seg), 1.5 * cwnd_seg)
        self.cwnd += int((target - cwnd_seg) / cwnd_seg * acked)

    def _reduce(self) -> None:
        cwnd_seg = self.cwnd / self.mss
        self.cwnd_prior = cwnd_seg
        if cwnd_seg < self.w_max:  # fast convergence (§4.7)
            self.w_max = cwnd_seg * (1 + self.BETA) / 2
        else:
            self.w_max = cwnd_seg
        self.ssthresh = max(round(self.cwnd * self.BETA), 2 * self.mss)
        self.epoch = None

    def on_loss(self, flight: int) -> None:
        self._reduce()
        self.after_rto = False
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_rto(self, flight: int) -> None:
        self._reduce()
        self.after_rto = True
        self.cwnd = self.mss


CcFactory = Callable[[int], CongestionControl]

_REGISTRY: dict[str, CcFactory] = {"reno": Reno, "cubic": Cubic}


def register_congestion_control(name: str, factory: CcFactory, *,
                                replace: bool = False) -> None:
    """Make ``factory(mss)`` available as ``name`` (``ep.congestion_control = name``)."""
    if not name or not isinstance(name, str):
        raise InvalidArgument("a congestion control needs a non-empty name")
    if name in _REGISTRY and not replace:
        raise InvalidArgument(f"congestion control {name!r} is already registered")
    _REGISTRY[name] = factory


def unregister_congestion_control(name: str) -> None:
    if name in ("reno", "cubic"):
        raise InvalidArgument(f"{name!r} is built in")
    _REGISTRY.pop(name, None)


def available() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def make_cc(name: str, mss: int) -> CongestionControl:
    factory = _REGISTRY.get(name)
    if factory is None:
        raise InvalidArgument(
            f"unknown congestion control {name!r} ({', '.join(_REGISTRY)})")
    # a registered factory is the application's code: what it returns is checked, not trusted
    cc = cast("Callable[[int], object]", factory)(mss)
    if not isinstance(cc, CongestionControl):
        raise InvalidArgument(f"congestion control {name!r} did not build a CongestionControl")
    cc.name = name
    return cc
