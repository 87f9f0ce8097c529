"""The link contract between a NIC and whatever carries its frames.

A link moves frames; it knows nothing of IP.  An L2 link carries Ethernet II frames (the NIC
resolves neighbours with ARP/NDP), an L3 link carries bare IPv4/IPv6 packets (TUN-style).

Data flow:

* outbound: the NIC calls ``link.send(frame)``.  The link takes ownership of ``frame``; the caller
  never touches it again, so no defensive copy is needed.
* inbound: the link calls ``receiver.link_deliver(frame)`` for each arriving frame, from inside
  ``link.poll()`` (in-memory links, which hold frames until their arrival time) or from the fd
  reader of a device link (asyncio adapter).  A link that gets several frames at once (one fd
  wake-up, one poll) hands them over together with ``deliver_batch(receiver, frames)``, which
  uses the receiver's ``link_deliver_batch`` when it has one (the NIC does: it merges TCP
  segments of a flow, software GRO) and calls ``link_deliver`` for each frame otherwise.
* wake-ups: a link holding frames for a future time calls ``receiver.link_wakeup(at)`` when its
  earliest pending time changes; the stack then calls ``link.poll()`` at (or after) ``at``.

``attach`` hands the link the stack's clock, so links never read system time themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from aionetstack.clock import Clock

Frame = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class LinkCaps:
    """What a link is and what work it does for the stack.

    ``mtu`` is the largest IP packet (L3 payload) the link carries; an L2 link's frames are
    ``mtu + 14`` bytes at most.  ``tx_checksum_offload``: the stack may leave transport
    checksums unfilled on output (the link either guarantees integrity or fills them).
    ``rx_checksum_trusted``: inbound frames cannot be corrupted, so the stack may skip verifying
    checksums.  ``gso_max_size``: largest segment the link accepts for segmentation offload
    (0 = none).
    """

    mtu: int
    l2: bool
    mac: bytes | None = None
    tx_checksum_offload: bool = False
    rx_checksum_trusted: bool = False
    gso_max_size: int = 0


class LinkReceiver(Protocol):
    def link_deliver(self, frame: memoryview) -> None: ...

    def link_wakeup(self, at: float) -> None: ...


def deliver_batch(receiver: LinkReceiver, frames: list[memoryview]) -> None:
    """Hand ``frames`` (arrived together, in order) to ``receiver``: as one batch if it takes
    batches (``link_deliver_batch``), else one by one."""
    batch = getattr(receiver, "link_deliver_batch", None)
    if batch is not None:
        batch(frames)
        return
    for f in frames:
        receiver.link_deliver(f)


class Link(ABC):
    """Base class of every link."""

    name: str = "link"

    @property
    @abstractmethod
    def caps(self) -> LinkCaps: ...

    @abstractmethod
    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        """Start delivering inbound frames to ``receiver``; ``clock`` gives the current time."""

    @abstractmethod
    def send(self, frame: Frame) -> None:
        """Transmit one frame (ownership passes to the link)."""

    def send_many(self, frames: list[bytearray]) -> None:
        """Transmit several frames in order (the pieces of a software-segmented packet); links
        with a cheaper batch path override this."""
        for f in frames:
            self.send(f)

    def send_gso(self, frame: Frame, gso_size: int) -> None:
        """Transmit a TCP/UDP super-segment (IP total length up to 64 KiB) as packets of
        ``gso_size`` payload bytes each.  Links with segmentation offload (``caps.gso_max_size``)
        hand it on whole; this default segments it in software."""
        from aionetstack.link.vnet import segment

        for piece in segment(frame, 14 if self.caps.l2 else 0, gso_size):
            self.send(piece)

    def poll(self) -> float | None:
        """Deliver frames that are due now; return the next time something is due, or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; further ``send`` calls are dropped."""

    def stats(self) -> dict[str, int]:
        return {}
