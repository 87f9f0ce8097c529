"""AF_PACKET link on one end of a veth pair, the kernel on the other: ping and UDP both ways."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from aionetstack import Stack, link
from aionetstack.link.tun import run_netlink

from .conftest import Collect, ns_socket, require_tool, run_cmd

KERNEL4, STACK4 = "198.18.1.1", "198.18.1.2"
KERNEL6, STACK6 = "fd00:1::1", "fd00:1::2"


def _veth(netns: str) -> None:
    """veth-a (kernel: addresses) <-> veth-b (no addresses: the stack's wire), both up."""
    from pyroute2 import NetNS

    ns: Any = NetNS(netns)
    try:
        ns.link("add", ifname="veth-a", kind="veth", peer="veth-b")
        a = ns.link_lookup(ifname="veth-a")[0]
        b = ns.link_lookup(ifname="veth-b")[0]
        ns.addr("add", index=a, address=KERNEL4, prefixlen=24)
        ns.addr("add", index=a, address=KERNEL6, prefixlen=64, flags=0x02)  # IFA_F_NODAD
        ns.link("set", index=b, state="up")
        ns.link("set", index=a, state="up")
    finally:
        ns.close()


@pytest.mark.parametrize("offload", [True, False], ids=["vnet", "plain"])
async def test_packet_link_on_veth(netns: str, offload: bool) -> None:
    ping = require_tool("ping")
    run_netlink(lambda: _veth(netns))
    dev = link.Packet("veth-b", netns=netns, offload=offload)
    assert dev.caps.l2 and dev.caps.mac is not None and dev.caps.mac[0] & 0x02
    assert dev.caps.mtu == 1500
    loop = asyncio.get_running_loop()
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
        assert 0 < await stack.ping(KERNEL4, timeout=3) < 1
        assert 0 < await stack.ping(KERNEL6, timeout=3) < 1
        for target in (STACK4, STACK6):
            rc, out = await run_cmd("ip", "netns", "exec", netns, ping, "-c", "2", "-i", "0.2",
                                 "-W", "2", target)
            assert rc == 0 and "2 received" in out, out
        for kaddr, saddr, af in ((KERNEL4, STACK4, socket.AF_INET),
                                 (KERNEL6, STACK6, socket.AF_INET6)):
            ksock = ns_socket(netns, af, socket.SOCK_DGRAM)
            try:
                ksock.bind((kaddr, 5000))
                tr, pr = await stack.create_datagram_endpoint(Collect,
                                                              local_addr=(saddr, 6000))
                assert isinstance(pr, Collect)
                payloads = [bytes([i]) * (i * 131 % 1400 + 1) for i in range(20)]
                for p in payloads:
                    await loop.sock_sendto(ksock, p, (saddr, 6000))
                got = [await asyncio.wait_for(pr.queue.get(), 5) for _ in payloads]
                assert [g[0] for g in got] == payloads
                assert got[0][1][:2] == (kaddr, 5000)
                for p in [*payloads, b"F" * 3000]:
                    tr.sendto(p, (kaddr, 5000))
                    data, src = await asyncio.wait_for(loop.sock_recvfrom(ksock, 65536), 5)
                    assert data == p and src[:2] == (saddr, 6000)
                tr.close()
            finally:
                ksock.close()
        stats = stack.stats()
        assert stats["icmpv4"]["echo-reply-sent"] == 2
        assert stats["icmpv6"]["echo-reply-sent"] == 2
        assert stats["udp"].get("malformed.bad-checksum", 0) == 0


@pytest.mark.parametrize("offload", [True, False], ids=["vnet", "plain"])
async def test_packet_link_tcp_from_kernel(netns: str, offload: bool) -> None:
    """The veth peer sends TSO super-frames with partial checksums: with the vnet header they
    arrive whole and are completed in software; without it, PACKET_AUXDATA flags them."""
    import hashlib
    import os

    run_netlink(lambda: _veth(netns))
    dev = link.Packet("veth-b", netns=netns, offload=offload)
    blob = os.urandom(1_000_000)
    loop = asyncio.get_running_loop()
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24"])
        digest: asyncio.Future[tuple[int, str]] = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            n = 0
            while chunk := await reader.read(65536):
                h.update(chunk)
                n += len(chunk)
            digest.set_result((n, h.hexdigest()))
            writer.close()

        server = await stack.start_server(handle, STACK4, 7000)
        ks = ns_socket(netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            await asyncio.wait_for(loop.sock_connect(ks, (STACK4, 7000)), 5)
            await asyncio.wait_for(loop.sock_sendall(ks, blob), 20)
            ks.shutdown(socket.SHUT_WR)
            assert await asyncio.wait_for(digest, 20) == (len(blob),
                                                          hashlib.sha256(blob).hexdigest())
        finally:
            ks.close()
            server.close()
        assert stack.stats()["tcp"].get("malformed.bad-checksum", 0) == 0
        st = dev.stats()
        assert st["rx_partial_csum" if offload else "rx_csum_completed"] > 0
