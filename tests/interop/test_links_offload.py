"""TUN/TAP with and without virtio_net_hdr offloads against the kernel.

Ping and UDP both ways with ``offload`` on and off; inbound USO super-datagrams split into
datagrams; outbound GSO: a hand-built 20 KB TCP segment with gso_size 1400 is forwarded by the
kernel out of a second (offload-less) TUN device, where it arrives cut into MTU-sized packets, and
a UDP_L4 super-datagram reaches a kernel UDP socket as separate datagrams.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from aionetstack import Stack, link
from aionetstack.link.tun import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6
from aionetstack.wire.checksum import PROTO_TCP, PROTO_UDP
from aionetstack.wire.ipv4 import pack_ipv4, parse_ipv4
from aionetstack.wire.ipv6 import pack_ipv6
from aionetstack.wire.tcp import pack_tcp, tcp_checksum_ok
from aionetstack.wire.udp import pack_udp

from .conftest import Collect, in_netns, ns_socket, require, require_tool, run_cmd

KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"
KERNEL6, STACK6 = "fd00::1", "fd00::2"
UDP_SEGMENT = 103  # SOL_UDP option: send a UDP GSO super-datagram (linux/udp.h)


def _a(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
@pytest.mark.parametrize("kind", [link.Tun, link.Tap], ids=["tun", "tap"])
async def test_ping_and_udp_both_ways(netns: str, kind: type[link.Tun], offload: bool) -> None:
    ping = require_tool("ping")
    dev = kind.create("ans0", peer_address=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns,
                      offload=offload)
    if offload:
        assert dev.offloads & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == (
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        assert dev.caps.tx_checksum_offload and dev.caps.rx_checksum_trusted
        assert dev.caps.gso_max_size == 65535
    else:
        assert dev.offloads == 0 and not dev.caps.tx_checksum_offload
    loop = asyncio.get_running_loop()
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
        for target in (STACK4, STACK6):
            rc, out = await run_cmd("ip", "netns", "exec", netns, ping, "-c", "2", "-i", "0.2",
                                 "-W", "2", target)
            assert rc == 0 and "2 received" in out, out
        assert 0 < await stack.ping(KERNEL4, timeout=3) < 1
        assert 0 < await stack.ping(KERNEL6, timeout=3) < 1
        for kaddr, saddr, af in ((KERNEL4, STACK4, socket.AF_INET),
                                 (KERNEL6, STACK6, socket.AF_INET6)):
            ksock = ns_socket(netns, af, socket.SOCK_DGRAM)
            try:
                ksock.bind((kaddr, 5000))
                tr, pr = await stack.create_datagram_endpoint(Collect,
                                                              local_addr=(saddr, 6000))
                assert isinstance(pr, Collect)
                payloads = [bytes([i]) * (i * 97 % 1400 + 1) for i in range(20)]
                for p in payloads:
                    await loop.sock_sendto(ksock, p, (saddr, 6000))
                got = [await asyncio.wait_for(pr.queue.get(), 5) for _ in payloads]
                assert [g[0] for g in got] == payloads
                for p in [*payloads, b"F" * 3000]:  # the last one is fragmented
                    tr.sendto(p, (kaddr, 5000))
                    data, src = await asyncio.wait_for(loop.sock_recvfrom(ksock, 65536), 5)
                    assert data == p and src[:2] == (saddr, 6000)
                tr.close()
            finally:
                ksock.close()
        st = dev.stats()
        if offload:
            assert st["tx_partial_csum"] > 0  # the kernel finished our UDP checksums


@pytest.mark.parametrize("family", [4, 6])
async def test_kernel_uso_super_datagram_is_split(netns: str, family: int) -> None:
    dev = link.Tun.create("ans0", peer_address=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns)
    kaddr, saddr = (KERNEL4, STACK4) if family == 4 else (KERNEL6, STACK6)
    ksock = ns_socket(netns, socket.AF_INET if family == 4 else socket.AF_INET6,
                      socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    try:
        ksock.bind((kaddr, 5000))
        ksock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1000)
        async with Stack() as stack:
            stack.add_nic(dev, [f"{STACK4}/24", f"{STACK6}/64"])
            tr, pr = await stack.create_datagram_endpoint(Collect, local_addr=(saddr, 6000))
            assert isinstance(pr, Collect)
            # warm up neighbour/route state, then one send() of 9.5 datagrams' worth
            await loop.sock_sendto(ksock, b"x", (saddr, 6000))
            await asyncio.wait_for(pr.queue.get(), 5)
            blob = b"".join(bytes([65 + k]) * 1000 for k in range(9)) + b"z" * 500
            await loop.sock_sendto(ksock, blob, (saddr, 6000))
            got = [(await asyncio.wait_for(pr.queue.get(), 5))[0] for _ in range(10)]
            assert got == [blob[i:i + 1000] for i in range(0, len(blob), 1000)]
            if dev.offloads & (TUN_F_USO4 | TUN_F_USO6):
                assert dev.stats()["rx_uso_split"] >= 1  # it came as one super-datagram
            tr.close()
    finally:
        ksock.close()


def _tcp_segment(src: str, dst: str, payload: bytes) -> bytearray:
    s, d = _a(src), _a(dst)
    hl = 20 if len(s) == 4 else 40
    buf = bytearray(hl + 20 + len(payload))
    n = pack_tcp(buf, hl, src=s, dst=d, sport=40000, dport=5001, seq=123456, ack=1, flags=0x18,
                 window=1000, payload=payload, checksum=False)
    if hl == 20:
        pack_ipv4(buf, 0, src=s, dst=d, protocol=PROTO_TCP, payload_len=n, ident=1, df=True)
    else:
        pack_ipv6(buf, 0, src=s, dst=d, next_header=PROTO_TCP, payload_len=n)
    return buf


async def _read_tcp_packets(fd: int, want: int, family: int,
                            timeout: float = 5.0) -> list[bytes]:
    """Read IP packets from a plain TUN fd until ``want`` TCP ones arrived (the kernel may also
    send IPv6 noise such as MLD or router solicitations: skipped)."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    deadline = loop.time() + timeout
    while len(got) < want and loop.time() < deadline:
        try:
            p = os.read(fd, 65536)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if (p[9] if family == 4 else p[6]) == PROTO_TCP:
            got.append(p)
    await asyncio.sleep(0.05)  # no more TCP may follow
    while True:
        try:
            p = os.read(fd, 65536)
        except BlockingIOError:
            return got
        if (p[9] if family == 4 else p[6]) == PROTO_TCP:
            got.append(p)


