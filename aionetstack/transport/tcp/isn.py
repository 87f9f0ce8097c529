"""Initial sequence numbers (RFC 6528, RFC 9293 §3.4.1).

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where ``M`` is a clock that
ticks every 4 microseconds (RFC 9293 §3.4.1) and ``F`` is a keyed hash (BLAKE2b with a 128-bit
secret drawn once from the stack's random source).  Successive incarnations of one 4-tuple get
increasing ISNs, while an off-path attacker cannot predict them for a tuple it does not own.

Timestamp offsets (RFC 7323 §5.4, §7.1): a connection's TSval is its millisecond clock plus an
offset, so TSvals do not reveal the stack's uptime.  The offset is a keyed hash of the local and
remote addresses (a second secret), as on Linux: fixed per pair of hosts, so successive
connections between two hosts see TSvals that keep increasing (what a peer holding the old
4-tuple in TIME-WAIT checks before it accepts a new SYN, RFC 6191 §2), and no random draw is
made per connection.

Time is whatever the stack's clock says (``now`` in seconds), so tests are reproducible.

``SynCookies`` (RFC 4987 §3.6) encode a half-open connection in the ISN of a SYN-ACK when the
SYN queue is full: ``t`` (5 bits, a 64-second counter), an MSS index (3 bits) and a 24-bit keyed
hash of the 4-tuple, the peer's ISN and ``t``.  The returning ACK carries ``cookie + 1``; a cookie
is valid for the current and the previous counter value.  Window scale, SACK and timestamps
offered in the SYN are not remembered (the classic cookie limitation).
"""

from __future__ import annotations

import hashlib

from aionetstack.clock import RandomSource
from aionetstack.wire.seqnum import MASK

MSS_TABLE = (536, 1220, 1360, 1440, 1460, 4312, 8960, 65495)


def _tuple(local: bytes, lport: int, remote: bytes, rport: int) -> bytes:
    return local + remote + lport.to_bytes(2, "big") + rport.to_bytes(2, "big")


class SynCookies:
    __slots__ = ("_secret",)

    def __init__(self, rng: RandomSource) -> None:
        self._secret = rng.getrandbits(128).to_bytes(16, "big")

    def _hash(self, t: int, four: bytes, irs: int) -> int:
        h = hashlib.blake2b(digest_size=3, key=self._secret)
        h.update(four + irs.to_bytes(4, "big") + bytes([t]))
        return int.from_bytes(h.digest(), "big")

    def make(self, local: bytes, lport: int, remote: bytes, rport: int, irs: int, mss: int,
             now: float) -> int:
        t = int(now // 64) & 0x1F
        idx = max((i for i, m in enumerate(MSS_TABLE) if m <= mss), default=0)
        return (t << 27) | (idx << 24) | self._hash(t, _tuple(local, lport, remote, rport), irs)

    def check(self, cookie: int, local: bytes, lport: int, remote: bytes, rport: int, irs: int,
              now: float) -> int | None:
        """The MSS the cookie encodes, or None if it is not one of ours (or too old)."""
        t = cookie >> 27
        if (int(now // 64) - t) & 0x1F > 1:
            return None
        if self._hash(t, _tuple(local, lport, remote, rport), irs) != cookie & 0xFFFFFF:
            return None
        return MSS_TABLE[(cookie >> 24) & 7]


class IsnGenerator:
    __slots__ = ("_keyed", "_secret", "_ts_keyed")

    def __init__(self, rng: RandomSource) -> None:
        self._secret = rng.getrandbits(128).to_bytes(16, "big")
        # the keyed hash state, set up once: copying it is cheaper than keying a new one
        self._keyed = hashlib.blake2b(digest_size=4, key=self._secret)
        self._ts_keyed = hashlib.blake2b(digest_size=4,
                                         key=rng.getrandbits(128).to_bytes(16, "big"))

    def ts_offset(self, local: bytes, remote: bytes) -> int:
        """The timestamp offset for connections from ``local`` to ``remote`` (RFC 7323 §7.1):
        one per pair of hosts, unpredictable without the secret."""
        h = self._ts_keyed.copy()
        h.update(local + remote)
        return int.from_bytes(h.digest(), "big")

    def isn(self, local: bytes, lport: int, remote: bytes, rport: int, now: float) -> int:
        h = self._keyed.copy()
        h.update(local + remote + lport.to_bytes(2, "big") + rport.to_bytes(2, "big"))
        return (int(now * 250_000) + int.from_bytes(h.digest(), "big")) & MASK
