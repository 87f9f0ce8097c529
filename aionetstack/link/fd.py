"""A link over a non-blocking file descriptor that carries one frame per read/write.

TUN/TAP devices, AF_PACKET sockets and datagram socketpairs all look like this.  The asyncio
adapter watches ``fileno()`` with ``loop.add_reader`` and calls ``read_ready()``, which reads up
to ``batch`` frames per wake-up (amortising the loop's per-callback cost) and delivers each one.
Writes go straight to the fd; on EAGAIN the frame is queued and the adapter is asked (through
``writer_hook``) to watch for writability, so back-pressure never drops a frame silently: only
when the queue exceeds ``tx_queue_limit`` frames are new frames dropped, and counted.

Subclasses adapt the framing through three hooks: ``_frame_out(frame)`` turns an outbound frame
into what is written (a buffer, or a list of buffers written with one ``writev``, e.g. a
virtio_net_hdr plus the frame), ``_read(fd, size)`` reads one frame (returning ``None`` for a
frame to skip, e.g. a packet socket's echo of an outgoing frame) and ``_rx(data)`` delivers it
(e.g. stripping a header or splitting a super-packet).

Request/response traffic is not made to wait for the batch: after a wake-up that found
exactly one frame (``quiet``), the adapter calls ``read_one()`` first, which reads and delivers a
single frame, so a reply the stack makes (an echo reply, a SYN-ACK, an ACK) is written before
the read that would only have said EAGAIN; the rest is read with ``read_rest()`` once the tasks
that frame woke have run.  A wake-up that finds several frames leaves quiet mode and reads in
batches again, so bulk traffic keeps its merging.

``fd(fd, l2=..., mtu=...)`` wraps any datagram or seqpacket fd (a ``socketpair`` to another
process, a connected UDP socket) as a link.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable

from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver, deliver_batch
from aionetstack.link.vnet import VnetCodec, deliver_frames, segment

TxItem = Frame | list[Frame]  # one frame, or the pieces of one frame for writev


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
        self._txq: deque[TxItem] = deque()
        self.writer_hook: Callable[[bool], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.closed = False
        # the last wake-up found exactly one frame: read one and deliver it before the next
        # read (see the module docstring); ``more``: ``read_one`` stopped before EAGAIN
        self.quiet = True
        self.more = False
        self._plain_rx, self._plain_tx = self._is_plain()
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
        if self._plain_tx and not self._txq:
            # the common case inlined (``_put`` of an unwrapped frame): one frame per segment
            # the stack sends, so its Python calls count
            try:
                os.write(self._fd, frame)
            except OSError as exc:
                self._write_failed(frame, exc)
                return
            st = self._stats
            st["tx_frames"] += 1
            st["tx_bytes"] += len(frame)
            return
        self._put(self._frame_out(frame))

    def _frame_out(self, frame: Frame) -> TxItem:
        """What to write for ``frame`` (hook: e.g. prefix a header)."""
        return frame

    def send_many(self, frames: list[bytearray]) -> None:
        if self.closed:
            return
        if not self._plain_tx or self._txq:
            for f in frames:
                self._put(self._frame_out(f))
            return
        write = os.write
        fd = self._fd
        nbytes = 0
        for i, f in enumerate(frames):
            try:
                write(fd, f)
            except OSError as exc:
                self._count_tx(i, nbytes)
                self._write_failed(f, exc)
                for rest in frames[i + 1:]:  # behind the queue, or written if it is empty
                    self._put(rest)
                return
            nbytes += len(f)
        self._count_tx(len(frames), nbytes)

    def _count_tx(self, frames: int, nbytes: int) -> None:
        st = self._stats
        st["tx_frames"] += frames
        st["tx_bytes"] += nbytes

    def _is_plain(self) -> tuple[bool, bool]:
        """Whether frames are read and written as they are (no hooks at work): (rx, tx)."""
        cls = type(self)
        return (cls._read is FdLink._read and cls._rx is FdLink._rx,
                cls._frame_out is FdLink._frame_out and cls._write is FdLink._write)

    def _write(self, item: TxItem) -> None:
        if isinstance(item, list):
            os.writev(self._fd, item)
        else:
            os.write(self._fd, item)

    def _put(self, item: TxItem) -> None:
        st = self._stats
        if self._txq:
            self._enqueue(item)
            return
        try:
            self._write(item)
        except OSError as exc:
            self._write_failed(item, exc)
            return
        st["tx_frames"] += 1
        st["tx_bytes"] += _size(item)

    def _write_failed(self, item: TxItem, exc: OSError) -> None:
        """A write of ``item`` with an empty queue failed: a full fd (EAGAIN) queues it and
        asks to be told when it is writable; an error counts it lost, and closes the link when
        the fd is gone."""
        if isinstance(exc, (BlockingIOError, InterruptedError)):
            self._enqueue(item)
            if self.writer_hook is not None:
                self.writer_hook(True)
            return
        self._stats["tx_errors"] += 1
        if exc.errno in (errno.EBADF, errno.ENODEV):
            self.close()

    def _enqueue(self, item: TxItem) -> None:
        if len(self._txq) >= self.tx_queue_limit:
            self._stats["tx_dropped_queue"] += 1
            return
        self._stats["tx_queued"] += 1
        self._txq.append(item)

    def write_ready(self) -> None:
        """The fd is writable: flush the queue; stop watching once it is empty."""
        q = self._txq
        st = self._stats
        while q:
            item = q[0]
            try:
                self._write(item)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                st["tx_errors"] += 1
            else:
                st["tx_frames"] += 1
                st["tx_bytes"] += _size(item)
            q.popleft()
        if self.writer_hook is not None:
            self.writer_hook(False)

    # -- input -----------------------------------------------------------------------------
    def read_ready(self) -> None:
        """The fd is readable: read up to ``batch`` frames, then deliver them as one batch
        (``deliver_batch``: the NIC merges TCP segments of a flow, software GRO).  One frame
        puts the link in quiet mode, several take it out; a wake-up that found nothing (the
        frames were read already) says nothing and leaves the mode as it was."""
        n = self._read_deliver(self.batch)
        if n:
            self.quiet = n == 1

    def read_one(self) -> None:
        """Quiet mode: read and deliver one frame; ``more`` says whether to ``read_rest``."""
        self.more = False
        receiver = self._receiver
        if not self._plain_rx or self.closed or receiver is None:
            self._read_deliver(1)
            return
        # ``_read_deliver(1)`` inlined for plain frames (one per wake-up of request/response
        # traffic): a batch of one is the receiver's ``link_deliver``
        try:
            data = os.read(self._fd, self.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._read_failed(exc)
            return
        if not data:
            return
        st = self._stats
        st["rx_frames"] += 1
        st["rx_bytes"] += len(data)
        self.more = True
        receiver.link_deliver(memoryview(data))

    def read_rest(self) -> None:
        """After ``read_one``: read and deliver what else came, as one batch; quiet mode
        holds only if nothing had."""
        self.quiet = self._read_deliver(self.batch) == 0

    def _read_deliver(self, limit: int) -> int:
        """Read up to ``limit`` frames (``more`` set when the limit, not EAGAIN, ended it) and
        deliver them; return how many."""
        if self.closed:
            return 0
        frames: list[memoryview] = []
        try:
            self.more = self._read_batch(frames, limit)
        finally:
            if frames and self._receiver is not None and not self.closed:
                deliver_batch(self._receiver, frames)
        return len(frames)

    def _read_batch(self, frames: list[memoryview], limit: int) -> bool:
        """Read up to ``limit`` frames into ``frames``; True when the limit ended it (the fd
        may hold more), False at EAGAIN, end of file or an error."""
        if self._plain_rx:
            return self._read_plain(frames, limit)
        st = self._stats
        fd = self._fd
        size = self.read_size
        read = self._read
        rx = self._rx
        for _ in range(limit):
            try:
                data = read(fd, size)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError as exc:
                self._read_failed(exc)
                return False
            if data is None:
                continue
            if not data:
                return False
            st["rx_frames"] += 1
            st["rx_bytes"] += len(data)
            rx(data, frames)
        return True

    def _read_plain(self, frames: list[memoryview], limit: int) -> bool:
        """``_read_batch`` without hooks: one ``os.read`` per frame, stats added at the end."""
        read = os.read
        fd = self._fd
        size = self.read_size
        nbytes = 0
        n = 0
        more = False
        try:
            for _ in range(limit):
                try:
                    data = read(fd, size)
                except InterruptedError:
                    continue
                if not data:
                    break
                nbytes += len(data)
                n += 1
                frames.append(memoryview(data))
            else:
                more = True
        except BlockingIOError:
            pass
        except OSError as exc:
            self._read_failed(exc)
        st = self._stats
        st["rx_frames"] += n
        st["rx_bytes"] += nbytes
        return more

    def _read_failed(self, exc: OSError) -> None:
        """A read failed (not EAGAIN): count it; a gone fd closes the link."""
        self._stats["rx_errors"] += 1
        if exc.errno in (errno.EBADF, errno.ENODEV, errno.EIO):
            self.close()

    def _read(self, fd: int, size: int) -> bytes | None:
        """Read one frame (hook); ``None`` skips it, ``b""`` ends the batch."""
        return os.read(fd, size)

    def _rx(self, data: bytes, out: list[memoryview]) -> None:
        """Turn one read into the frame(s) to deliver, appended to ``out`` (hook: strip
        headers, split super-packets)."""
        out.append(memoryview(data))

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


def _size(item: TxItem) -> int:
    if isinstance(item, list):
        return sum(len(b) for b in item)
    return len(item)


def fd(fd: int, *, l2: bool = False, mtu: int = 1500, mac: bytes | None = None,
       name: str = "fd", owns_fd: bool = True, batch: int = 64) -> FdLink:
    """A link over any datagram or seqpacket fd: one frame per read and per write.

    ``l2`` frames are Ethernet (a random locally administered MAC unless ``mac`` is given),
    otherwise bare IP packets.  The fd is made non-blocking; the link closes it on close unless
    ``owns_fd`` is false.
    """
    if l2 and mac is None:
        mac = bytes([0x02]) + os.urandom(5)
    return FdLink(fd, LinkCaps(mtu=mtu, l2=l2, mac=mac if l2 else None), name=name,
                  owns_fd=owns_fd, batch=batch)


class VnetFdLink(FdLink):
    """An fd link that may carry a virtio-net header on every frame (TUN/TAP with
    IFF_VNET_HDR, AF_PACKET with PACKET_VNET_HDR): subclasses set ``_vnet`` when the
    header is on, and ``_l2`` to say whether frames start with an Ethernet header."""

    _vnet: VnetCodec | None = None
    _l2 = False

    def _is_plain(self) -> tuple[bool, bool]:
        cls = type(self)
        bare = self._vnet is None
        return (bare and cls._read is FdLink._read,
                bare and cls._write is FdLink._write and cls._frame_out is VnetFdLink._frame_out)

    def _frame_out(self, frame: Frame) -> TxItem:
        vnet = self._vnet
        if vnet is None:
            return frame
        if isinstance(frame, bytes) or (isinstance(frame, memoryview) and frame.readonly):
            frame = bytearray(frame)
        return [vnet.tx_header(frame, 0, self._caps.mtu), frame]

    def send_gso(self, frame: Frame, gso_size: int) -> None:
        """Send one TCP or UDP packet larger than the MTU, to be cut into pieces carrying
        ``gso_size`` payload bytes each (TCP: the MSS; UDP: the datagram size).

        With TSO/USO the kernel segments it; otherwise it is segmented here.
        """
        if self.closed:
            return
        if isinstance(frame, bytes) or (isinstance(frame, memoryview) and frame.readonly):
            frame = bytearray(frame)
        vnet = self._vnet
        if vnet is not None and vnet.can_gso(frame):
            self._put([vnet.tx_header(frame, gso_size), frame])
            return
        pieces = segment(frame, 14 if self._l2 else 0, gso_size)
        if vnet is not None:
            vnet.stats["tx_sw_segmented"] += 1
        for piece in pieces:
            self.send(piece)

    def _rx(self, data: bytes, out: list[memoryview]) -> None:
        deliver_frames(self._vnet, out, data, self._stats)

    def stats(self) -> dict[str, int]:
        st = super().stats()
        if self._vnet is not None:
            st.update(self._vnet.stats)
        return st
