"""The stack's own loopback interface: packets to local addresses never touch a real link.

Sent packets are queued and delivered on the next ``poll`` (scheduled for "now" through
``link_wakeup``), never re-entrantly from ``send``.
"""

from __future__ import annotations

from collections import deque

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver


class LoopbackLink(Link):
    name = "lo"

    def __init__(self, mtu: int = 65536) -> None:
        self._caps = LinkCaps(mtu=mtu, l2=False, tx_checksum_offload=True,
                              rx_checksum_trusted=True)
        self._queue: deque[Frame] = deque()
        self._receiver: LinkReceiver | None = None
        self._clock: Clock | None = None
        self._frames = 0

    @property
    def caps(self) -> LinkCaps:
        return self._caps

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self._receiver = receiver
        self._clock = clock

    def send(self, frame: Frame) -> None:
        if self._receiver is None or self._clock is None:
            return
        self._queue.append(frame)
        if len(self._queue) == 1:
            self._receiver.link_wakeup(self._clock())

    def poll(self) -> float | None:
        q = self._queue
        r = self._receiver
        n = len(q)  # frames queued while delivering wait for the next poll
        while n and q and r is not None:
            n -= 1
            frame = q.popleft()
            self._frames += 1
            r.link_deliver(frame if isinstance(frame, memoryview) else memoryview(frame))
        if q and self._clock is not None:
            return self._clock()
        return None

    def close(self) -> None:
        self._queue.clear()
        self._receiver = None

    def stats(self) -> dict[str, int]:
        return {"rx_frames": self._frames, "tx_frames": self._frames}
