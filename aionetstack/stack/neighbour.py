"""Neighbour cache shared by ARP (RFC 826) and NDP (RFC 4861 §7.3).

States follow RFC 4861 §7.3.2 (ARP uses the same machine, as Linux does):

* INCOMPLETE — resolution in progress: solicitations are multicast/broadcast every
  ``retrans_time`` up to ``max_multicast_solicit`` times; packets wait in a capped queue.  When the
  retries run out the queue is dropped and ``on_unreachable(ip)`` reports the failure upward.
* REACHABLE — confirmed within ``reachable_time``; then it decays to STALE.
* STALE — usable; the first packet sent through a stale entry moves it to DELAY.
* DELAY — wait ``delay_first_probe_time`` for an upper-layer confirmation, then PROBE.
* PROBE — unicast solicitations every ``retrans_time``; no answer after ``max_unicast_solicit``
  deletes the entry.

The cache is capped at ``max_entries``; the oldest entry is evicted first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import IntEnum

from aionetstack.stack.stats import Counters
from aionetstack.stack.timers import Timer, Timers


class NudState(IntEnum):
    INCOMPLETE = 0
    REACHABLE = 1
    STALE = 2
    DELAY = 3
    PROBE = 4
    STATIC = 5


class NeighbourEntry:
    __slots__ = ("ip", "mac", "probes", "queue", "queued_bytes", "state", "timer")

    def __init__(self, ip: bytes) -> None:
        self.ip = ip
        self.mac: bytes | None = None
        self.state = NudState.INCOMPLETE
        self.probes = 0
        self.queue: deque[tuple[bytearray, int]] = deque()
        self.queued_bytes = 0
        self.timer: Timer | None = None


Solicit = Callable[[bytes, bytes | None], None]  # (target ip, unicast mac or None for multicast)
Transmit = Callable[..., None]  # (mac, buffer, l3 offset[, gso size])


class NeighbourCache:
    def __init__(self, timers: Timers, clock: Callable[[], float], stats: Counters,
                 solicit: Solicit, transmit: Transmit,
                 on_unreachable: Callable[[bytes], None], *,
                 max_entries: int = 1024, queue_packets: int = 32,
                 queue_bytes: int = 256 * 1024, reachable_time: float = 30.0,
                 retrans_time: float = 1.0, delay_first_probe: float = 5.0,
                 max_multicast_solicit: int = 3, max_unicast_solicit: int = 3) -> None:
        self._timers = timers
        self._clock = clock
        self._stats = stats
        self._solicit = solicit
        self._transmit = transmit
        self._on_unreachable = on_unreachable
        self.entries: dict[bytes, NeighbourEntry] = {}
        self.max_entries = max_entries
        self.queue_packets = queue_packets
        self.queue_bytes = queue_bytes
        self.reachable_time = reachable_time
        self.retrans_time = retrans_time
        self.delay_first_probe = delay_first_probe
        self.max_multicast_solicit = max_multicast_solicit
        self.max_unicast_solicit = max_unicast_solicit

    # -- output --------------------------------------------------------------------------
    def send(self, ip: bytes, buf: bytearray, l3_offset: int, gso: int = 0) -> None:
        """Send a packet to neighbour ``ip``, resolving its link address first if needed
        (``gso``: a super-segment, only ever passed once the address is known)."""
        e = self.entries.get(ip)
        if e is not None and e.mac is not None:
            if e.state == NudState.STALE:
                self._enter(e, NudState.DELAY, self.delay_first_probe)
            if gso:
                self._transmit(e.mac, buf, l3_offset, gso)
            else:
                self._transmit(e.mac, buf, l3_offset)
            return
        if e is None:
            e = self._new_entry(ip)
            e.probes = 1
            self._stats["solicit-sent"] += 1
            self._solicit(ip, None)
            self._arm(e, self.retrans_time)
        size = len(buf) - l3_offset
        if len(e.queue) >= self.queue_packets or e.queued_bytes + size > self.queue_bytes:
            old_buf, old_off = e.queue.popleft()  # keep the newest, like Linux's unres queue
            e.queued_bytes -= len(old_buf) - old_off
            self._stats.drop("queue-full")
        e.queue.append((buf, l3_offset))
        e.queued_bytes += size

    def _new_entry(self, ip: bytes) -> NeighbourEntry:
        if len(self.entries) >= self.max_entries:
            for victim_ip, victim in self.entries.items():
                if victim.state != NudState.STATIC:
                    self._delete(victim_ip, victim)
                    self._stats["evicted"] += 1
                    break
        e = NeighbourEntry(ip)
        e.timer = self._timers.timer(lambda now: self._expire(e))
        self.entries[ip] = e
        return e

    @staticmethod
    def _t(e: NeighbourEntry) -> Timer:
        assert e.timer is not None
        return e.timer

    def _arm(self, e: NeighbourEntry, delay: float) -> None:
        self._t(e).schedule(self._clock() + delay)

    def _enter(self, e: NeighbourEntry, state: NudState, delay: float | None) -> None:
        e.state = state
        if delay is None:
            self._t(e).cancel()
        else:
            self._arm(e, delay)

    def _delete(self, ip: bytes, e: NeighbourEntry) -> None:
        self._t(e).cancel()
        if e.queue:
            self._stats.drop("unresolved", len(e.queue))
            e.queue.clear()
        self.entries.pop(ip, None)

    # -- timers --------------------------------------------------------------------------
    def _expire(self, e: NeighbourEntry) -> None:
        if self.entries.get(e.ip) is not e:
            return
        st = e.state
        if st == NudState.INCOMPLETE:
            if e.probes >= self.max_multicast_solicit:
                self._stats["failed"] += 1
                self._delete(e.ip, e)
                self._on_unreachable(e.ip)
                return
            e.probes += 1
            self._stats["solicit-sent"] += 1
            self._solicit(e.ip, None)
            self._arm(e, self.retrans_time)
        elif st == NudState.REACHABLE:
            self._enter(e, NudState.STALE, None)
        elif st == NudState.DELAY:
            e.probes = 1
            e.state = NudState.PROBE
            self._stats["solicit-sent"] += 1
            self._solicit(e.ip, e.mac)
            self._arm(e, self.retrans_time)
        elif st == NudState.PROBE:
            if e.probes >= self.max_unicast_solicit:
                self._stats["failed"] += 1
                self._delete(e.ip, e)
                return
            e.probes += 1
            self._stats["solicit-sent"] += 1
            self._solicit(e.ip, e.mac)
            self._arm(e, self.retrans_time)

    # -- input ---------------------------------------------------------------------------
    def update(self, ip: bytes, mac: bytes, *, confirmed: bool, override: bool = True,
               create: bool = True) -> None:
        """Record that ``ip`` is at ``mac``.

        ``confirmed``: a reply to our solicitation (ARP reply, solicited NA) — REACHABLE.
        Otherwise (a request or unsolicited advertisement) the entry becomes STALE if new or
        changed (RFC 4861 §7.2.3, §7.2.5).  ``create=False`` only updates an existing entry.
        """
        e = self.entries.get(ip)
        if e is None:
            if not create:
                return
            e = self._new_entry(ip)
            e.mac = mac
            self._enter(e, NudState.REACHABLE if confirmed else NudState.STALE,
                        self.reachable_time if confirmed else None)
            return
        if e.state == NudState.STATIC:
            return
        if e.state == NudState.INCOMPLETE:
            e.mac = mac
            self._enter(e, NudState.REACHABLE if confirmed else NudState.STALE,
                        self.reachable_time if confirmed else None)
            queue, e.queue = e.queue, deque()
            e.queued_bytes = 0
            for buf, off in queue:
                self._transmit(mac, buf, off)
            return
        if mac != e.mac:
            if not override and confirmed:
                # RFC 4861 §7.2.5: a solicited NA without override does not replace the address
                if e.state == NudState.REACHABLE:
                    self._enter(e, NudState.STALE, None)
                return
            e.mac = mac
            self._enter(e, NudState.REACHABLE if confirmed else NudState.STALE,
                        self.reachable_time if confirmed else None)
        elif confirmed:
            self._enter(e, NudState.REACHABLE, self.reachable_time)

    def add_static(self, ip: bytes, mac: bytes) -> None:
        e = self.entries.get(ip) or self._new_entry(ip)
        was_incomplete = e.state == NudState.INCOMPLETE and e.mac is None
        e.mac = mac
        self._enter(e, NudState.STATIC, None)
        if was_incomplete:
            queue, e.queue = e.queue, deque()
            for buf, off in queue:
                self._transmit(mac, buf, off)

    def lookup(self, ip: bytes) -> bytes | None:
        e = self.entries.get(ip)
        return e.mac if e is not None else None

    def state(self, ip: bytes) -> NudState | None:
        e = self.entries.get(ip)
        return e.state if e is not None else None

    def clear(self) -> None:
        for ip, e in list(self.entries.items()):
            self._delete(ip, e)

    def __len__(self) -> int:
        return len(self.entries)
