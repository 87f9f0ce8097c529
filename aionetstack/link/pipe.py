"""An in-memory point-to-point link with seeded, deterministic impairments.

Theory of operation
-------------------
``pipe()`` returns two connected ends.  Each direction (a→b and b→a) is independent: it has its
own impairment random stream, its own rate limiter and its own in-flight store, which lives on the
receiving end.  Nothing is ever delivered from inside ``send``: a frame sent at time ``t`` is
given an arrival time and stored; the receiving end hands it to its receiver from ``poll()`` once
the receiver's clock reaches that time.  That makes re-entrancy trivial (a receiver may reply from
``link_deliver``) and keeps runs reproducible under a manual clock.

Per frame, in this order, a direction applies:

1. ``close`` — a closed pipe drops everything (``dropped_closed``).
2. MTU — frames longer than ``mtu`` (``mtu + 14`` on an L2 pipe) are dropped (``dropped_mtu``).
3. rate — with ``rate`` (bytes/second) frames are serialised one after another:
   ``departure = max(now, busy_until) + len / rate``.  ``queue_limit`` bounds the bytes not yet
   serialised (the frame being transmitted included); a frame that would exceed it is dropped
   (drop-tail, ``dropped_queue``), except that a frame reaching an idle link is always accepted.
   Without ``rate`` the departure time is ``now``.
4. loss — with probability ``loss`` the frame is lost on the wire (``dropped_loss``); it has
   already consumed its share of the rate limiter, as a real lost frame would.
5. corrupt — with probability ``corrupt`` 1-3 distinct random bits of one random 16-bit word
   (at an even offset) are flipped in a copy of the frame (``corrupted``).  Keeping the damage in
   one aligned word makes it detectable by every Internet checksum (RFC 1071): flips in two words
   at the same bit position and in opposite directions cancel out and would slip through.  A
   corrupting pipe advertises neither checksum offload nor trusted checksums, so the stack fills
   and verifies checksums and sees the damage.
6. delay — ``arrival = departure + max(0, delay + uniform(-jitter, +jitter))``; then
   ``arrival = max(arrival, last_arrival)`` so jitter alone never reorders (FIFO, like a wire).
7. reorder — with probability ``reorder`` the frame is held back an extra ``reorder_delay``
   (default ``max(delay, 0.001)``) after its in-order arrival, without moving ``last_arrival``,
   so frames sent after it may overtake it (``reordered``).
8. duplicate — with probability ``duplicate`` a second copy arrives right after the first
   (``duplicated``).

Random draws happen only for impairments that are enabled, in the order above, from the
direction's own ``random.Random`` derived from ``seed``: the same seed and the same sequence of
sends gives the same deliveries at the same times.

In-flight frames live in a heap of ``(arrival, seq, frame)`` per direction; ``seq`` keeps equal
arrival times FIFO.  A pipe with no impairment at all (no delay, jitter, rate, queue limit, loss,
corruption, duplication or reordering) uses a plain ``deque`` instead: every frame is due the
moment it is sent, so the send path is a length check, two counter updates and an append.

Wake-ups: when a send creates a new earliest pending arrival at the receiving end, that end's
receiver gets ``link_wakeup(arrival)``; the stack then calls ``poll()`` at or after that time.
``poll()`` delivers every frame due by the receiving end's clock, in arrival order, and returns
the next pending arrival (or ``None``).  Frames sent towards an end that is not attached yet are
kept and delivered after it attaches (``attach`` issues a wake-up if frames are waiting).

Segmentation offload (``gso=True``, off by default): the ends advertise ``gso_max_size`` 65535
and take ``send_gso(frame, gso_size)``, one TCP or UDP packet larger than the MTU.  An unimpaired
pipe hands a TCP super-segment to the peer whole, as a veth pair with GRO does (the TCP engine
takes any segment size; it counts as one frame); every other case (UDP, whose pieces are
datagrams of their own, or any impairment, which acts per wire frame) is cut into MTU-sized
packets with ``link.vnet.segment`` and each piece is sent as a frame of its own.

Statistics are per end: ``tx_*`` and every drop/impairment counter describe frames *sent* by this
end; ``rx_*`` count frames *delivered* to this end's receiver.
"""

from __future__ import annotations

import os
import random
from collections import deque
from heapq import heappop, heappush

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver, deliver_batch
from aionetstack.link.vnet import locate_l4, segment
from aionetstack.wire.checksum import PROTO_TCP

__all__ = ["PipeEnd", "pipe"]

_ETH_HEADER = 14


