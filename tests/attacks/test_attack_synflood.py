"""SYN flood: 20,000 spoofed SYNs at one virtual instant (the highest rate a test can make).

The server has two NICs: one towards a real client stack, one towards the attacker, who sends
SYNs from 20,000 different (source, port) pairs across a /16 and never answers.  The SYN queue
fills to its backlog, then SYN cookies answer statelessly (RFC 4987 §3.6): legitimate clients
connect during the flood and move data, the SYN queue never exceeds its backlog, memory stays
flat, and once the flood stops the half-open children time out and everything is freed.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc

import pytest
import stackrig

from aionetstack.errors import ConnectStarted
from aionetstack.link.pipe import pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.stack.limits import Limits
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.wire.tcp import SYN, TcpOptions

FLOOD = int(os.environ.get("SYNFLOOD_SYNS", "20000"))
BACKLOG = 128


class Flood:
    def __init__(self, limits: Limits | None = None) -> None:
        self.net = VirtualNetwork(seed=17)
        self.client = self.net.stack()
        self.server = self.net.stack(limits=limits)
        ca, cb = pipe(seed=1)
        self.client.add_nic(ca, ["198.18.0.2/24"])
        self.server.add_nic(cb, ["198.18.0.1/24"])
        sa, aa = pipe(seed=2)
        self.server.add_nic(sa, ["198.19.0.1/16"])
        self.attacker = stackrig.RawPeer(self.net, aa, to_bytes("198.19.0.1"),
                                         to_bytes("198.19.0.2"), keep=False)
        aa.attach(self.attacker, self.net.clock)
        self.listener = self.server.tcp.new_endpoint()
        self.listener.bind(None, 80)
        self.listener.listen(BACKLOG)
        self.sent = 0

    def flood(self, n: int) -> None:
        opts = TcpOptions(mss=1460)
        for _ in range(n):
            i = self.sent
            self.sent += 1
            src = bytes((198, 19, 1 + (i >> 8) % 250, 2 + i % 250))
            seg = self.attacker.segment(src=src, sport=1024 + i % 60000, seq=i * 7919,
                                        flags=SYN, options=opts)
            self.attacker.send_raw(seg, settle=False)
            if i % 256 == 255:
                self.net.settle()
        self.net.settle()

    def connect_and_echo(self, payload: bytes) -> None:
        cli = self.client.tcp.new_endpoint()
        with pytest.raises(ConnectStarted):
            cli.connect("198.18.0.1", 80)
        got: list[TcpEndpoint] = []

        def accepted() -> bool:
            q = self.listener.listen_queue
            if not got and q is not None and q.accept_queue:
                got.append(self.listener.accept())
            return bool(got) and cli.state.name == "ESTABLISHED"

        assert self.net.run(until=accepted, timeout=30.0), "legitimate client could not connect"
        srv = got[0]
        assert cli.write(payload) == len(payload)
        buf = bytearray()

        def drained() -> bool:
            try:
                buf.extend(srv.read())
            except Exception:
                pass
            return len(buf) == len(payload)

        assert self.net.run(until=drained, timeout=30.0)
        assert bytes(buf) == payload
        cli.close()
        srv.close()


def test_syn_flood_legitimate_clients_connect_and_memory_is_bounded() -> None:
    f = Flood()
    t0 = time.perf_counter()
    f.flood(2000)  # warm-up: the SYN queue is full, every later SYN gets a cookie
    q = f.listener.listen_queue
    assert q is not None and len(q.syn_queue) == BACKLOG
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    f.flood(FLOOD // 2 - 2000)
    f.connect_and_echo(b"during the flood" * 100)
    f.flood(FLOOD - f.sent)
    f.connect_and_echo(b"still" * 1000)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    st = f.server.stats()["tcp"]
    assert len(q.syn_queue) <= BACKLOG
    assert len(f.server.tcp.connections) <= BACKLOG + 4
    assert st["syncookies-sent"] >= FLOOD - BACKLOG - 10
    assert st["syncookies-accepted"] == 2  # both legitimate clients came in through cookies
    assert f.attacker.received >= FLOOD  # every SYN was answered (SYN-ACK or cookie)
    # 18,000 SYNs later the heap holds no more than a small, constant amount (no per-SYN state)
    assert grown < 512 * 1024, f"memory grew by {grown} bytes during the flood"
    # the flood stops: half-open children exhaust their SYN-ACK retries and are freed
    f.net.run(duration=200.0)
    assert f.server.tcp.connections == {}
    assert len(f.server.tcp.endpoints) == 1  # the listener
    assert f.net.run(timeout=600.0)
    print(f"\nSYN flood: {f.sent} SYNs in {elapsed:.1f} s wall, "
          f"{st['syncookies-sent']} cookies, heap growth {grown} bytes")


def test_half_open_limit_over_all_listeners() -> None:
    """``Limits.max_half_open`` caps SYN-RECEIVED children over every listener together."""
    f = Flood(Limits(max_half_open=40))
    f.server.tcp.syncookies = False
    other = f.server.tcp.new_endpoint()
    other.bind(None, 81)
    other.listen(BACKLOG)
    f.flood(30)
    opts = TcpOptions(mss=1460)
    for i in range(30):
        f.attacker.send_raw(f.attacker.segment(src=to_bytes("198.19.9.9"), sport=2000 + i,
                                               dport=81, flags=SYN, options=opts))
    st = f.server.stats()["tcp"]
    assert len(f.server.tcp.connections) == 40
    assert st["dropped.half-open-limit"] == 20
    assert f.listener.listen_queue is not None and other.listen_queue is not None
    assert len(f.listener.listen_queue.syn_queue) + len(other.listen_queue.syn_queue) == 40
    # with cookies on (the default) the same SYNs are answered statelessly instead
    f.server.tcp.syncookies = True
    f.flood(10)
    assert f.server.stats()["tcp"]["syncookies-sent"] == 10
    assert len(f.server.tcp.connections) == 40
