"""The fd link over a SOCK_SEQPACKET socketpair: two stacks in one process, and a stack in a
child process (no root needed)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap

import pytest

from aionetstack import Stack, link
from aionetstack.link.fd import FdLink

A4, B4 = "198.18.9.1", "198.18.9.2"
A6, B6 = "fd00:9::1", "fd00:9::2"


@pytest.mark.parametrize("l2", [False, True], ids=["l3", "l2"])
async def test_two_stacks_over_a_socketpair(l2: bool) -> None:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a = link.fd(s1.detach(), l2=l2, mtu=1500)
    b = link.fd(s2.detach(), l2=l2, mtu=1500)
    assert isinstance(a, FdLink) and a.caps.l2 == l2 and (a.caps.mac is not None) == l2
    async with Stack() as sa, Stack() as sb:
        sa.add_nic(a, [f"{A4}/24", f"{A6}/64"])
        sb.add_nic(b, [f"{B4}/24", f"{B6}/64"])
        for dst in (B4, B6):
            assert 0 < await sa.ping(dst, timeout=3) < 1
        for dst in (A4, A6):
            assert 0 < await sb.ping(dst, timeout=3, size=4000) < 1  # fragmented both ways
    assert a.closed and b.closed  # the stacks closed their links (and the fds)


async def test_backpressure_queues_instead_of_dropping() -> None:
    """A full socket buffer queues frames (EAGAIN) and flushes them when writable."""
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    s1.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a = link.fd(s1.detach())
    b = link.fd(s2.detach())
    try:
        async with Stack() as sa, Stack() as sb:
            sa.add_nic(a, [f"{A4}/24"])
            sb.add_nic(b, [f"{B4}/24"])
            got: list[bytes] = []

            class Sink(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
                    got.append(data)

            await sb.create_datagram_endpoint(Sink, local_addr=(B4, 9))
            tr, _ = await sa.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                      remote_addr=(B4, 9))
            for i in range(300):
                tr.sendto(b"%04d" % i + bytes(1000))
            assert a.stats()["tx_queued"] > 0  # the writes hit EAGAIN
            for _ in range(200):
                if len(got) == 300:
                    break
                await asyncio.sleep(0.01)
            assert [g[:4] for g in got] == [b"%04d" % i for i in range(300)]
            assert a.stats()["tx_dropped_queue"] == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("batched", [True, False], ids=["send_many", "send"])
def test_writes_queue_the_rest_at_eagain_and_keep_the_order(batched: bool) -> None:
    """A full buffer part-way through: ``send_many`` (the GSO write loop) queues the remaining
    frames behind the ones written; ``send``, one frame at a time (its inlined plain path),
    queues at the first EAGAIN and puts every later frame behind the queue.  Either asks once to
    be woken, drops and reorders nothing, and stops watching once the queue is flushed; an
    empty queue writes directly again."""
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    s1.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a = link.fd(s1.detach())
    reader = s2
    wakeups: list[bool] = []
    a.writer_hook = wakeups.append
    try:
        frames = [bytearray(b"%04d" % i + bytes(1000)) for i in range(200)]
        if batched:
            a.send_many(frames)
        else:
            for f in frames:
                a.send(f)
        st = a.stats()
        assert st["tx_queued"] > 0 and wakeups == [True]  # EAGAIN part-way
        assert st["tx_frames"] + st["tx_queued"] == 200
        reader.setblocking(False)
        got: list[bytes] = []
        for _ in range(10_000):  # bounded: a lost frame fails the order check below
            if len(got) == 200:
                break
            try:
                got.append(reader.recv(2000))
            except BlockingIOError:
                a.write_ready()  # the adapter would call this when writable
        assert [g[:4] for g in got] == [b"%04d" % i for i in range(200)]
        assert a.stats()["tx_frames"] == 200 and a.stats()["tx_bytes"] == 200 * 1004
        assert wakeups[-1] is False  # queue flushed: stop watching
        queued = a.stats()["tx_queued"]
        a.send(b"last")
        assert reader.recv(2000) == b"last" and a.stats()["tx_queued"] == queued
        assert a.stats()["tx_frames"] == 201
    finally:
        a.close()
        reader.close()


CHILD = textwrap.dedent("""
    import asyncio, sys
    from aionetstack import Stack, link

    async def main() -> None:
        async with Stack() as stack:
            stack.add_nic(link.fd(int(sys.argv[1])), ["198.18.9.2/24", "fd00:9::2/64"])
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
""")


async def test_stack_in_a_child_process() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cfd = child.detach()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(cfd), pass_fds=(cfd,),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    os.close(cfd)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line == b"ready\n"
        async with Stack() as stack:
            stack.add_nic(link.fd(parent.detach()), [f"{A4}/24", f"{A6}/64"])
            assert 0 < await stack.ping(B4, timeout=3) < 1
            assert 0 < await stack.ping(B6, timeout=3) < 1
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_send_on_a_closed_fd_counts_one_error_and_closes_the_link() -> None:
    """A write that fails with EBADF (the fd closed under the link) is counted once, by the
    one failure handler the inlined and the general paths share, and closes the link."""
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    fdno = s1.detach()
    a = link.fd(fdno, owns_fd=False)
    try:
        os.close(fdno)
        a.send(b"lost")
        st = a.stats()
        assert st["tx_errors"] == 1 and st["tx_frames"] == 0 and st["tx_queued"] == 0
        assert a.closed
        a.send(b"after")  # a closed link drops silently
        assert a.stats()["tx_errors"] == 1
    finally:
        a.close()
        s2.close()


class _Recorder:
    """A link receiver that records what it is handed."""

    def __init__(self) -> None:
        self.single: list[bytes] = []
        self.batches: list[list[bytes]] = []

    def link_deliver(self, frame: memoryview, trusted: bool = False) -> None:
        self.single.append(bytes(frame))

    def link_deliver_batch(self, frames: list[memoryview]) -> None:
        self.batches.append([bytes(f) for f in frames])

    def link_wakeup(self, at: float) -> None:
        pass


def test_quiet_read_one_hands_over_one_frame_and_read_rest_the_others() -> None:
    """Quiet mode on a plain fd link (its inlined path): ``read_one`` reads exactly one frame
    and hands it over alone, saying there may be ``more``; ``read_rest`` takes the rest as one
    batch and leaves quiet mode; on an empty fd both hand over nothing."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a = link.fd(ours.detach())
    rec = _Recorder()
    a.attach(rec, lambda: 0.0)
    try:
        a.read_one()
        assert rec.single == [] and rec.batches == [] and not a.more  # EAGAIN: nothing
        for m in (b"one", b"two", b"three"):
            peer.send(m)
        a.read_one()
        assert rec.single == [b"one"] and rec.batches == [] and a.more
        assert a.stats()["rx_frames"] == 1 and a.stats()["rx_bytes"] == 3
        a.read_rest()
        assert rec.batches == [[b"two", b"three"]] and not a.quiet and not a.more
        assert a.stats()["rx_frames"] == 3
    finally:
        a.close()
        peer.close()


def test_quiet_read_one_on_a_closed_fd_counts_one_error_and_closes_the_link() -> None:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fdno = ours.detach()
    a = link.fd(fdno, owns_fd=False)
    rec = _Recorder()
    a.attach(rec, lambda: 0.0)
    try:
        os.close(fdno)
        a.read_one()
        assert a.stats()["rx_errors"] == 1 and a.closed and rec.single == []
    finally:
        a.close()
        peer.close()
