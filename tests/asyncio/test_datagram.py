"""``Stack.create_datagram_endpoint`` and ``DatagramTransport`` (CPython selector contract)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket

import pytest
from aio_helpers import A4, A6, B4, B6, Echo, Recorder, ping_until_reply, stack_pair

from aionetstack import Stack, errors, link


async def _settle(seconds: float = 0.02) -> None:
    await asyncio.sleep(seconds)


# -- connection_made / extra info ----------------------------------------------------------------

async def test_connection_made_is_called_soon_not_synchronously() -> None:
    async with stack_pair() as (a, _b):
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        assert isinstance(pr, Recorder)
        assert pr.events == []  # not called from inside create_datagram_endpoint
        await asyncio.sleep(0)
        assert pr.events == [("made", tr)]
        assert tr.get_protocol() is pr
        tr.close()
        await asyncio.wait_for(pr.lost, 1.0)
        assert pr.kinds() == ["made", "lost"]


async def test_udp_echo_ipv4() -> None:
    async with stack_pair() as (a, b):
        st, sp = await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        assert isinstance(cp, Recorder) and isinstance(sp, Echo)
        assert st.get_extra_info("sockname") == ("0.0.0.0", 7)
        assert st.get_extra_info("peername") is None
        sock_host, sock_port = ct.get_extra_info("sockname")
        assert sock_host == A4 and 1024 <= sock_port <= 65535
        assert ct.get_extra_info("peername") == (B4, 7)
        assert ct.get_extra_info("stack") is a
        assert st.get_extra_info("stack") is b
        assert ct.get_extra_info("no-such-key", "dflt") == "dflt"

        ct.sendto(b"hello")
        assert await cp.next_datagram() == (b"hello", (B4, 7))
        assert sp.events[-1] == ("datagram", b"hello", (A4, sock_port))
        # sendto with the connected address itself is allowed, as with a connected socket
        ct.sendto(b"again", (B4, 7))
        assert await cp.next_datagram() == (b"again", (B4, 7))
        ct.sendto(bytearray(b"ba"))
        ct.sendto(memoryview(b"xmvx")[1:3])
        assert await cp.next_datagram() == (b"ba", (B4, 7))
        assert await cp.next_datagram() == (b"mv", (B4, 7))
        ct.sendto(b"")  # an empty datagram is a datagram
        assert await cp.next_datagram() == (b"", (B4, 7))
        assert a.stats()["udp"]["sent"] == 5
        assert b.stats()["udp"]["delivered"] == 5


async def test_udp_echo_ipv6_uses_four_tuples() -> None:
    async with stack_pair() as (a, b):
        st, sp = await b.create_datagram_endpoint(Echo, local_addr=("::", 7))
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B6, 7))
        assert isinstance(cp, Recorder) and isinstance(sp, Echo)
        assert st.get_extra_info("sockname") == ("::", 7, 0, 0)
        sockname = ct.get_extra_info("sockname")
        assert len(sockname) == 4 and sockname[0] == A6 and sockname[2:] == (0, 0)
        assert ct.get_extra_info("peername") == (B6, 7, 0, 0)
        ct.sendto(b"hello6")
        assert await cp.next_datagram() == (b"hello6", (B6, 7, 0, 0))
        data, addr = await sp.next_datagram()
        assert data == b"hello6" and addr == (A6, sockname[1], 0, 0)
        ct.sendto(b"4tuple", (B6, 7, 0, 0))  # the peername itself is accepted
        assert await cp.next_datagram() == (b"4tuple", (B6, 7, 0, 0))


async def test_unconnected_client_sends_to_both_families() -> None:
    async with stack_pair() as (a, b):
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        await b.create_datagram_endpoint(Echo, local_addr=("::", 7))
        t4, p4 = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        t6, p6 = await a.create_datagram_endpoint(Recorder, family=socket.AF_INET6,
                                                    local_addr=("::", 0))
        assert isinstance(p4, Recorder) and isinstance(p6, Recorder)
        assert t4.get_extra_info("peername") is None
        t4.sendto(b"v4", (B4, 7))
        t6.sendto(b"v6", (B6, 7, 0, 0))
        assert await p4.next_datagram() == (b"v4", (B4, 7))
        assert await p6.next_datagram() == (b"v6", (B6, 7, 0, 0))


async def test_bound_to_a_specific_address() -> None:
    async with stack_pair() as (a, b):
        st, _sp = await b.create_datagram_endpoint(Echo, local_addr=(B4, 5000))
        assert st.get_extra_info("sockname") == (B4, 5000)
        ct, cp = await a.create_datagram_endpoint(Recorder, local_addr=(A4, 6000),
                                                  remote_addr=(B4, 5000))
        assert isinstance(cp, Recorder)
        assert ct.get_extra_info("sockname") == (A4, 6000)
        ct.sendto(b"x")
        assert await cp.next_datagram() == (b"x", (B4, 5000))
        with pytest.raises(OSError) as info:  # not an address of stack a
            await a.create_datagram_endpoint(Recorder, local_addr=(B4, 0))
        assert info.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(OSError) as info:
            await b.create_datagram_endpoint(Recorder, local_addr=(B4, 5000))
        assert info.value.errno == errno.EADDRINUSE


# -- misuse ----------------------------------------------------------------------------------

async def test_sendto_another_address_on_a_connected_transport_raises_value_error() -> None:
    async with stack_pair() as (a, _b):
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        await asyncio.sleep(0)
        with pytest.raises(ValueError):
            ct.sendto(b"x", (B4, 8))
        with pytest.raises(ValueError):
            ct.sendto(b"x", ("198.18.0.3", 7))
        with pytest.raises(TypeError):
            ct.sendto("text")  # type: ignore[arg-type]
        assert a.stats()["udp"].get("sent", 0) == 0
        assert isinstance(cp, Recorder) and cp.kinds() == ["made"]


async def test_sendto_after_close_raises() -> None:
    async with stack_pair() as (a, _b):
        ct, _cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        ct.close()
        with pytest.raises(RuntimeError):
            ct.sendto(b"x")
        with pytest.raises(RuntimeError):
            ct.sendto(b"x", (B4, 7))
        assert a.stats()["udp"].get("sent", 0) == 0


async def test_sendto_without_destination_reports_error() -> None:
    async with stack_pair() as (a, _b):
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        assert isinstance(pr, Recorder)
        await asyncio.sleep(0)
        tr.sendto(b"x")
        exc = await pr.next_error()
        assert isinstance(exc, OSError) and exc.errno == errno.EDESTADDRREQ
        assert not tr.is_closing()


# -- errors from the network -------------------------------------------------------------------

@pytest.mark.parametrize("dst", [B4, B6], ids=["ipv4", "ipv6"])
async def test_port_unreachable_on_connected_endpoint_is_connection_refused(dst: str) -> None:
    async with stack_pair() as (a, b):
        ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(dst, 9))
        assert isinstance(cp, Recorder)
        ct.sendto(b"anyone?")
        exc = await cp.next_error()
        assert isinstance(exc, ConnectionRefusedError)
        assert exc.errno == errno.ECONNREFUSED
        assert cp.kinds() == ["made", "error"]
        assert not ct.is_closing()  # an ICMP error does not close a datagram transport
        assert b.stats()["udp"]["dropped.no-port"] == 1
        # once somebody listens, the same transport works
        await b.create_datagram_endpoint(Echo, local_addr=("::" if ":" in dst else "0.0.0.0", 9))
        ct.sendto(b"now?")
        data, _addr = await cp.next_datagram()
        assert data == b"now?"


async def test_port_unreachable_on_unconnected_endpoint_is_not_reported() -> None:
    async with stack_pair() as (a, b):
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        assert isinstance(pr, Recorder)
        tr.sendto(b"anyone?", (B4, 9))
        await _settle(0.05)
        assert b.stats()["udp"]["dropped.no-port"] == 1
        assert pr.kinds() == ["made"]  # like an unconnected kernel UDP socket


# -- broadcast -------------------------------------------------------------------------------

@pytest.mark.parametrize("dst", ["198.18.0.255", "255.255.255.255"], ids=["directed", "limited"])
async def test_broadcast_needs_allow_broadcast(dst: str) -> None:
    async with stack_pair() as (a, b):
        _st, sp = await b.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 7))
        assert isinstance(sp, Recorder)
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        assert isinstance(pr, Recorder)
        await asyncio.sleep(0)
        tr.sendto(b"no", (dst, 7))
        exc = await pr.next_error()
        assert isinstance(exc, PermissionError)
        assert exc.errno == errno.EACCES
        assert not tr.is_closing()

        btr, bpr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0),
                                                    allow_broadcast=True)
        assert isinstance(bpr, Recorder)
        btr.sendto(b"yes", (dst, 7))
        data, addr = await sp.next_datagram()
        assert data == b"yes"
        assert addr == (A4, btr.get_extra_info("sockname")[1])
        await _settle()
        assert sp.kinds() == ["made", "datagram"]  # the refused one never left
        assert bpr.kinds() == ["made"]


# -- close -----------------------------------------------------------------------------------

async def test_close_calls_connection_lost_none_exactly_once() -> None:
    async with stack_pair() as (a, _b):
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 5555))
        assert isinstance(pr, Recorder)
        await asyncio.sleep(0)
        tr.close()
        assert tr.is_closing()
        assert pr.kinds() == ["made"]  # connection_lost comes from the loop, not close()
        tr.close()
        tr.abort()
        assert await asyncio.wait_for(pr.lost, 1.0) is None
        await _settle()
        tr.close()
        await _settle()
        assert pr.kinds() == ["made", "lost"]
        # the port is free again
        tr2, _ = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 5555))
        tr2.close()


async def test_close_before_connection_made_still_orders_callbacks() -> None:
    async with stack_pair() as (a, _b):
        tr, pr = await a.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0))
        assert isinstance(pr, Recorder)
        tr.close()
        await asyncio.wait_for(pr.lost, 1.0)
        assert pr.kinds() == ["made", "lost"]


async def test_no_datagram_received_after_close() -> None:
    class CloseOnFirst(Recorder):
        def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
            super().datagram_received(data, addr)
            assert self.transport is not None
            self.transport.close()

    async with stack_pair() as (a, b):
        _st, sp = await b.create_datagram_endpoint(CloseOnFirst, local_addr=("0.0.0.0", 7))
        assert isinstance(sp, CloseOnFirst)
        ct, _cp = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        for i in range(5):  # one burst: all five are queued before the first is handed over
            ct.sendto(b"%d" % i)
        await asyncio.wait_for(sp.lost, 1.0)
        await _settle()
        assert sp.kinds() == ["made", "datagram", "lost"]


async def test_closing_the_stack_reports_connection_lost() -> None:
    async with stack_pair() as (a, _b):
        tr, pr = await a.create_datagram_endpoint(Recorder, remote_addr=(B4, 7))
        assert isinstance(pr, Recorder)
        await asyncio.sleep(0)
        a.close()
        exc = await asyncio.wait_for(pr.lost, 1.0)
        assert isinstance(exc, errors.StackClosed)
        assert tr.is_closing()
        tr.close()
        await _settle()
        assert pr.kinds() == ["made", "lost"]


# -- lossy links -------------------------------------------------------------------------------

def _payload(i: int) -> bytes:
    return i.to_bytes(4, "big") + hashlib.sha256(i.to_bytes(4, "big")).digest() * 6


async def _lossy_echo(a: Stack, b: Stack, count: int, wait: float,
                      dst: str = B4) -> tuple[dict[bytes, int], list[bytes]]:
    """``count`` datagrams a→b→a through an echo server; returns (sent, received)."""
    await ping_until_reply(a, dst)
    await ping_until_reply(b, A4 if dst == B4 else A6)
    await b.create_datagram_endpoint(Echo, local_addr=("::" if ":" in dst else "0.0.0.0", 7))
    ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(dst, 7))
    assert isinstance(cp, Recorder)
    sent = {}
    for i in range(count):
        p = _payload(i)
        sent[p] = i
        ct.sendto(p)
        if i % 50 == 49:
            await asyncio.sleep(0.001)
    await asyncio.sleep(wait)
    received = [e[1] for e in cp.events if e[0] == "datagram"]
    assert [e for e in cp.events if e[0] == "error"] == []
    ct.close()
    return sent, received


def _bad_checksum_drops(*stats: dict[str, dict[str, int]]) -> int:
    return sum(s[proto].get("malformed.bad-checksum", 0)
               for s in stats for proto in ("ipv4", "ipv6", "udp", "icmpv4", "icmpv6"))


async def test_thousand_datagrams_over_a_lossy_corrupting_pipe() -> None:
    async with stack_pair(l2=True, loss=0.1, reorder=0.05, corrupt=0.01, delay=0.005,
                          seed=1) as (a, b):
        a_end, b_end = (next(n for n in s.nics.values() if not n.loopback).link for s in (a, b))
        sent, received = await _lossy_echo(a, b, 1000, wait=0.3)
        # every delivered datagram is byte-identical to one that was sent, at most once
        assert all(r in sent for r in received)
        assert len(set(received)) == len(received)
        # 10% loss each way: about 81% come back
        assert 700 <= len(received) <= 900, len(received)
        # reordering happened and was not "fixed" by anyone
        order = [sent[r] for r in received]
        assert order != sorted(order)
        corrupted = a_end.stats()["corrupted"] + b_end.stats()["corrupted"]
        assert corrupted >= 5
        sa, sb = a.stats(), b.stats()
        drops = _bad_checksum_drops(sa, sb)
        assert drops >= 1
        # each corrupted frame is dropped at most once, and somewhere it was counted
        ether = sum(s["ethernet"].get("dropped", 0) + s["ethernet"].get("malformed", 0)
                    for s in (sa, sb))
        assert drops + ether <= corrupted
        assert sb["udp"]["delivered"] + sb["udp"].get("malformed", 0) <= 1000


async def test_udp_echo_over_the_documented_pipe() -> None:
    a_end, b_end = link.pipe(l2=True, mtu=1500, loss=0.1, reorder=0.05, corrupt=0.01,
                             delay=0.02, seed=1)
    async with Stack() as a, Stack() as b:
        a.add_nic(a_end, ["198.18.0.1/24", "fd00::1/64"])
        b.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        rtt = await ping_until_reply(a, "fd00::2")
        assert rtt >= 0.04 - 1e-3
        sent, received = await _lossy_echo(a, b, 300, wait=0.25)
        assert all(r in sent for r in received)
        assert len(set(received)) == len(received)
        assert 200 <= len(received) <= 280, len(received)
        assert a_end.stats()["dropped_loss"] > 0 and b_end.stats()["dropped_loss"] > 0
        corrupted = a_end.stats()["corrupted"] + b_end.stats()["corrupted"]
        assert _bad_checksum_drops(a.stats(), b.stats()) <= corrupted


async def test_ipv6_udp_over_a_corrupting_pipe() -> None:
    async with stack_pair(l2=True, corrupt=0.05, delay=0.002, seed=3) as (a, b):
        sent, received = await _lossy_echo(a, b, 400, wait=0.2, dst=B6)
        assert all(r in sent for r in received)
        assert len(received) < 400  # some were corrupted and dropped
        assert _bad_checksum_drops(a.stats(), b.stats()) >= 1


async def test_datagram_larger_than_mtu_is_fragmented_and_reassembled() -> None:
    async with stack_pair(mtu=1500, delay=0.001) as (a, b):
        await b.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 7))
        await b.create_datagram_endpoint(Echo, local_addr=("::", 7))
        for dst in (B4, B6):
            ct, cp = await a.create_datagram_endpoint(Recorder, remote_addr=(dst, 7))
            assert isinstance(cp, Recorder)
            big = bytes(range(256)) * 40  # 10240 bytes
            ct.sendto(big)
            data, _ = await cp.next_datagram()
            assert data == big
            ct.close()