class _Impairments:
    """The impairment settings of a pipe (shared by both directions, read-only)."""

    __slots__ = (
        "corrupt",
        "delay",
        "duplicate",
        "jitter",
        "loss",
        "queue_limit",
        "rate",
        "reorder",
        "reorder_delay",
    )

    def __init__(
        self,
        *,
        loss: float,
        duplicate: float,
        reorder: float,
        reorder_delay: float,
        delay: float,
        jitter: float,
        rate: float | None,
        queue_limit: int | None,
        corrupt: float,
    ) -> None:
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.delay = delay
        self.jitter = jitter
        self.rate = rate
        self.queue_limit = queue_limit
        self.corrupt = corrupt


class PipeEnd(Link):
    """One end of an in-memory pipe (see the module docstring)."""

    __slots__ = (
        "_busy_until",
        "_caps",
        "_clock",
        "_closed",
        "_fifo",
        "_heap",
        "_imp",
        "_last_arrival",
        "_max_frame",
        "_peer",
        "_receiver",
        "_rng",
        "_rx_bytes",
        "_rx_frames",
        "_seq",
        "_stats",
        "_tx_bytes",
        "_tx_frames",
        "name",
    )

    def __init__(
        self,
        name: str,
        caps: LinkCaps,
        imp: _Impairments | None,
        rng: random.Random,
    ) -> None:
        self.name = name
        self._caps = caps
        self._imp = imp  # None: the deque fast path
        self._rng = rng  # the random stream of frames *sent* by this end
        self._max_frame = caps.mtu + (_ETH_HEADER if caps.l2 else 0)
        self._peer: PipeEnd = self
        self._receiver: LinkReceiver | None = None
        self._clock: Clock | None = None
        self._closed = False
        # inbound frames (sent by the peer, not yet delivered here)
        self._fifo: deque[Frame] = deque()
        self._heap: list[tuple[float, int, Frame]] = []
        # outbound direction state (this end → peer)
        self._seq = 0
        self._last_arrival = float("-inf")
        self._busy_until = float("-inf")
        # hot counters live in slots, the rare ones in a dict
        self._tx_frames = 0
        self._tx_bytes = 0
        self._rx_frames = 0
        self._rx_bytes = 0
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "dropped_loss",
                "dropped_queue",
                "dropped_mtu",
                "dropped_closed",
                "duplicated",
                "reordered",
                "corrupted",
            ),
            0,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PipeEnd {self.name} {state} pending={self.pending}>"

    # -- Link API -------------------------------------------------------------------------------

    @property
    def caps(self) -> LinkCaps:
        return self._caps

    @property
    def peer(self) -> PipeEnd:
        """The other end of the pipe."""
        return self._peer

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Inbound frames in flight towards this end (sent by the peer, not yet delivered)."""
        return len(self._fifo) + len(self._heap)

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self._receiver = receiver
        self._clock = clock
        if self._closed:
            return
        if self._fifo:
            receiver.link_wakeup(clock())
        elif self._heap:
            receiver.link_wakeup(self._heap[0][0])

    def send(self, frame: Frame) -> None:
        clock = self._clock
        if clock is None:
            raise RuntimeError(f"{self.name}: send() before attach()")
        if self._closed:
            self._stats["dropped_closed"] += 1
            return
        n = len(frame)
        self._tx_frames += 1
        self._tx_bytes += n
        if n > self._max_frame:
            self._stats["dropped_mtu"] += 1
            return
        peer = self._peer
        if self._imp is None:
            fifo = peer._fifo
            fifo.append(frame)
            if len(fifo) == 1 and peer._receiver is not None:
                peer._receiver.link_wakeup(clock())
            return
        self._send_impaired(frame, n, clock())

    def send_many(self, frames: list[bytearray]) -> None:
        """Send ``frames`` in order (the pieces of a software-segmented packet): one queue
        extension for the lot when the pipe is unimpaired and every frame fits."""
        clock = self._clock
        peer = self._peer
        if (self._imp is not None or clock is None or self._closed
                or max(map(len, frames), default=0) > self._max_frame):
            for f in frames:
                self.send(f)
            return
        self._tx_frames += len(frames)
        self._tx_bytes += sum(map(len, frames))
        fifo = peer._fifo
        was_empty = not fifo
        fifo.extend(frames)
        if was_empty and fifo and peer._receiver is not None:
            peer._receiver.link_wakeup(clock())

    def send_gso(self, frame: Frame, gso_size: int) -> None:
        """Send one TCP or UDP packet larger than the MTU whose payload a real link would cut
        into ``gso_size``-byte pieces (see the module docstring)."""
        if not self._caps.gso_max_size:
            raise RuntimeError(f"{self.name}: send_gso() on a pipe without gso=True")
        l3 = _ETH_HEADER if self._caps.l2 else 0
        n = len(frame)
        if self._imp is None and not self._closed and n <= l3 + self._caps.gso_max_size:
            info = locate_l4(frame, l3)
            if info is not None and info.protocol == PROTO_TCP and self._clock is not None:
                self._tx_frames += 1
                self._tx_bytes += n
                peer = self._peer
                fifo = peer._fifo
                fifo.append(frame)
                if len(fifo) == 1 and peer._receiver is not None:
                    peer._receiver.link_wakeup(self._clock())
                return
        self.send_many(segment(frame, l3, gso_size))

    def _send_impaired(self, frame: Frame, n: int, now: float) -> None:
        imp = self._imp
        assert imp is not None
        rng = self._rng
        stats = self._stats
        # 3. rate limiter (serialisation) and drop-tail queue
        rate = imp.rate
        if rate is not None:
            start = self._busy_until
            if start > now:
                limit = imp.queue_limit
                if limit is not None and int((start - now) * rate + 0.5) + n > limit:
                    stats["dropped_queue"] += 1
                    return
            else:
                start = now
            departure = self._busy_until = start + n / rate
        else:
            departure = now
        # 4. loss
        if imp.loss and rng.random() < imp.loss:
            stats["dropped_loss"] += 1
            return
        # 5. corruption (on a private copy)
        if imp.corrupt and rng.random() < imp.corrupt and n:
            buf = bytearray(frame)
            # 1-3 bits of one 16-bit word (at an even offset): damage every Internet
            # checksum detects; flips spread over two words can cancel out (RFC 1071)
            word = rng.randrange((n + 1) >> 1) << 1
            width = 16 if word + 1 < n else 8
            for bit in rng.sample(range(width), rng.randint(1, 3)):
                buf[word + (bit >> 3)] ^= 1 << (bit & 7)
            frame = buf
            stats["corrupted"] += 1
        # 6. delay, jitter, FIFO
        delay = imp.delay
        if imp.jitter:
            delay += rng.uniform(-imp.jitter, imp.jitter)
            if delay < 0.0:
                delay = 0.0
        arrival = departure + delay
        if arrival < self._last_arrival:
            arrival = self._last_arrival
        # 7. reordering: hold this frame back without moving the FIFO floor
        if imp.reorder and rng.random() < imp.reorder:
            arrival += imp.reorder_delay
            stats["reordered"] += 1
        else:
            self._last_arrival = arrival
        # 8. duplication
        dup = bool(imp.duplicate) and rng.random() < imp.duplicate
        peer = self._peer
        heap = peer._heap
        seq = self._seq
        entry = (arrival, seq, frame)
        heappush(heap, entry)
        if dup:
            heappush(heap, (arrival, seq + 1, bytes(frame)))
            stats["duplicated"] += 1
            self._seq = seq + 2
        else:
            self._seq = seq + 1
        if heap[0] is entry and peer._receiver is not None:
            peer._receiver.link_wakeup(arrival)

    def poll(self) -> float | None:
        receiver = self._receiver
        clock = self._clock
        if receiver is None or clock is None or self._closed:
            return None
        fifo = self._fifo
        if fifo:
            # Everything in the FIFO was due when it was sent.  Deliver what is there now, as
            # one batch (the receiver may merge TCP segments: GRO); frames queued by re-entrant
            # sends during delivery are due immediately.
            batch: list[memoryview] = [memoryview(f) for f in fifo]
            fifo.clear()
            self._deliver(receiver, batch)
            if self._closed:
                return None
            if fifo:
                return clock()
        heap = self._heap
        if heap:
            now = clock()
            batch = []
            while heap and heap[0][0] <= now:
                batch.append(memoryview(heappop(heap)[2]))
            if batch:
                self._deliver(receiver, batch)
                if self._closed:
                    return None
            if heap:
                return heap[0][0]
        return None

    def _deliver(self, receiver: LinkReceiver, batch: list[memoryview]) -> None:
        if len(batch) > 1 and hasattr(receiver, "link_deliver_batch"):
            self._rx_frames += len(batch)
            self._rx_bytes += sum(map(len, batch))
            deliver_batch(receiver, batch)
            return
        for i, frame in enumerate(batch):  # one by one: a receiver closing the pipe drops the rest
            if self._closed:
                self._peer._stats["dropped_closed"] += len(batch) - i
                return
            self._rx_frames += 1
            self._rx_bytes += len(frame)
            receiver.link_deliver(frame)

    def close(self) -> None:
        """Close the pipe (both ends): frames in flight and frames sent later are dropped."""
        for end in (self, self._peer):
            if end._closed:
                continue
            end._closed = True
            # frames in flight towards ``end`` were sent by its peer
            end._peer._stats["dropped_closed"] += len(end._fifo) + len(end._heap)
            end._fifo.clear()
            end._heap.clear()

    def stats(self) -> dict[str, int]:
        return {
            "tx_frames": self._tx_frames,
            "tx_bytes": self._tx_bytes,
            "rx_frames": self._rx_frames,
            "rx_bytes": self._rx_bytes,
            **self._stats,
        }


def _mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC address."""
    mac = bytearray(rng.getrandbits(48).to_bytes(6, "big"))
    mac[0] = (mac[0] & 0xFC) | 0x02
    return bytes(mac)