@pytest.mark.parametrize("family", [4, 6])
async def test_outbound_tso_segmented_by_the_kernel(netns: str, family: int) -> None:
    """A 20 KB TCP segment sent with gso_size 1400 is forwarded by the kernel out of a plain TUN
    (no offloads, so the kernel must segment it): 15 packets with valid checksums arrive."""
    src, dst = ("198.18.0.2", "198.18.3.2") if family == 4 else ("fd00::2", "fd00:3::2")
    fwd = f"/proc/sys/net/ipv{family}/" + ("ip_forward" if family == 4 else "conf/all/forwarding")
    with in_netns(netns), open(fwd, "w") as f:  # /proc/sys/net: the opener's namespace
        f.write("1")
    a = link.Tun.create("ans0", peer_address=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns)
    b = link.Tun.create("ans1", peer_address=["198.18.3.1/24", "fd00:3::1/64"], netns=netns,
                        offload=False)
    try:
        require(bool(a.offloads & TUN_F_TSO4), "the kernel refused TSO on TUN")
        payload = bytes(i % 253 for i in range(20000))
        a.send_gso(_tcp_segment(src, dst, payload), 1400)
        assert a.stats()["tx_gso"] == 1
        pkts = await _read_tcp_packets(b.fileno(), 15, family)
        assert len(pkts) == 15, [len(p) for p in pkts]
        hl = 20 if family == 4 else 40
        data = b""
        for k, p in enumerate(pkts):
            if family == 4:
                assert parse_ipv4(memoryview(p)).total_length == len(p) <= 1440
            assert tcp_checksum_ok(_a(src), _a(dst), memoryview(p)[hl:])
            assert int.from_bytes(p[hl + 4:hl + 8], "big") == 123456 + 1400 * k
            data += p[hl + 20:]
        assert data == payload
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("offload", [True, False], ids=["uso", "software"])
async def test_outbound_udp_gso_reaches_kernel_as_datagrams(netns: str, offload: bool) -> None:
    dev = link.Tun.create("ans0", peer_address=[f"{KERNEL4}/24"], netns=netns, offload=offload)
    ksock = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    try:
        ksock.bind((KERNEL4, 5000))
        blob = b"".join(bytes([48 + k]) * 1200 for k in range(8)) + b"end"
        buf = bytearray(28 + len(blob))
        s, d = _a(STACK4), _a(KERNEL4)
        n = pack_udp(buf, 20, s, d, 6000, 5000, blob, checksum=False)
        pack_ipv4(buf, 0, src=s, dst=d, protocol=PROTO_UDP, payload_len=n)
        dev.send_gso(buf, 1200)
        got = [await asyncio.wait_for(loop.sock_recvfrom(ksock, 65536), 5) for _ in range(9)]
        assert [g[0] for g in got] == [blob[i:i + 1200] for i in range(0, len(blob), 1200)]
        assert all(g[1] == (STACK4, 6000) for g in got)
        if offload and dev.offloads & TUN_F_USO4:
            assert dev.stats()["tx_gso"] == 1
    finally:
        ksock.close()
        dev.close()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
