"""The stack against the Linux kernel over TUN and TAP: ping and UDP both ways."""

from __future__ import annotations

import asyncio
import socket

import pytest

from aionetstack import Stack, link
from aionetstack.stack.neighbour import NudState

from .conftest import Collect, ns_socket, require_tool, run_cmd

KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"
KERNEL6, STACK6 = "fd00::1", "fd00::2"


def _device(kind: type[link.Tun] | type[link.Tap], netns: str) -> link.Tun | link.Tap:
    return kind.create("ans0", peer_address=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns,
                       mtu=1500)


@pytest.mark.parametrize("kind", [link.Tun, link.Tap], ids=["tun", "tap"])
async def test_kernel_pings_stack(netns: str, kind: type[link.Tun]) -> None:
    ping = require_tool("ping")
    dev = _device(kind, netns)
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
        rc, out = await run_cmd("ip", "netns", "exec", netns, ping, "-c", "3", "-i", "0.2",
                             "-W", "2", STACK4)
        assert rc == 0, out
        assert "3 received" in out
        rc, out = await run_cmd("ip", "netns", "exec", netns, ping, "-6", "-c", "3", "-i", "0.2",
                             "-W", "2", STACK6)
        assert rc == 0, out
        assert "3 received" in out
        assert stack.stats()["icmpv4"]["echo-reply-sent"] == 3
        assert stack.stats()["icmpv6"]["echo-reply-sent"] == 3


@pytest.mark.parametrize("kind", [link.Tun, link.Tap], ids=["tun", "tap"])
async def test_stack_pings_kernel(netns: str, kind: type[link.Tun]) -> None:
    dev = _device(kind, netns)
    async with Stack() as stack:
        nic = stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
        rtt4 = await stack.ping(KERNEL4, timeout=3)
        rtt6 = await stack.ping(KERNEL6, timeout=3)
        assert 0 < rtt4 < 1 and 0 < rtt6 < 1
        if kind is link.Tap:
            # ARP and NDP resolved the kernel's MAC on the wire
            from pyroute2 import NetNS

            assert nic.neigh4 is not None and nic.neigh6 is not None
            assert nic.neigh4.state(socket.inet_pton(socket.AF_INET, KERNEL4)) == (
                NudState.REACHABLE)
            assert nic.neigh6.state(socket.inet_pton(socket.AF_INET6, KERNEL6)) == (
                NudState.REACHABLE)
            def kernel_view() -> tuple[str, dict[str, str]]:
                with NetNS(netns) as ns:
                    idx = ns.link_lookup(ifname="ans0")[0]
                    mac = ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")
                    return mac, {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                                 for n in ns.get_neighbours(ifindex=idx)}

            kernel_mac, neigh = await asyncio.to_thread(kernel_view)
            our_mac = ":".join(f"{b:02x}" for b in nic.mac)
            assert neigh.get(STACK4) == our_mac  # the kernel learned us through our ARP reply
            kmac = bytes.fromhex(kernel_mac.replace(":", ""))
            assert nic.neigh4.lookup(socket.inet_pton(socket.AF_INET, KERNEL4)) == kmac


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("kind", [link.Tun, link.Tap], ids=["tun", "tap"])
async def test_udp_both_ways(netns: str, kind: type[link.Tun], family: int) -> None:
    dev = _device(kind, netns)
    kaddr, saddr = (KERNEL4, STACK4) if family == 4 else (KERNEL6, STACK6)
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    ksock = ns_socket(netns, af, socket.SOCK_DGRAM)
    ksock.bind((kaddr, 5000))
    loop = asyncio.get_running_loop()
    try:
        async with Stack() as stack:
            stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
            tr, pr = await stack.create_datagram_endpoint(Collect, local_addr=(saddr, 6000))
            assert isinstance(pr, Collect)
            # kernel -> stack
            payloads = [bytes([i]) * (i * 37 % 1400 + 1) for i in range(50)]
            for p in payloads:
                await loop.sock_sendto(ksock, p, (saddr, 6000))
            got = [await asyncio.wait_for(pr.queue.get(), 5) for _ in payloads]
            assert [g[0] for g in got] == payloads
            assert got[0][1][:2] == (kaddr, 5000)
            # stack -> kernel, including a datagram that needs fragmenting
            for p in [*payloads, b"F" * 4000]:
                tr.sendto(p, (kaddr, 5000))
                data, src = await asyncio.wait_for(loop.sock_recvfrom(ksock, 65536), 5)
                assert data == p
                assert src[:2] == (saddr, 6000)
            tr.close()
    finally:
        ksock.close()


@pytest.mark.parametrize("family", [4, 6])
async def test_kernel_port_unreachable_is_connection_refused(netns: str, family: int) -> None:
    dev = _device(link.Tun, netns)
    kaddr = KERNEL4 if family == 4 else KERNEL6
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
        tr, pr = await stack.create_datagram_endpoint(Collect, remote_addr=(kaddr, 9))
        assert isinstance(pr, Collect)
        tr.sendto(b"anyone?")
        exc = await asyncio.wait_for(pr.errors.get(), 5)
        assert isinstance(exc, ConnectionRefusedError)
        tr.close()