def pipe(
    *,
    l2: bool = False,
    mtu: int = 1500,
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    reorder_delay: float | None = None,
    delay: float = 0.0,
    jitter: float = 0.0,
    rate: float | None = None,
    queue_limit: int | None = None,
    corrupt: float = 0.0,
    seed: int | None = None,
    macs: tuple[bytes, bytes] | None = None,
    name: str = "pipe",
    gso: bool = False,
) -> tuple[PipeEnd, PipeEnd]:
    """Create a connected pair of in-memory link ends.

    ``l2`` selects Ethernet frames (each end gets a MAC) or bare IP packets.  ``mtu`` is the IP
    MTU.  ``loss``, ``duplicate``, ``reorder`` and ``corrupt`` are per-frame probabilities;
    ``delay`` and ``jitter`` (seconds) set the one-way latency, ``reorder_delay`` how long a
    reordered frame is held back; ``rate`` (bytes/second) serialises frames and ``queue_limit``
    (bytes) bounds the rate limiter's queue.  ``seed`` makes MACs and impairments reproducible.
    ``gso`` offers segmentation offload (``send_gso``, ``caps.gso_max_size``).
    """
    for pname, p in (
        ("loss", loss),
        ("duplicate", duplicate),
        ("reorder", reorder),
        ("corrupt", corrupt),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{pname} must be a probability in [0, 1], not {p!r}")
    if mtu < 68:
        raise ValueError(f"mtu must be at least 68, not {mtu!r}")
    if delay < 0 or jitter < 0:
        raise ValueError("delay and jitter must not be negative")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    if queue_limit is not None and queue_limit < 0:
        raise ValueError(f"queue_limit must not be negative, not {queue_limit!r}")
    if reorder_delay is None:
        reorder_delay = max(delay, 0.001)
    elif reorder_delay < 0:
        raise ValueError(f"reorder_delay must not be negative, not {reorder_delay!r}")

    master = random.Random(int.from_bytes(os.urandom(16)) if seed is None else seed)
    if macs is None:
        mac_a = _mac(master)
        mac_b = _mac(master)
        while mac_b == mac_a:
            mac_b = _mac(master)
    else:
        mac_a, mac_b = (bytes(m) for m in macs)
        if len(mac_a) != 6 or len(mac_b) != 6:
            raise ValueError("macs must be two 6-byte MAC addresses")
    rng_a = random.Random(master.getrandbits(64))
    rng_b = random.Random(master.getrandbits(64))

    impaired = bool(loss or duplicate or reorder or corrupt or delay or jitter) or (
        rate is not None or queue_limit is not None
    )
    imp = (
        _Impairments(
            loss=loss,
            duplicate=duplicate,
            reorder=reorder,
            reorder_delay=reorder_delay,
            delay=delay,
            jitter=jitter,
            rate=rate,
            queue_limit=queue_limit,
            corrupt=corrupt,
        )
        if impaired
        else None
    )
    intact = corrupt == 0.0

    def caps(mac: bytes) -> LinkCaps:
        return LinkCaps(
            mtu=mtu,
            l2=l2,
            mac=mac,
            tx_checksum_offload=intact,
            rx_checksum_trusted=intact,
            gso_max_size=65535 if gso else 0,
        )

    a = PipeEnd(f"{name}.a", caps(mac_a), imp, rng_a)
    b = PipeEnd(f"{name}.b", caps(mac_b), imp, rng_b)
    a._peer = b
    b._peer = a
    return a, b
