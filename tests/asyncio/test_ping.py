"""``Stack.ping`` over in-memory pipes: RTTs, errors, timeouts and loopback."""

from __future__ import annotations

import asyncio
import errno
import socket
import statistics
import time
from collections.abc import AsyncIterator

import pytest
from aio_helpers import A4, A6, B4, B6, icmp4_echo, stack_pair

from aionetstack import Stack, errors, link
from aionetstack.link.fd import FdLink
from aionetstack.stack.nic import NIC
from aionetstack.wire.checksum import checksum

DELAY = 0.02


def _nic(stack_nics: dict[int, NIC]) -> NIC:
    """The one non-loopback NIC of a stack."""
    (nic,) = [n for n in stack_nics.values() if not n.loopback]
    return nic


@pytest.mark.parametrize("l2", [True, False], ids=["l2", "l3"])
@pytest.mark.parametrize("dst", [B4, B6], ids=["ipv4", "ipv6"])
async def test_ping_rtt_is_twice_the_link_delay(l2: bool, dst: str) -> None:
    async with stack_pair(l2=l2, delay=DELAY) as (a, _b):
        first = await a.ping(dst)
        assert isinstance(first, float)
        if l2:  # the first echo waits for one ARP/NDP round trip before it can leave
            assert first >= 4 * DELAY - 1e-3
        else:
            assert first >= 2 * DELAY - 1e-3
        rtts = [await a.ping(dst) for _ in range(3)]
        for rtt in rtts:
            assert isinstance(rtt, float)
            assert rtt >= 2 * DELAY - 1e-3, rtts
            assert rtt < 2 * DELAY + 0.1, rtts
        assert statistics.median(rtts) < 2 * DELAY + 0.02, rtts


@pytest.mark.parametrize("l2", [True, False], ids=["l2", "l3"])
async def test_ping_over_an_ideal_pipe_is_fast(l2: bool) -> None:
    async with stack_pair(l2=l2) as (a, b):
        for dst in (B4, B6):
            rtt = await a.ping(dst)
            assert 0.0 <= rtt < 0.5
        for dst in (A4, A6):
            assert 0.0 <= await b.ping(dst) < 0.5
        assert a.stats()["icmpv4"]["echo-request-sent"] == 1
        assert b.stats()["icmpv4"]["echo-reply-sent"] == 1
        assert a.stats()["icmpv6"]["echo-request-sent"] == 1
        assert b.stats()["icmpv6"]["echo-reply-sent"] == 1


@pytest.mark.parametrize("size", [1000, 3000], ids=["one-frame", "fragmented"])
@pytest.mark.parametrize("dst", [B4, B6], ids=["ipv4", "ipv6"])
async def test_ping_with_large_payload(size: int, dst: str) -> None:
    async with stack_pair(mtu=1500, delay=0.001) as (a, _b):
        assert await a.ping(dst, size=size) > 0.0
        payload = bytes(range(256)) * 8
        assert await a.ping(dst, payload=payload) > 0.0


@pytest.mark.parametrize("dst", ["10.9.9.9", "2001:db8::9"], ids=["ipv4", "ipv6"])
async def test_ping_without_route_raises_no_route(dst: str) -> None:
    async with stack_pair() as (a, _b):
        t0 = time.monotonic()
        with pytest.raises(errors.NoRoute) as info:
            await a.ping(dst, timeout=5.0)
        assert time.monotonic() - t0 < 1.0  # raised at once, not after the timeout
        assert isinstance(info.value, OSError)
        assert info.value.errno == errno.ENETUNREACH


@pytest.mark.parametrize("dst", ["198.18.0.77", "fd00::77"], ids=["arp", "ndp"])
async def test_ping_on_link_address_nobody_has_is_host_unreachable(dst: str) -> None:
    async with stack_pair() as (a, _b):
        nic = _nic(a.nics)
        for cache in (nic.neigh4, nic.neigh6):
            assert cache is not None
            cache.retrans_time = 0.05  # 3 solicitations take 0.15 s instead of 3 s
        t0 = time.monotonic()
        with pytest.raises(errors.HostUnreachable) as info:
            await a.ping(dst, timeout=5.0)
        elapsed = time.monotonic() - t0
        assert 0.1 <= elapsed < 2.0
        assert isinstance(info.value, OSError)
        assert info.value.errno == errno.EHOSTUNREACH
        stats = a.stats()
        assert stats["neighbour"]["failed"] == 1
        key = "arp" if ":" not in dst else "ndp"
        sent = stats[key]["request-sent" if key == "arp" else "ns-sent"]
        assert sent >= 3


