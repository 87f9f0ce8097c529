"""IP fragment reassembly and fragmentation, shared by IPv4 and IPv6.

Theory of operation
-------------------
``Reassembler`` is sans-IO: the IP layer hands it one fragment at a time with the current time,
and gets back the whole payload when the last hole fills (RFC 791 §3.2 "reassembly", RFC 815,
RFC 8200 §4.5).  The key is opaque: the caller uses ``(src, dst, proto, ident)`` for IPv4 and
``(src, dst, ident)`` for IPv6.  Offsets and lengths are in bytes of the *fragmentable* payload
(the IPv4 payload, or the IPv6 part after the Fragment header).

Each pending datagram keeps its fragments in three parallel lists sorted by offset (starts, ends,
data).  Because overlaps are never accepted, the pieces are disjoint, so RFC 815's hole list
reduces to one counter: once the final fragment has fixed the length, the datagram is complete
when the bytes held equal that length.  Insertion is a ``bisect`` plus a list insert; the common
in-order case is an append.  The payload is built once with ``b"".join`` on completion.

Rules, checked in this order for every fragment:

* a non-final fragment whose length is not a multiple of 8, or any empty fragment other than an
  atomic one, is dropped (``bad-fragment-length``; RFC 8200 §4.5 asks IPv6 callers to answer
  with an ICMPv6 Parameter Problem, which is the caller's business);
* an *atomic* fragment (offset 0, no more fragments) is returned at once and touches no state
  (RFC 6946: it is processed in isolation even if other fragments share its identifier);
* a fragment reaching beyond ``max_datagram`` kills the datagram (``too-big``: ping of death);
* the final fragment fixes the length; a second final fragment with a different end, data past
  an established end, or a final fragment ending before data already held kills the datagram
  (``bad-fragment``);
* an *exact* duplicate (same offset, length and bytes) is ignored (``duplicate``; RFC 5722 §4
  allows this since the network duplicates packets).  Any other overlap -- partial (teardrop),
  subset, or same range with different bytes -- kills the datagram (``overlap``).  For IPv6 this
  is RFC 5722 §3: the datagram *and fragments not yet received* are silently discarded, so the
  key is kept as a tombstone that swallows further fragments until the datagram's timeout.  For
  IPv4 the datagram is dropped as modern Linux does; this defeats the RFC 1858 §4 / RFC 3128
  overlapping-fragment filter evasion, because no overlapped byte is ever chosen between two
  versions.  (The RFC 1858 §3 *tiny fragment* attack concerns filters that look at a lone
  first fragment; this stack demultiplexes only reassembled datagrams, so it does not apply.)
* more than ``max_fragments`` pieces kills the datagram (``too-many-fragments``): 8-byte
  fragment floods then cost bounded work per datagram.

Memory: ``pending_bytes`` is the fragment payload plus stored headers held for incomplete
datagrams.  A fragment that would push it over ``max_bytes`` first evicts the oldest *other*
pending datagrams (``evicted``); if it still cannot fit, its own datagram is dropped too (also
``evicted``) since it could never complete.  RFC 4963 explains why IPv4 needs such bounds and a
short timeout: the 16-bit identifier wraps within seconds at high rates and stale fragments
then mis-assemble (the transport checksum catches most, not all, of these).

Timeouts: a datagram expires ``timeout`` seconds after its *first* fragment arrived (RFC 791
suggests 15 s, RFC 8200 §4.5 60 s, Linux uses 30 s).  Pending datagrams live in one
insertion-ordered ``OrderedDict``; since ``now`` never goes backwards their deadlines are in
that order, so ``next_deadline`` reads the first entry and ``expire`` pops from the front.
``expire`` returns each timed-out key with the header of its offset-0 fragment (or ``None`` if
that never came): the caller sends ICMP Time Exceeded, code 1, only when it has that header
(RFC 792, RFC 1122 §3.3.2, RFC 4443 §3.3 / RFC 8200 §4.5).  Tombstones, evictions and drops
are silent.  The owner must call ``expire(now)`` when ``next_deadline()`` passes.

Fragmentation for output is ``fragment_payload``: it only plans the slices (offset, length,
more); the caller copies the bytes and builds headers (RFC 791 §3.2 fragmentation procedure,
RFC 8200 §4.5 fragment creation), including drawing IPv6 identifiers from its random source.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

__all__ = ["STAT_KEYS", "Reassembler", "fragment_payload"]

STAT_KEYS: Final = (
    "received",
    "reassembled",
    "duplicate",
    "overlap",
    "timeout",
    "evicted",
    "too-big",
    "bad-fragment",
    "bad-fragment-length",
    "too-many-fragments",
)

#: At most this many IPv6 overlap tombstones are kept at once; past it a discarded datagram is
#: simply dropped (as IPv4 does) so an overlap flood cannot grow state without bound.
MAX_TOMBSTONES: Final = 4096


class _Datagram:
    """One datagram being reassembled, or (``dead``) an RFC 5722 tombstone."""

    __slots__ = ("dead", "deadline", "ends", "filled", "header", "length", "pieces", "starts")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pieces: list[bytes] = []
        self.filled = 0  # payload bytes held; pieces are disjoint
        self.length: int | None = None  # fixed by the final fragment
        self.header: bytes | None = None  # IP header of the offset-0 fragment
        self.dead = False

    def held(self) -> int:
        return self.filled + (len(self.header) if self.header is not None else 0)


class Reassembler:
    """Reassemble IPv4 or IPv6 fragments; see the module docstring for the rules."""

    __slots__ = (
        "_dead_count",
        "_entries",
        "_stats",
        "ipv6",
        "max_bytes",
        "max_datagram",
        "max_fragments",
        "pending_bytes",
        "timeout",
    )

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_bytes: int = 4 * 1024 * 1024,
        max_datagram: int = 65535,
        ipv6: bool = False,
        max_fragments: int = 1024,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if max_bytes <= 0 or max_datagram <= 0 or max_fragments <= 0:
            raise ValueError("max_bytes, max_datagram and max_fragments must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        #: Largest reassembled payload accepted (the fragmentable part; a caller wanting IPv4
        #: total-length semantics passes ``65535 - 20``).
        self.max_datagram = max_datagram
        self.max_fragments = max_fragments
        self.ipv6 = ipv6
        self.pending_bytes = 0
        # Insertion order == first-arrival order == deadline order (``now`` is monotonic).  An
        # OrderedDict, not a dict: a plain dict leaves holes at the front as entries expire, so
        # finding its first entry costs O(holes) until the next resize.
        self._entries: OrderedDict[Hashable, _Datagram] = OrderedDict()
        self._dead_count = 0
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Datagrams pending reassembly (tombstones excluded)."""
        return len(self._entries) - self._dead_count

    def next_deadline(self) -> float | None:
        """When ``expire`` next has work to do (a datagram or tombstone times out), or None."""
        dg = next(iter(self._entries.values()), None)
        return None if dg is None else dg.deadline

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    # -- input ---------------------------------------------------------------------------------

    def add(
        self,
        key: Hashable,
        offset: int,
        more: bool,
        data: bytes | memoryview,
        now: float,
        header: bytes | None = None,
    ) -> bytes | None:
        """Add one fragment; return the whole payload if this completed it, else None.

        ``offset`` is in bytes and must be a multiple of 8 (it comes from a 13-bit field scaled
        by 8, so anything else is a caller bug and raises ``ValueError``).  ``data`` is copied,
        so it may be a view into a reused receive buffer.  ``header`` is kept only from the
        offset-0 fragment, for ``expire``'s ICMP Time Exceeded.
        """
        stats = self._stats
        stats["received"] += 1
        if offset < 0 or offset & 7:
            raise ValueError(f"fragment offset {offset} is not a non-negative multiple of 8")
        n = len(data)
        if (more and n & 7) or (n == 0 and (more or offset)):
            stats["bad-fragment-length"] += 1
            return None
        if offset == 0 and not more:
            stats["reassembled"] += 1  # atomic fragment, RFC 6946
            return bytes(data)
        end = offset + n

        dg = self._entries.get(key)
        if dg is not None and dg.dead:
            if dg.deadline > now:
                return None  # RFC 5722: the rest of a discarded datagram is discarded too
            self._remove(key, dg)  # an overdue tombstone the owner has not expired yet
            dg = None

        if end > self.max_datagram:
            self._drop(key, dg, "too-big")
            return None

        if dg is not None:
            # Consistency of the final-fragment information.
            length = dg.length
            if more:
                if length is not None and end > length:
                    self._drop(key, dg, "bad-fragment")
                    return None
            elif (length is not None and end != length) or (dg.ends and dg.ends[-1] > end):
                self._drop(key, dg, "bad-fragment")
                return None

            # Overlap and duplicate detection against the neighbours of the insertion point.
            starts, ends = dg.starts, dg.ends
            i = bisect_right(starts, offset)
            if i and ends[i - 1] > offset:
                if starts[i - 1] == offset and ends[i - 1] == end and dg.pieces[i - 1] == data:
                    stats["duplicate"] += 1
                    return None
                self._drop(key, dg, "overlap", tombstone=self.ipv6)
                return None
            if i < len(starts) and starts[i] < end:
                self._drop(key, dg, "overlap", tombstone=self.ipv6)
                return None

            if len(starts) >= self.max_fragments:
                self._drop(key, dg, "too-many-fragments")
                return None
        else:
            i = 0

        # Memory: make room by evicting the oldest other datagrams.
        keep_header = offset == 0 and header is not None and (dg is None or dg.header is None)
        need = n + (len(header) if keep_header and header is not None else 0)
        if self.pending_bytes + need > self.max_bytes and not self._make_room(need, key):
            self._drop(key, dg, "evicted")
            return None

        if dg is None:
            dg = _Datagram(now + self.timeout)
            self._entries[key] = dg
        piece = bytes(data)
        if i == len(dg.starts):
            dg.starts.append(offset)
            dg.ends.append(end)
            dg.pieces.append(piece)
        else:
            dg.starts.insert(i, offset)
            dg.ends.insert(i, end)
            dg.pieces.insert(i, piece)
        dg.filled += n
        if keep_header and header is not None:
            dg.header = bytes(header)
        if not more:
            dg.length = end
        self.pending_bytes += need

        if dg.filled == dg.length:
            # Disjoint pieces inside [0, length) summing to length cover it exactly.
            self._remove(key, dg)
            stats["reassembled"] += 1
            return b"".join(dg.pieces)
        return None

    # -- time ----------------------------------------------------------------------------------

    def expire(self, now: float) -> list[tuple[Hashable, bytes | None]]:
        """Drop everything whose deadline is ``<= now``.

        Returns the timed-out datagrams' keys, each with the header of its offset-0 fragment if
        that arrived (send ICMP Time Exceeded only then).  Tombstones end silently.
        """
        out: list[tuple[Hashable, bytes | None]] = []
        entries = self._entries
        while entries:
            key = next(iter(entries))
            dg = entries[key]
            if dg.deadline > now:
                break
            self._remove(key, dg)
            if not dg.dead:
                self._stats["timeout"] += 1
                out.append((key, dg.header))
        return out

    # -- internals -----------------------------------------------------------------------------

    def _remove(self, key: Hashable, dg: _Datagram) -> None:
        del self._entries[key]
        if dg.dead:
            self._dead_count -= 1
        else:
            self.pending_bytes -= dg.held()

    def _drop(
        self, key: Hashable, dg: _Datagram | None, reason: str, *, tombstone: bool = False
    ) -> None:
        """Count ``reason`` and discard the datagram ``dg`` (if any), maybe leaving a tombstone."""
        self._stats[reason] += 1
        if dg is not None:
            if tombstone and self._dead_count < MAX_TOMBSTONES:
                self.pending_bytes -= dg.held()
                dg.dead = True
                dg.starts, dg.ends, dg.pieces, dg.header = [], [], [], None
                dg.filled = 0
                self._dead_count += 1
            else:
                self._remove(key, dg)

    def _make_room(self, need: int, key: Hashable) -> bool:
        """Evict oldest entries other than ``key`` until ``need`` more bytes fit."""
        if need > self.max_bytes:
            return False
        excess = self.pending_bytes + need - self.max_bytes
        victims: list[tuple[Hashable, _Datagram]] = []
        for k, dg in self._entries.items():
            if excess <= 0:
                break
            if k == key:
                continue
            victims.append((k, dg))
            if not dg.dead:
                excess -= dg.held()
        for k, dg in victims:
            # Tombstones on the way hold no bytes; dropping them keeps the scan amortised O(1).
            if not dg.dead:
                self._stats["evicted"] += 1
            self._remove(k, dg)
        return excess <= 0


def fragment_payload(payload_len: int, first_room: int, room: int) -> list[tuple[int, int, bool]]:
    """Plan fragments: ``(offset, length, more)`` slices covering ``payload_len`` bytes.

    ``first_room`` is the payload space in the first fragment and ``room`` in the others (they
    differ for IPv4 when options are not copied, RFC 791 §3.1 "copied flag"); for IPv4
    ``room = mtu - ihl``, for IPv6 ``room = mtu - 40 - unfragmentable - 8``.  Every non-final
    slice is a multiple of 8 bytes and at most its room; the final slice fits its room.  A
    payload that fits ``first_room`` comes back as one slice with ``more=False``.
    """
    if payload_len < 0:
        raise ValueError(f"negative payload length {payload_len}")
    if payload_len <= first_room:
        return [(0, payload_len, False)]
    first = first_room & ~7
    step = room & ~7
    if first <= 0 or step <= 0:
        raise ValueError(f"no room for an 8-byte fragment (first_room={first_room}, room={room})")
    out = [(0, first, True)]
    offset = first
    while payload_len - offset > room:
        out.append((offset, step, True))
        offset += step
    out.append((offset, payload_len - offset, False))
    return out
