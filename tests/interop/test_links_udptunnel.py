"""Two stacks in one process joined by a UDP tunnel over loopback (no root needed)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from aionetstack import Stack, link
from aionetstack.stack.neighbour import NudState

from .conftest import Collect

A4, B4 = "198.18.7.1", "198.18.7.2"
A6, B6 = "fd00:7::1", "fd00:7::2"


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


def tunnel_pair(l2: bool) -> tuple[link.UdpTunnel, link.UdpTunnel]:
    a = link.UdpTunnel(local=("127.0.0.1", 0), remote=None, l2=l2)
    b = link.UdpTunnel(local=("127.0.0.1", 0), remote=a.local_address, l2=l2)
    a.connect(b.local_address)
    return a, b


async def check_ping_and_udp_echo(sa: Stack, sb: Stack) -> None:
    for dst in (B4, B6):
        assert 0 < await sa.ping(dst, timeout=3) < 1
    for dst in (A4, A6):
        assert 0 < await sb.ping(dst, timeout=3) < 1
    for src, dst in ((A4, B4), (A6, B6)):
        etr, _ = await sb.create_datagram_endpoint(_Echo, local_addr=(dst, 7))
        tr, pr = await sa.create_datagram_endpoint(Collect, local_addr=(src, 0))
        assert isinstance(pr, Collect)
        for p in [b"", b"x", bytes(range(256)) * 5, b"F" * 3000]:  # the last is fragmented
            tr.sendto(p, (dst, 7))
            data, addr = await asyncio.wait_for(pr.queue.get(), 5)
            assert data == p and addr[:2] == (dst, 7)
        tr.close()
        etr.close()


@pytest.mark.parametrize("l2", [False, True], ids=["l3", "l2"])
async def test_udp_tunnel_between_two_stacks(l2: bool) -> None:
    a, b = tunnel_pair(l2)
    assert a.caps.mtu == 1400 and a.caps.l2 == l2
    async with Stack() as sa, Stack() as sb:
        na = sa.add_nic(a, [f"{A4}/24", f"{A6}/64"])
        sb.add_nic(b, [f"{B4}/24", f"{B6}/64"])
        await check_ping_and_udp_echo(sa, sb)
        if l2:  # ARP and NDP resolved the other stack's MAC through the tunnel
            assert na.neigh4 is not None and na.neigh6 is not None
            assert na.neigh4.state(socket.inet_pton(socket.AF_INET, B4)) == NudState.REACHABLE
            assert na.neigh4.lookup(socket.inet_pton(socket.AF_INET, B4)) == b.caps.mac
            assert na.neigh6.lookup(socket.inet_pton(socket.AF_INET6, B6)) == b.caps.mac
            arp = [s.stats()["arp"].get("request-sent", 0) for s in (sa, sb)]
            assert sum(arp) >= 1
        assert a.stats()["tx_frames"] > 0 and b.stats()["rx_frames"] > 0


async def test_udp_tunnel_peer_not_there_yet() -> None:
    """Frames to a closed port are lost (ICMP port unreachable is only counted); the tunnel
    keeps working once the far end exists."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    a = link.UdpTunnel(local=("127.0.0.1", 0), remote=("127.0.0.1", port))
    async with Stack() as sa:
        sa.add_nic(a, [f"{A4}/24"])
        with pytest.raises(TimeoutError):
            await sa.ping(B4, timeout=0.3)
        b = link.UdpTunnel(local=("127.0.0.1", port), remote=a.local_address)
        async with Stack() as sb:
            sb.add_nic(b, [f"{B4}/24"])
            assert 0 < await sa.ping(B4, timeout=3) < 1
    unconnected = link.UdpTunnel(local=("127.0.0.1", 0))
    unconnected.send(b"\x45" + bytes(19))  # nowhere to go: counted, not raised
    assert unconnected.stats()["tx_not_connected"] == 1
    unconnected.close()
