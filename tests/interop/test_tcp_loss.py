"""TCP against the kernel with packets lost: on the kernel side (nftables ``numgen``
drop rules inside the namespace; this kernel has no netem) and on the stack side (a link wrapper
that drops frames with a seeded random generator).  Integrity is checked with SHA-256.

The loss starts once the connection is established, so that handshake retransmissions (1 s
initial RTO for a SYN) do not dominate the running time; what is tested is data recovery.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest

from aionetstack import link
from aionetstack.clock import Clock
from aionetstack.link.base import Frame, Link, LinkReceiver

from .conftest import PassThrough, require_tool
from .test_tcp_kernel import (
    PORT,
    TUN_LINKS,
    addrs,
    blob,
    kernel_connect,
    kernel_exchange,
    kernel_listener,
    kernel_server_exchange,
    sha,
    stack_on,
)

pytestmark = pytest.mark.timeout(120)

# Each chain drops ``pct`` per cent of TCP packets at random, and also the 4th of every 20
# packets that carry data (longer than 120 bytes), so that data is surely lost both ways and
# retransmitted, even with TSO/GSO where 2 MB is only a few dozen super-segments.
NFT_LOSS = """
table inet t {
    chain out {
        type filter hook output priority 0; policy accept;
        meta l4proto tcp meta length > 120 numgen inc mod 20 == 3 counter drop
        meta l4proto tcp numgen random mod 100 < %(pct)d counter drop
    }
    chain in {
        type filter hook input priority 0; policy accept;
        meta l4proto tcp meta length > 120 numgen inc mod 20 == 3 counter drop
        meta l4proto tcp numgen random mod 100 < %(pct)d counter drop
    }
}
"""


def nft_loss(pct: int) -> str:
    """The loss table: ``pct`` % at random plus one data packet in 20."""
    return NFT_LOSS % {"pct": pct}


async def nft(netns: str, script: str) -> None:
    tool = require_tool("nft")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, tool, "-f", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(script.encode()), 10)
    assert proc.returncode == 0, out.decode(errors="replace")


async def nft_drops(netns: str) -> list[int]:
    """Packets dropped so far by the loss rules: [output chain, input chain]."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, require_tool("nft"), "list", "table", "inet", "t",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode(errors="replace")
    counts = [int(n) for n in re.findall(r"counter packets (\d+)", text)]
    assert len(counts) == 4, text
    return [counts[0] + counts[1], counts[2] + counts[3]]