@pytest.mark.parametrize("l2", [True, False], ids=["l2", "l3"])
@pytest.mark.parametrize("dst", ["198.18.0.77", "fd00::77"], ids=["ipv4", "ipv6"])
async def test_ping_on_link_address_nobody_has_times_out(l2: bool, dst: str) -> None:
    async with stack_pair(l2=l2) as (a, _b):
        t0 = time.monotonic()
        try:
            await a.ping(dst, timeout=0.3)
        except TimeoutError as exc:  # the builtin: ordinary asyncio code catches it
            assert isinstance(exc, errors.TimedOut)
            assert exc.errno == errno.ETIMEDOUT
        else:
            pytest.fail("ping of an absent host returned")
        assert 0.29 <= time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("dst", [B4, B6], ids=["ipv4", "ipv6"])
async def test_ping_under_total_loss_times_out(dst: str) -> None:
    a_end, b_end = link.pipe(l2=True, loss=1.0, seed=1)
    from aionetstack import Stack

    async with Stack() as a, Stack() as b:
        a.add_nic(a_end, [f"{A4}/24", f"{A6}/64"])
        b.add_nic(b_end, [f"{B4}/24", f"{B6}/64"])
        # resolution would fail too; pin the neighbour so the timeout is the echo's own
        a.add_neighbour(dst, b_end.caps.mac or b"", _nic(a.nics))
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await a.ping(dst, timeout=0.3)
        assert 0.29 <= time.monotonic() - t0 < 1.5
        assert a_end.stats()["dropped_loss"] >= 1
        assert b.stats()["icmpv4"].get("echo-reply-sent", 0) == 0
        assert b.stats()["icmpv6"].get("echo-reply-sent", 0) == 0


@pytest.mark.parametrize("dst", [A4, A6, "127.0.0.1", "::1", "localhost"])
async def test_ping_own_address_goes_through_loopback(dst: str) -> None:
    async with stack_pair(delay=0.5) as (a, _b):
        nic = _nic(a.nics)
        before = nic.link.stats()["tx_frames"]
        rtt = await a.ping(dst, timeout=1.0)
        assert 0.0 <= rtt < 0.1  # far below the pipe's 1 s round trip
        assert nic.link.stats()["tx_frames"] == before  # nothing left on the wire
        family = "icmpv6" if ":" in dst else "icmpv4"
        assert a.stats()[family]["echo-reply-sent"] == 1


async def test_concurrent_pings_do_not_mix_replies() -> None:
    async with stack_pair(delay=0.01) as (a, _b):
        await a.ping(B4)
        await a.ping(B6)
        rtts = await asyncio.gather(*(a.ping(d) for d in (B4, B6, A4, B4, B6, A6)))
        assert all(isinstance(r, float) for r in rtts)
        assert rtts[2] < 0.015 and rtts[5] < 0.015  # the loopback ones
        assert all(r >= 0.019 for i, r in enumerate(rtts) if i not in (2, 5))


async def test_closing_the_stack_fails_a_pending_ping() -> None:
    async with stack_pair(loss=1.0) as (a, _b):
        a.add_neighbour(B4, b"\x02\x00\x00\x00\x00\x02", _nic(a.nics))
        task = asyncio.create_task(a.ping(B4, timeout=5.0))
        await asyncio.sleep(0.05)
        assert not task.done()
        t0 = time.monotonic()
        a.close()
        with pytest.raises(errors.StackClosed):
            await asyncio.wait_for(task, 1.0)
        assert time.monotonic() - t0 < 0.5


async def test_ping_on_a_closed_stack_raises() -> None:
    async with stack_pair() as (a, _b):
        a.close()
        with pytest.raises(errors.StackClosed):
            await a.ping(B4)



# -- over an fd link driven by hand: what happens within one reader callback ---------------------
KPEER, KSTACK = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


