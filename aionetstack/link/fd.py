"""A link over a non-blocking file descriptor that carries one frame per read/write.

TUN/TAP devices, AF_PACKET sockets and datagram socketpairs all look like this.  The asyncio
adapter watches ``fileno()`` with ``loop.add_reader`` and calls ``read_ready()``, which reads up
to ``batch`` frames per wake-up (amortising the loop's per-callback cost) and delivers each one.
Writes go straight to the fd; on EAGAIN the frame is queued and the adapter is asked (through
``writer_hook``) to watch for writability, so back-pressure never drops a frame silently: only
when the queue exceeds ``tx_queue_limit`` frames are new frames dropped, and counted.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver


class FdLink(Link):
    def __init__(self, fd: int, caps: LinkCaps, *, name: str = "fd", owns_fd: bool = True,
                 batch: int = 64, read_size: int = 65536 + 64,
                 tx_queue_limit: int = 4096) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._caps = caps
        self.name = name
        self._owns_fd = owns_fd
        self.batch = batch
        self.read_size = read_size
        self.tx_queue_limit = tx_queue_limit
        self._receiver: LinkReceiver | None = None
        self._clock: Clock | None = None
        self._txq: deque[Frame] = deque()
        self.writer_hook: Callable[[bool], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.closed = False
        self._stats = {"rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0,
                       "tx_queued": 0, "tx_dropped_queue": 0, "rx_errors": 0, "tx_errors": 0}

    @property
    def caps(self) -> LinkCaps:
        return self._caps

    def fileno(self) -> int:
        return self._fd

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self._receiver = receiver
        self._clock = clock

    # -- output ----------------------------------------------------------------------------
    def send(self, frame: Frame) -> None:
        if self.closed:
            return
        st = self._stats
        if self._txq:
            self._enqueue(frame)
            return
        try:
            os.write(self._fd, frame)
        except BlockingIOError:
            self._enqueue(frame)
            if self.writer_hook is not None:
                self.writer_hook(True)
            return
        except OSError as exc:
            st["tx_errors"] += 1
            if exc.errno in (errno.EBADF, errno.ENODEV):
                self.close()
            return
        st["tx_frames"] += 1
        st["tx_bytes"] += len(frame)

    def _enqueue(self, frame: Frame) -> None:
        if len(self._txq) >= self.tx_queue_limit:
            self._stats["tx_dropped_queue"] += 1
            return
        self._stats["tx_queued"] += 1
        self._txq.append(frame)

    def write_ready(self) -> None:
        """The fd is writable: flush the queue; stop watching once it is empty."""
        q = self._txq
        st = self._stats
        while q:
            frame = q[0]
            try:
                os.write(self._fd, frame)
            except BlockingIOError:
                return
            except OSError:
                st["tx_errors"] += 1
            else:
                st["tx_frames"] += 1
                st["tx_bytes"] += len(frame)
            q.popleft()
        if self.writer_hook is not None:
            self.writer_hook(False)

    # -- input -----------------------------------------------------------------------------
    def read_ready(self) -> None:
        """The fd is readable: read and deliver up to ``batch`` frames."""
        r = self._receiver
        st = self._stats
        fd = self._fd
        size = self.read_size
        for _ in range(self.batch):
            if self.closed:
                return
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                return
            except OSError as exc:
                st["rx_errors"] += 1
                if exc.errno in (errno.EBADF, errno.ENODEV, errno.EIO):
                    self.close()
                return
            if not data:
                return
            st["rx_frames"] += 1
            st["rx_bytes"] += len(data)
            if r is not None:
                r.link_deliver(self._strip(memoryview(data)))

    def _strip(self, frame: memoryview) -> memoryview:
        return frame

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._txq.clear()
        if self.on_close is not None:
            self.on_close()
        if self._owns_fd:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def stats(self) -> dict[str, int]:
        return dict(self._stats)
