"""Round-trip time estimation and the retransmission timeout (RFC 6298).

* First sample R: ``SRTT = R``, ``RTTVAR = R/2``.  Later samples: ``RTTVAR = 3/4 RTTVAR +
  1/4 |SRTT - R|``, ``SRTT = 7/8 SRTT + 1/8 R`` (§2.2-2.3).
* ``RTO = SRTT + max(G, 4 RTTVAR, min_rto)``, at most ``max_rto``.  RFC 6298 §2.4 asks for a 1 s
  floor on the whole RTO (a SHOULD); like Linux (``tcp_rto_min`` bounds the variance term) the
  floor here is 200 ms (configurable) *above SRTT*, so a path with a long RTT and little jitter
  is not timed out before its ACKs can arrive (a 200 ms floor on the whole RTO would fire at
  under 2 SRTT on a 110 ms path).  Before any sample RTO is 1 s (§2.1).
* Each expiry doubles the timeout (§5.5, "back off the timer"); a new sample ends the backoff.
* Karn's rule (§3) is the caller's job: never sample a retransmitted segment unless timestamps
  (RFC 7323 §4) disambiguate it.
"""

from __future__ import annotations

CLOCK_GRANULARITY = 0.001


class RttEstimator:
    __slots__ = ("backoff", "max_rto", "min_rto", "rto", "rttvar", "srtt")

    def __init__(self, *, initial_rto: float = 1.0, min_rto: float = 0.2,
                 max_rto: float = 120.0) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.backoff = 0

    def sample(self, r: float) -> None:
        # (max and min written out: this runs for most ACKs)
        if r < CLOCK_GRANULARITY:
            r = CLOCK_GRANULARITY
        srtt = self.srtt
        if srtt is None:
            self.srtt = srtt = r
            self.rttvar = var = r / 2
        else:
            self.rttvar = var = 0.75 * self.rttvar + 0.25 * abs(srtt - r)
            self.srtt = srtt = 0.875 * srtt + 0.125 * r
        k = 4 * var  # max(G, K*RTTVAR, min_rto)
        if k < CLOCK_GRANULARITY:
            k = CLOCK_GRANULARITY
        if k < self.min_rto:
            k = self.min_rto
        rto = srtt + k
        self.rto = rto if rto < self.max_rto else self.max_rto
        self.backoff = 0

    def timeout(self) -> float:
        """The current (backed-off) retransmission timeout."""
        rto = self.rto
        if self.backoff:
            rto *= 1 << min(self.backoff, 30)
        return rto if rto < self.max_rto else self.max_rto

    def on_expiry(self) -> None:
        self.backoff += 1
