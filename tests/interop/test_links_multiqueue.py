"""Multi-queue TUN: two stacks, one queue each, on one device; the kernel spreads flows."""

from __future__ import annotations

import asyncio
import socket

import pytest

from aionetstack import Stack, link

from .conftest import ns_socket

KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"
FLOWS = 24


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.seen += 1
        assert self.transport is not None
        self.transport.sendto(data, addr)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
async def test_two_queues_share_the_flows(netns: str, offload: bool) -> None:
    q0 = link.Tun.create("ans0", peer_address=f"{KERNEL4}/24", netns=netns, queues=2,
                         offload=offload)
    q1 = link.Tun("ans0", netns=netns, queues=2, offload=offload)
    socks = []
    loop = asyncio.get_running_loop()
    try:
        async with Stack() as s0, Stack() as s1:
            protos = []
            for stack, q in ((s0, q0), (s1, q1)):
                stack.add_nic(q, [f"{STACK4}/24"])
                _, pr = await stack.create_datagram_endpoint(_Echo, local_addr=(STACK4, 6000))
                assert isinstance(pr, _Echo)
                protos.append(pr)
            for i in range(FLOWS):  # different source ports: different flow hashes
                ks = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(ks)
                ks.bind((KERNEL4, 20000 + i))
                await loop.sock_sendto(ks, b"flow %d" % i, (STACK4, 6000))
            for i, ks in enumerate(socks):
                data, src = await asyncio.wait_for(loop.sock_recvfrom(ks, 2048), 5)
                assert data == b"flow %d" % i and src == (STACK4, 6000)
            assert protos[0].seen + protos[1].seen == FLOWS
            assert protos[0].seen > 0 and protos[1].seen > 0, (protos[0].seen, protos[1].seen)
            assert q0.stats()["rx_frames"] > 0 and q1.stats()["rx_frames"] > 0
    finally:
        for ks in socks:
            ks.close()
        q1.close()
        q0.close()
