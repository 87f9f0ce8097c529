"""A link wrapper that records every frame to a libpcap file.

Theory of operation
-------------------
``pcap(inner, path)`` returns a ``PcapLink`` that behaves exactly like ``inner`` (same MTU, L2/L3,
MAC, polling and wake-ups) while writing each frame it *sends* and each frame it *delivers* to a
classic libpcap capture file, readable by tcpdump, Wireshark/tshark and scapy.

File format: the classic pcap layout — a 24-byte global header followed by one 16-byte record
header plus the (possibly truncated to ``snaplen``) frame bytes per packet.  We write the
nanosecond-resolution variant (magic ``0xa1b23c4d``, little-endian) because stacks driven by a
manual clock produce sub-microsecond timestamps.  The link type is ``LINKTYPE_ETHERNET`` (1) for
an L2 link and ``LINKTYPE_RAW`` (101, bare IPv4/IPv6) for an L3 link.  Timestamps are the clock
handed to ``attach`` (seconds as a float), so a capture of a simulated run shows simulated time.

Checksums: the stack leaves transport checksums unfilled on a link advertising
``tx_checksum_offload``; a capture of such frames would show them all as bad.  So ``PcapLink.caps``
is the inner link's caps with ``tx_checksum_offload=False`` — the stack then fills checksums and the
capture is valid.  ``rx_checksum_trusted`` is passed through unchanged.

The file is opened (and its header written) when the wrapper is constructed, and flushed and
closed by ``close()``, which also closes the inner link.  Inbound frames are recorded by wrapping
the receiver handed to ``attach``; outbound frames are recorded before they are passed to
``inner.send`` (which takes ownership of them).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import BinaryIO

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver, deliver_batch

__all__ = ["LINKTYPE_ETHERNET", "LINKTYPE_RAW", "PCAP_MAGIC_NS", "PcapLink", "pcap"]

PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_GLOBAL_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, lt
_RECORD_HEADER = struct.Struct("<IIII")  # ts_sec, ts_nsec, incl_len, orig_len


class _Tap:
    """The receiver handed to the inner link: records each delivered frame, then forwards it."""

    __slots__ = ("_link", "_receiver")

    def __init__(self, link: PcapLink, receiver: LinkReceiver) -> None:
        self._link = link
        self._receiver = receiver

    def link_deliver(self, frame: memoryview) -> None:
        self._link._record(frame)
        self._receiver.link_deliver(frame)

    def link_deliver_batch(self, frames: list[memoryview]) -> None:
        record = self._link._record
        for f in frames:
            record(f)
        deliver_batch(self._receiver, frames)

    def link_wakeup(self, at: float) -> None:
        self._receiver.link_wakeup(at)


class PcapLink(Link):
    """``inner`` plus a capture file (see the module docstring)."""

    def __init__(self, inner: Link, path: str | os.PathLike[str], *, snaplen: int = 262144) -> None:
        if snaplen <= 0:
            raise ValueError(f"snaplen must be positive, not {snaplen!r}")
        self.inner = inner
        self.name = inner.name
        self.path = os.fspath(path)
        self.snaplen = snaplen
        inner_caps = inner.caps
        self._caps = dataclasses.replace(inner_caps, tx_checksum_offload=False)
        self._clock: Clock | None = None
        self._frames = 0
        self._file: BinaryIO | None = open(self.path, "wb", buffering=1 << 16)  # noqa: SIM115
        linktype = LINKTYPE_ETHERNET if inner_caps.l2 else LINKTYPE_RAW
        self._file.write(_GLOBAL_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def __repr__(self) -> str:
        return f"<PcapLink {self.inner!r} -> {self.path!r}>"

    @property
    def caps(self) -> LinkCaps:
        return self._caps

    @property
    def closed(self) -> bool:
        return self._file is None

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self._clock = clock
        self.inner.attach(_Tap(self, receiver), clock)

    def send(self, frame: Frame) -> None:
        self._record(frame)
        self.inner.send(frame)

    def send_gso(self, frame: Frame, gso_size: int) -> None:
        """Record the packets the super-segment becomes on the wire (cut in software, with
        valid checksums), then hand it to ``inner`` whole for its segmentation offload."""
        from aionetstack.link.vnet import segment

        if self._file is not None:
            for piece in segment(frame, 14 if self._caps.l2 else 0, gso_size):
                self._record(piece)
        self.inner.send_gso(frame, gso_size)

    def poll(self) -> float | None:
        return self.inner.poll()

    def close(self) -> None:
        f = self._file
        if f is not None:
            self._file = None
            f.close()
        self.inner.close()

    def flush(self) -> None:
        """Push buffered records to the file (readers then see everything written so far)."""
        if self._file is not None:
            self._file.flush()

    def stats(self) -> dict[str, int]:
        stats = self.inner.stats()
        stats["pcap_frames"] = self._frames
        return stats

    def _record(self, frame: Frame) -> None:
        f = self._file
        if f is None:
            return
        clock = self._clock
        ns = round(clock() * 1e9) if clock is not None else 0
        sec, nsec = divmod(max(ns, 0), 1_000_000_000)
        n = len(frame)
        if n > self.snaplen:
            frame = memoryview(frame)[: self.snaplen]
        f.write(_RECORD_HEADER.pack(sec & 0xFFFFFFFF, nsec, min(n, self.snaplen), n))
        f.write(frame)
        self._frames += 1


def pcap(inner: Link, path: str | os.PathLike[str], *, snaplen: int = 262144) -> PcapLink:
    """Wrap ``inner`` so every frame sent and delivered is also written to the pcap ``path``."""
    return PcapLink(inner, path, snaplen=snaplen)