SIZE = 2 << 20  # each way


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_kernel_client_echo_under_kernel_loss(netns: str, kind: type[link.Tun],
                                                    offload: bool, family: int) -> None:
    """Kernel client, stack echo server, 5 % of TCP packets dropped in both directions by the
    kernel: 2 MB each way arrive intact, and the stack did retransmit."""
    _, saddr, _ = addrs(family)
    infos: list[dict[str, Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
            infos.append(writer.get_extra_info("tcp_info"))
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with stack_on(netns, kind, offload) as stack:
        server = await stack.start_server(handler, saddr, PORT)
        s = await kernel_connect(netns, saddr)
        try:
            await nft(netns, nft_loss(5))
            data = blob(SIZE, 11)
            got = await kernel_exchange(s, data, 90)
        finally:
            s.close()
        assert len(got) == len(data) and sha(got) == sha(data)
        for _ in range(100):
            if infos:
                break
            await asyncio.sleep(0.02)
        assert infos, "the echo handler did not finish"
        assert infos[0]["retransmits"] > 0, infos[0]
        assert min(await nft_drops(netns)) > 0  # the kernel really dropped both ways
        server.close()


@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_stack_client_under_kernel_loss(netns: str, kind: type[link.Tun],
                                              offload: bool) -> None:
    """Stack client, kernel server, 5 % loss both ways in the kernel, 2 MB each way."""
    async with stack_on(netns, kind, offload) as stack:
        lsock = kernel_listener(netns, 4)
        ktask = asyncio.create_task(kernel_server_exchange(lsock, blob(SIZE, 12)))
        try:
            reader, writer = await asyncio.wait_for(stack.open_connection(addrs(4)[0], PORT), 10)
            await nft(netns, nft_loss(5))
            # with TSO the kernel sees (and drops) our data as 64 KiB super-segments, a few
            # dozen per 2 MB: send more so that some are surely lost
            up = blob(SIZE * (4 if offload else 1), 13)

            async def send() -> None:
                writer.write(up)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            got = await asyncio.wait_for(reader.read(), 90)
            await asyncio.wait_for(sender, 30)
            kgot = await asyncio.wait_for(ktask, 30)
            info = writer.get_extra_info("tcp_info")
            writer.close()
        finally:
            ktask.cancel()
            lsock.close()
        assert sha(got) == sha(blob(SIZE, 12))
        assert sha(kgot) == sha(up)
        assert info["retransmits"] > 0, info
        assert min(await nft_drops(netns)) > 0  # the kernel really dropped both ways


# -- stack-side impairments --------------------------------------------------------------


class _DropIn:
    """The receiver the wrapped link delivers to: drops inbound frames, forwards the rest."""

    def __init__(self, owner: Lossy, receiver: LinkReceiver) -> None:
        self._owner = owner
        self._receiver = receiver

    def link_deliver(self, frame: memoryview) -> None:
        if self._owner.roll():
            self._owner.dropped_rx += 1
            return
        self._receiver.link_deliver(frame)

    def link_wakeup(self, at: float) -> None:
        self._receiver.link_wakeup(at)


class Lossy(PassThrough):
    """Wraps a device link and drops a fraction ``loss`` of frames each way (seeded).

    ``inner`` is how the asyncio ``Stack`` finds the fd of the device behind a wrapper.
    """

    def __init__(self, inner: Link, *, loss: float = 0.0, seed: int = 1) -> None:
        super().__init__(inner)
        self.loss = loss
        self._rng = random.Random(seed)
        self.dropped_tx = 0
        self.dropped_rx = 0

    def roll(self) -> bool:
        return self.loss > 0 and self._rng.random() < self.loss

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self.inner.attach(_DropIn(self, receiver), clock)

    def send(self, frame: Frame) -> None:
        if self.roll():
            self.dropped_tx += 1
            return
        self.inner.send(frame)

    def stats(self) -> dict[str, int]:
        return {**self.inner.stats(), "dropped_tx": self.dropped_tx,
                "dropped_rx": self.dropped_rx}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("kind", "offload"), TUN_LINKS)
async def test_echo_under_stack_side_loss(netns: str, kind: type[link.Tun], offload: bool,
                                          family: int) -> None:
    """5 % of frames dropped by the stack's link wrapper in each direction; kernel client echo
    of 2 MB.  (With offloads an inbound frame may be a GRO super-segment of many MSS.)"""
    _, saddr, _ = addrs(family)
    lossy: list[Lossy] = []

    def wrap(dev: Link) -> Link:
        lossy.append(Lossy(dev, seed=1234 + family))
        return lossy[0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with stack_on(netns, kind, offload, wrap=wrap) as stack:
        server = await stack.start_server(handler, saddr, PORT)
        s = await kernel_connect(netns, saddr)
        try:
            lossy[0].loss = 0.05
            data = blob(SIZE, 21)
            got = await kernel_exchange(s, data, 90)
        finally:
            s.close()
        assert len(got) == len(data) and sha(got) == sha(data)
        assert lossy[0].dropped_tx > 0 and lossy[0].dropped_rx > 0
        server.close()



# -- deterministic drops of chosen segments ------------------------------------------------


class SeqDropper(PassThrough):
    """Wraps a TUN link; drops outbound IPv4 TCP data segments chosen by a rule.

    ``drop_nth``: the first transmission of the n-th outbound data segment is dropped (loss 1).
    ``drop_after_fast_rexmit``: the first *new* segment sent after the first retransmission
    (i.e. the segment starting at the sender's ``snd_max`` when it entered recovery; loss 2).
    """

    def __init__(self, inner: Link, *, drop_nth: int, drop_after_fast_rexmit: bool) -> None:
        super().__init__(inner)
        self.drop_nth = drop_nth
        self.drop_after = drop_after_fast_rexmit
        self.data_segments = 0
        self.high: int | None = None  # end of the highest data sent (relative arithmetic)
        self.recover: int | None = None  # snd_max at the first retransmission
        self.dropped: list[tuple[str, int]] = []
        self.new_sizes: list[int] = []  # payload sizes of first transmissions, in order

    def send(self, frame: Frame) -> None:
        mv = memoryview(frame)
        if len(mv) >= 40 and mv[0] >> 4 == 4 and mv[9] == 6:
            ihl = (mv[0] & 0x0F) * 4
            total = int.from_bytes(mv[2:4], "big")
            doff = (mv[ihl + 12] >> 4) * 4
            plen = total - ihl - doff
            if plen > 0:
                seq = int.from_bytes(mv[ihl + 4:ihl + 8], "big")
                end = (seq + plen) & 0xFFFFFFFF
                if self.high is None or ((end - self.high) & 0xFFFFFFFF) < 1 << 31:
                    # new data (first transmission)
                    self.data_segments += 1
                    self.new_sizes.append(plen)
                    new_high = end
                    if self.data_segments == self.drop_nth:
                        self.high = new_high
                        self.dropped.append(("first loss", seq))
                        return
                    if self.drop_after and self.recover is not None and seq == self.recover:
                        self.high = new_high
                        self.recover = None
                        self.drop_after = False
                        self.dropped.append(("first new segment in recovery", seq))
                        return
                    self.high = new_high
                elif self.drop_after and self.recover is None and self.dropped:
                    self.recover = self.high  # the first retransmission: recovery began
        self.inner.send(frame)


async def _bulk_with_drops(netns: str, seed: int, **rule: Any) -> tuple[SeqDropper, dict[str, Any],
                                                                        Any]:
    """Stack → kernel, 1 MiB through a ``SeqDropper(**rule)``; the kernel's copy is checked
    against what was sent.  Returns (the dropper, the sender's tcp_info, the stack's TCP stats)."""
    dropper: list[SeqDropper] = []

    def wrap(dev: Link) -> Link:
        dropper.append(SeqDropper(dev, **rule))
        return dropper[0]

    async with stack_on(netns, link.Tun, False, wrap=wrap) as stack:
        lsock = kernel_listener(netns, 4)
        ktask = asyncio.create_task(kernel_server_exchange(lsock, b""))
        try:
            reader, writer = await asyncio.wait_for(stack.open_connection(addrs(4)[0], PORT), 10)
            up = blob(1 << 20, seed)
            writer.write(up)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 30) == b""
            kgot = await asyncio.wait_for(ktask, 30)
            info = writer.get_extra_info("tcp_info")
            writer.close()
        finally:
            ktask.cancel()
            lsock.close()
        assert sha(kgot) == sha(up)
        return dropper[0], info, stack.tcp.stats


async def test_loss_right_after_sack_recovery_is_fast_retransmitted(netns: str) -> None:
    """Stack → kernel bulk data; the 30th data segment is lost, and so is the first new
    segment sent after its fast retransmission.  Both losses are repaired by the SACK/dup-ACK
    machinery, without a retransmission timeout."""
    dropper, info, stats = await _bulk_with_drops(netns, 41, drop_nth=30,
                                                  drop_after_fast_rexmit=True)
    assert [why for why, _ in dropper.dropped] == [
        "first loss", "first new segment in recovery"], dropper.dropped
    assert info["retransmits"] >= 2
    assert stats["timeouts"] == 0, (dict(stats), info)


async def test_no_sub_mss_slivers_during_sack_recovery(netns: str) -> None:
    """Stack → kernel bulk data with one segment lost: every new data segment but the last
    is a full MSS (the sender's SWS avoidance holds during loss recovery too)."""
    dropper, info, _ = await _bulk_with_drops(netns, 42, drop_nth=30,
                                              drop_after_fast_rexmit=False)
    assert len(dropper.dropped) == 1
    mss = info["snd_mss"]
    slivers = [(i, n) for i, n in enumerate(dropper.new_sizes[:-1]) if n < mss]
    assert slivers == [], f"sub-MSS segments mid-stream (index, size): {slivers}"