@pytest.fixture
async def fd_stack() -> AsyncIterator[tuple[Stack, FdLink, socket.socket]]:
    """A stack (198.18.0.2) whose NIC is an fd link over a socketpair; the test holds the peer
    end (198.18.0.1) and runs the stack's reader callback itself."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.setblocking(False)
    fdl = link.fd(ours.detach())
    async with Stack() as s:
        s.add_nic(fdl, ["198.18.0.2/24"])
        yield s, fdl, peer
    peer.close()


async def test_echo_reply_is_written_within_the_read_callback(
        fd_stack: tuple[Stack, FdLink, socket.socket]) -> None:
    s, fdl, peer = fd_stack
    data = bytes(range(56))
    peer.send(icmp4_echo(8, KPEER, KSTACK, 0x4242, 7, data))
    s._fd_readable(fdl)  # what the loop's reader callback runs
    # the reply is on the peer's socket before control goes back to the event loop
    reply = peer.recv(2048)
    assert reply[12:16] == KSTACK and reply[16:20] == KPEER and checksum(reply[:20]) == 0
    assert reply[20:] == icmp4_echo(0, KSTACK, KPEER, 0x4242, 7, data)[20:]
    assert s.stats()["icmpv4"] == {"received": 1, "echo-reply-sent": 1}


@pytest.mark.pure_python  # replaces a method of the (compiled) IcmpProtocol
async def test_unicast_echo_request_bypasses_the_general_icmp_demux(
        fd_stack: tuple[Stack, FdLink, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path: no parsed ICMP message and no PacketInfo for an echo request."""
    s, fdl, peer = fd_stack

    def general(*_a: object) -> None:
        raise AssertionError("a unicast echo request went through IcmpProtocol.deliver4")

    monkeypatch.setattr(s.icmp, "deliver4", general)
    peer.send(icmp4_echo(8, KPEER, KSTACK, 1, 1, b"x"))
    s._fd_readable(fdl)
    assert peer.recv(2048)[20] == 0  # an echo reply


async def test_ping_returns_one_loop_iteration_after_the_reply_is_read(
        fd_stack: tuple[Stack, FdLink, socket.socket]) -> None:
    """The reply wakes the pinging task directly (no ``wait_for`` future and done-callback
    between them): one pass of the loop after the reader callback and ``ping`` has returned."""
    s, fdl, peer = fd_stack
    loop = asyncio.get_running_loop()
    loop.remove_reader(fdl.fileno())  # the test runs the reader callback itself
    task = asyncio.create_task(s.ping("198.18.0.1", timeout=5.0))
    for _ in range(3):
        await asyncio.sleep(0)
    req = peer.recv(2048)
    assert req[20] == 8 and not task.done()
    ident_seq = req[24:28]
    reply = bytearray(icmp4_echo(0, KPEER, KSTACK, 0, 0, req[28:]))
    reply[24:28] = ident_seq
    reply[22:24] = b"\0\0"
    reply[22:24] = checksum(reply[20:]).to_bytes(2, "big")
    peer.send(bytes(reply))
    s._fd_readable(fdl)
    await asyncio.sleep(0)
    assert task.done()
    assert 0.0 <= task.result() < 5.0


@pytest.mark.pure_python  # replaces a method of the (compiled) IcmpProtocol
async def test_echo_reply_bypasses_the_general_icmp_demux(
        fd_stack: tuple[Stack, FdLink, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    s, fdl, peer = fd_stack
    ep = s.icmp_echo_endpoint(4)

    def general(*_a: object) -> None:
        raise AssertionError("an echo reply went through IcmpProtocol.deliver4")

    monkeypatch.setattr(s.icmp, "deliver4", general)
    peer.send(icmp4_echo(0, KPEER, KSTACK, ep.ident, 9, b"data"))
    peer.send(icmp4_echo(0, KPEER, KSTACK, ep.ident ^ 1, 9, b"not ours"))
    s._fd_readable(fdl)
    await asyncio.sleep(0)  # a quiet link reads the second frame after one pass of the loop
    assert ep.recv()[:3] == (KPEER, 9, b"data")
    assert s.stats()["icmpv4"] == {"received": 2, "dropped": 1, "dropped.no-endpoint": 1}
    ep.close()
