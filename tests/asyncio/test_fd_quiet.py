"""An fd link's quiet mode: a lone frame is answered before the read that says EAGAIN, and a
burst still arrives at the NIC as one batch (so software GRO keeps merging)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aio_helpers import icmp4_echo

from aionetstack import Stack
from aionetstack.link.base import LinkCaps
from aionetstack.link.fd import FdLink, TxItem

PEER, OURS = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


def _echo_request(seq: int) -> bytes:
    return icmp4_echo(8, PEER, OURS, 0x1234, seq, bytes(16))


class _LoggingLink(FdLink):
    """Records reads (a frame, or EAGAIN), writes and the batches handed to the NIC."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, LinkCaps(mtu=1500, l2=False), name="log")
        self.events: list[str] = []
        self.batches: list[int] = []

    def _read(self, fd: int, size: int) -> bytes | None:
        try:
            data = super()._read(fd, size)
        except BlockingIOError:
            self.events.append("eagain")
            raise
        self.events.append("frame")
        return data

    def _write(self, item: TxItem) -> None:
        self.events.append("write")
        super()._write(item)


@pytest.fixture
async def logged() -> AsyncIterator[tuple[Stack, _LoggingLink, socket.socket]]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.setblocking(False)
    fdl = _LoggingLink(ours.detach())
    async with Stack() as s:
        s.add_nic(fdl, ["198.18.0.2/24"])
        asyncio.get_running_loop().remove_reader(fdl.fileno())  # the test plays the loop
        nic = fdl._receiver
        assert nic is not None

        class _Counting:
            def link_deliver_batch(self, frames: list[memoryview]) -> None:
                fdl.batches.append(len(frames))
                nic.link_deliver_batch(frames)

            def link_wakeup(self, at: float) -> None:
                nic.link_wakeup(at)

        fdl._receiver = _Counting()  # type: ignore[assignment]
        yield s, fdl, peer
    peer.close()


def _replies(peer: socket.socket) -> list[int]:
    out = []
    while True:
        try:
            pkt = peer.recv(2048)
        except BlockingIOError:
            return out
        assert pkt[20] == 0  # echo reply
        out.append(int.from_bytes(pkt[26:28], "big"))


async def test_a_lone_frame_is_answered_before_the_read_that_says_eagain(
        logged: tuple[Stack, _LoggingLink, socket.socket]) -> None:
    s, fdl, peer = logged
    assert fdl.quiet
    peer.send(_echo_request(1))
    s._fd_readable(fdl)
    assert fdl.events == ["frame", "write"]  # the reply went out; no second read yet
    assert _replies(peer) == [1]
    await asyncio.sleep(0)  # the rest is read after one pass of the loop: nothing came
    assert fdl.events == ["frame", "write", "eagain"]
    assert fdl.quiet


async def test_a_burst_arrives_as_one_batch_and_ends_quiet_mode(
        logged: tuple[Stack, _LoggingLink, socket.socket]) -> None:
    s, fdl, peer = logged
    for seq in range(1, 6):
        peer.send(_echo_request(seq))
    s._fd_readable(fdl)
    assert fdl.batches == [1] and _replies(peer) == [1]
    await asyncio.sleep(0)
    assert fdl.batches == [1, 4]  # the other four together, not one by one
    assert _replies(peer) == [2, 3, 4, 5]
    assert not fdl.quiet
    # a wake-up that finds nothing (its frames were read already) leaves the mode alone: bulk
    # traffic read in batches must not fall into quiet mode, where each frame would come alone
    # and TCP would delay its ACKs
    fdl.events.clear()
    s._fd_readable(fdl)
    assert fdl.events == ["eagain"] and not fdl.quiet
    # out of quiet mode a wake-up reads the whole batch (up to EAGAIN) before delivering it;
    # finding one frame puts the link back in quiet mode
    fdl.events.clear()
    peer.send(_echo_request(6))
    s._fd_readable(fdl)
    assert fdl.events == ["frame", "eagain", "write"]
    assert fdl.batches[-1] == 1 and fdl.quiet
    assert s.stats()["icmpv4"]["echo-reply-sent"] == 6


async def test_the_loop_drives_quiet_mode_end_to_end() -> None:
    """Through the real reader callback: every request of a burst and of single sends is
    answered, in order."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.setblocking(False)
    fdl = _LoggingLink(ours.detach())
    async with Stack() as s:
        s.add_nic(fdl, ["198.18.0.2/24"])
        got: list[int] = []
        for seq in range(1, 4):
            peer.send(_echo_request(seq))
            for _ in range(20):
                await asyncio.sleep(0.001)
                got += _replies(peer)
                if len(got) == seq:
                    break
        for seq in range(4, 30):
            peer.send(_echo_request(seq))
        for _ in range(100):
            await asyncio.sleep(0.001)
            got += _replies(peer)
            if len(got) == 29:
                break
        assert got == list(range(1, 30))
    peer.close()
