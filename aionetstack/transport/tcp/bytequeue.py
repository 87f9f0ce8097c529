"""``ByteQueue``: a FIFO of bytes kept as a list of chunks, for the TCP send and receive buffers.

One ``bytearray`` used as a FIFO (append at the end, delete at the front) costs more than its
bytes: every append past the allocation reallocates and copies everything still queued, and
emptying it gives the memory back to ``malloc``, which a busy connection then asks for again
(fresh pages, page faults).  Here the queue is a list of chunks:

* a large immutable chunk (``bytes``, or a read-only view of one) is kept by reference: data an
  application writes is not copied into the send buffer at all, and a received segment's
  payload is copied once, into a ``bytes`` that ``read`` can then hand out whole;
* a large mutable one (``bytearray``, a writable view) is copied into a ``bytes`` once, since
  its owner may change it after ``append`` returns;
* small pieces (under ``SMALL`` bytes) are gathered into a ``bytearray`` tail, so a stream of
  one-byte segments costs one byte each plus a little, not a Python object each.

``view(off, n)`` gives the bytes at ``off``: a zero-copy ``memoryview`` of one chunk when they
lie in it, else a copy (across chunks, or out of the mutable tail, whose views must not outlive
the call: a view would pin its size).  ``pop(n)`` and ``drop(n)`` take from the front.
"""

from __future__ import annotations

from typing import Final

#: Pieces shorter than this are gathered into a ``bytearray`` tail.
SMALL: Final = 2048
#: A tail stops growing (a new one starts) at this size.
TAIL_MAX: Final = 65536

Chunk = bytes | bytearray | memoryview


class Pieces:
    """Bytes that span chunks of a queue, as zero-copy views of them (``ByteQueue.pieces``):
    a segment's payload that the packet builder copies piece by piece, with no joined copy
    made first.  ``len`` is the number of bytes; ``bytes()`` joins them."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: list[memoryview], nbytes: int) -> None:
        self.parts = parts
        self.nbytes = nbytes

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


class ByteQueue:
    """``nbytes`` (read-only outside) is ``len(queue)``, without the call: the TCP sender and
    receiver read it for every segment."""

    __slots__ = ("_chunks", "_head", "nbytes")

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self._head = 0  # bytes of _chunks[0] already taken
        self.nbytes = 0

    def __len__(self) -> int:
        return self.nbytes

    def __bool__(self) -> bool:
        return self.nbytes > 0

    def __bytes__(self) -> bytes:
        return self.peek(-1)

    def __repr__(self) -> str:
        return f"<ByteQueue {self.nbytes} bytes in {len(self._chunks)} chunks>"

    # -- adding -----------------------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (kept by reference if it is immutable and large, else copied)."""
        n = len(data)
        if not n:
            return
        chunks = self._chunks
        self.nbytes += n
        if n < SMALL:
            if chunks:
                last = chunks[-1]
                if type(last) is bytearray and len(last) < TAIL_MAX:
                    last += data
                    return
            chunks.append(bytearray(data))
            return
        if type(data) is bytes:
            chunks.append(data)
        elif isinstance(data, memoryview) and data.readonly and isinstance(data.obj, bytes):
            chunks.append(data if data.c_contiguous and data.itemsize == 1 else bytes(data))
        else:
            chunks.append(bytes(data))

    # -- looking -----------------------------------------------------------------------------
    def view(self, off: int, n: int) -> bytes | memoryview:
        """The ``n`` bytes at offset ``off`` (both within the queue)."""
        v = self.pieces(off, n)
        return bytes(v) if isinstance(v, Pieces) else v

    def pieces(self, off: int, n: int) -> bytes | memoryview | Pieces:
        """Like ``view``, but bytes that span immutable chunks come as ``Pieces`` (views of
        them, valid until the queue changes) rather than joined into a copy."""
        if n <= 0:
            return b""
        pos = off + self._head
        chunks = self._chunks
        i = 0
        c = chunks[0]
        lc = len(c)
        while pos >= lc:
            pos -= lc
            i += 1
            c = chunks[i]
            lc = len(c)
        if pos + n <= lc:
            if type(c) is bytearray:
                return bytes(memoryview(c)[pos:pos + n])
            return memoryview(c)[pos:pos + n]
        parts = [memoryview(c)[pos:]]
        mutable = type(c) is bytearray
        need = n - (lc - pos)
        while need > 0:
            i += 1
            c = chunks[i]
            lc = len(c)
            mutable = mutable or type(c) is bytearray
            parts.append(memoryview(c)[:need] if need < lc else memoryview(c))
            need -= lc
        if mutable:  # a view of the mutable tail must not outlive the call
            return b"".join(parts)
        return Pieces(parts, n)

    def peek(self, n: int) -> bytes:
        """A copy of the first ``min(n, len)`` bytes (all of them with ``n < 0``)."""
        if n < 0 or n > self.nbytes:
            n = self.nbytes
        return bytes(self.view(0, n))

    # -- taking ------------------------------------------------------------------------------
    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (``n <= len``)."""
        if n <= 0:
            return
        chunks = self._chunks
        if n == self.nbytes:  # everything (an ACK of all data in flight, typically)
            chunks.clear()
            self._head = self.nbytes = 0
            return
        self.nbytes -= n
        head = self._head + n
        k = 0
        while k < len(chunks) and head >= len(chunks[k]):
            head -= len(chunks[k])
            k += 1
        if k:
            del chunks[:k]
        self._head = head

    def pop(self, n: int) -> bytes:
        """Take the first ``min(n, len)`` bytes (all of them with ``n < 0``)."""
        if n < 0 or n > self.nbytes:
            n = self.nbytes
        chunks = self._chunks
        if not n:
            return b""
        first = chunks[0]
        if self._head == 0 and len(first) == n:
            # a whole chunk: no copy when it is a bytes (a received segment, typically)
            del chunks[0]
            self.nbytes -= n
            return first if type(first) is bytes else bytes(first)
        out = bytes(self.view(0, n))
        self.drop(n)
        return out

    def pop_chunk(self, n: int) -> bytes:
        """Take at most ``n`` bytes but no more than the first chunk holds, when that is large
        (``>= SMALL``): no copy for a whole ``bytes`` chunk.  Small chunks are gathered up to
        ``n`` bytes as ``pop`` does."""
        chunks = self._chunks
        if not chunks:
            return b""
        first = chunks[0]
        left = len(first) - self._head
        if left >= SMALL and (n < 0 or n >= left):
            return self.pop(left)
        return self.pop(n)

    def pop_into(self, out: bytearray | memoryview) -> int:
        """Move up to ``len(out)`` bytes into ``out``; returns how many."""
        n = min(len(out), self.nbytes)
        if n <= 0:
            return 0
        dst = memoryview(out)
        done = 0
        chunks = self._chunks
        head = self._head
        k = 0
        while done < n:
            c = chunks[k]
            take = min(len(c) - head, n - done)
            dst[done:done + take] = memoryview(c)[head:head + take]
            done += take
            head += take
            if head == len(c):
                head = 0
                k += 1
        del chunks[:k]
        self._head = head
        self.nbytes -= n
        return n

    def clear(self) -> None:
        self._chunks.clear()
        self._head = 0
        self.nbytes = 0
