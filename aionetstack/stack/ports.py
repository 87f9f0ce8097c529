"""Port reservations and ephemeral port selection.

Ephemeral ports follow RFC 6056 §3.3.3 (Algorithm 3, "simple hash-based"): the search for a free
port starts at ``hash(local, remote, remote port, secret) + counter``, so ports are unpredictable
to an off-path attacker yet a given peer sees them spread rather than reused.  Without a remote
(``bind(port=0)``) the start is random (Algorithm 1).

Reservation semantics (SO_REUSEADDR as on Linux, simplified): two reservations of the same protocol
and port conflict when their addresses overlap (equal, or either is the wildcard) unless both asked
for ``reuse``.  A TCP connect's own ephemeral port is ``shared``: as on Linux, connections to
different destinations may use the same local port (their 4-tuples differ, which the caller's
``is_free`` checks), so a stack is not limited to one span of ports for all its outgoing
connections; a shared port still conflicts with any bind or listener on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from aionetstack.clock import RandomSource
from aionetstack.errors import AddressNotAvailable, InvalidArgument, PortInUse


@dataclass(slots=True, eq=False)
class Reservation:
    protocol: int
    address: bytes | None  # None = wildcard (family-specific wildcard is in ``family``)
    family: int
    port: int
    reuse: bool
    shared: bool = False  # a TCP connect's ephemeral port: unique per 4-tuple, not per port


class PortManager:
    def __init__(self, rng: RandomSource, first: int = 32768, last: int = 60999) -> None:
        if not 0 < first <= last <= 65535:
            raise InvalidArgument(f"bad ephemeral port range {first}-{last}")
        self.first = first
        self.last = last
        self._rng = rng
        self._secret = rng.getrandbits(128).to_bytes(16, "big")
        self._keyed = hashlib.blake2b(digest_size=8, key=self._secret)  # copied per use
        self._counter = 0
        self._by_port: dict[tuple[int, int], list[Reservation]] = {}
        # RFC 6056 Algorithm 3 offsets of recent destinations
        self._offsets: dict[tuple[int, bytes | None, tuple[bytes, int]], int] = {}

    def _conflicts(self, r: Reservation) -> bool:
        for other in self._by_port.get((r.protocol, r.port), ()):
            if other.family != r.family or (other.shared and r.shared):
                continue
            overlap = other.address is None or r.address is None or other.address == r.address
            if overlap and not (other.reuse and r.reuse):
                return True
        return False

    def reserve(self, protocol: int, family: int, address: bytes | None, port: int,
                reuse: bool = False, remote: tuple[bytes, int] | None = None,
                is_free: Callable[[int], bool] | None = None,
                shared: bool = False) -> Reservation:
        """Reserve ``port`` (0 = pick an ephemeral one). Raises PortInUse/AddressNotAvailable.

        ``shared`` (with port 0): a connect's port, which other shared reservations may hold too;
        ``is_free`` must then veto a port whose 4-tuple is taken."""
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port out of range: {port}")
        if port:
            r = Reservation(protocol, address, family, port, reuse)
            if self._conflicts(r):
                raise PortInUse(f"port {port} is in use")
            self._by_port.setdefault((protocol, port), []).append(r)
            return r
        span = self.last - self.first + 1
        if remote is not None:
            # F(local, remote, secret) is fixed per destination: computed once, then remembered
            key = (protocol, address, remote)
            offset = self._offsets.get(key, -1)
            if offset < 0:
                h = self._keyed.copy()
                h.update(bytes([protocol]) + (address or b"") + remote[0])
                h.update(remote[1].to_bytes(2, "big"))
                offset = int.from_bytes(h.digest(), "big")
                if len(self._offsets) >= 1024:
                    self._offsets.clear()
                self._offsets[key] = offset
        else:
            offset = self._rng.getrandbits(32)
        self._counter += 1
        start = offset + self._counter
        for i in range(span):
            candidate = self.first + (start + i) % span
            r = Reservation(protocol, address, family, candidate, reuse, shared)
            if self._conflicts(r):
                continue
            if is_free is not None and not is_free(candidate):
                continue
            self._by_port.setdefault((protocol, candidate), []).append(r)
            return r
        raise AddressNotAvailable("no free ephemeral port")

    def release(self, r: Reservation) -> None:
        lst = self._by_port.get((r.protocol, r.port))
        if not lst:
            return
        try:
            lst.remove(r)
        except ValueError:
            return
        if not lst:
            del self._by_port[(r.protocol, r.port)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_port.values())
