"""Initial sequence numbers (RFC 6528, RFC 9293 §3.4.1).

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where ``M`` is a clock that
ticks every 4 microseconds (RFC 9293 §3.4.1) and ``F`` is a keyed hash (BLAKE2b with a 128-bit
secret drawn once from the stack's random source).  Successive incarnations of one 4-tuple get
increasing ISNs, while an off-path attacker cannot predict them for a tuple it does not own.

Time is whatever the stack's clock says (``now`` in seconds), so tests are reproducible.
"""

from __future__ import annotations

import hashlib

from aionetstack.clock import RandomSource
from aionetstack.wire.seqnum import MASK


class IsnGenerator:
    __slots__ = ("_secret",)

    def __init__(self, rng: RandomSource) -> None:
        self._secret = rng.getrandbits(128).to_bytes(16, "big")

    def isn(self, local: bytes, lport: int, remote: bytes, rport: int, now: float) -> int:
        h = hashlib.blake2b(digest_size=4, key=self._secret)
        h.update(local + remote + lport.to_bytes(2, "big") + rport.to_bytes(2, "big"))
        return (int(now * 250_000) + int.from_bytes(h.digest(), "big")) & MASK