async def test_kernel_tcp_super_segments_reach_the_stack(netns: str, offload: bool) -> None:
    """With TSO on the TUN the kernel sends TCP super-segments (up to 64 KiB); the link hands
    them to the stack whole and the stream arrives intact.  And back: the stack's TCP replies
    with checksums left to the kernel."""
    import hashlib

    dev = link.Tun.create("ans0", peer_address=[f"{KERNEL4}/24"], netns=netns, offload=offload)
    blob = os.urandom(2_000_000)
    loop = asyncio.get_running_loop()
    async with Stack() as stack:
        stack.add_nic(dev, [f"{STACK4}/24"])

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            n = 0
            while chunk := await reader.read(65536):
                h.update(chunk)
                n += len(chunk)
            writer.write(b"%d %s" % (n, h.hexdigest().encode()))
            await writer.drain()
            writer.close()

        server = await stack.start_server(handle, STACK4, 7000)
        ks = ns_socket(netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            await asyncio.wait_for(loop.sock_connect(ks, (STACK4, 7000)), 5)
            await asyncio.wait_for(loop.sock_sendall(ks, blob), 20)
            ks.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(ks, 4096), 10):
                reply += chunk
        finally:
            ks.close()
            server.close()
        assert reply == b"%d %s" % (len(blob), hashlib.sha256(blob).hexdigest().encode())
        st = dev.stats()
        if offload:
            assert st["rx_gso"] > 0  # super-segments came in
            assert st["tx_partial_csum"] > 0  # the kernel finished our TCP checksums
        else:
            assert "rx_gso" not in st


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
async def test_stack_tcp_sends_super_segments_to_the_kernel(netns: str, family: int,
                                                            offload: bool) -> None:
    """The stack's TCP hands the TUN 64 KiB super-segments when TSO is on (the kernel cuts
    them, the stream arrives intact at a kernel socket); without offload, MSS-sized packets."""
    import hashlib

    kaddr, saddr, plen = (KERNEL4, STACK4, 24) if family == 4 else (KERNEL6, STACK6, 64)
    dev = link.Tun.create("ans0", peer_address=[f"{kaddr}/{plen}"], netns=netns,
                          offload=offload)
    blob = os.urandom(4_000_000)
    loop = asyncio.get_running_loop()
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    lsock = ns_socket(netns, af, socket.SOCK_STREAM)
    lsock.setblocking(False)
    lsock.bind((kaddr, 7001))
    lsock.listen(1)

    async def kernel_side() -> bytes:
        conn, _ = await loop.sock_accept(lsock)
        conn.setblocking(False)
        h = hashlib.sha256()
        n = 0
        try:
            while chunk := await loop.sock_recv(conn, 1 << 16):
                h.update(chunk)
                n += len(chunk)
        finally:
            conn.close()
        return b"%d %s" % (n, h.hexdigest().encode())

    async with Stack() as stack:
        stack.add_nic(dev, [f"{saddr}/{plen}"])
        ktask = asyncio.create_task(kernel_side())
        try:
            _, writer = await asyncio.wait_for(stack.open_connection(kaddr, 7001), 10)
            writer.write(blob)
            await asyncio.wait_for(writer.drain(), 30)
            writer.write_eof()
            got = await asyncio.wait_for(ktask, 30)
            writer.close()
        finally:
            ktask.cancel()
            lsock.close()
        assert got == b"%d %s" % (len(blob), hashlib.sha256(blob).hexdigest().encode())
        st = dev.stats()
        if offload:
            assert st["tx_gso"] > 0  # super-segments went to the kernel
            assert st.get("tx_sw_segmented", 0) == 0
        else:
            assert st.get("tx_gso", 0) == 0
