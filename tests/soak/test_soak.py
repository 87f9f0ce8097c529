"""Soak: many TCP connections through a lossy, reordering, duplicating, corrupting pipe.

Each round opens ``SOAK_CONNECTIONS`` (default 200) connections, ``SOAK_CONCURRENCY`` at a time,
from a client stack to a server stack.  Every connection sends a random-sized random payload
(0..``SOAK_MAX_BYTES``) in both directions, half-closes, reads the peer's bytes to EOF, compares
SHA-256 digests and closes.  After each round virtual time runs until no timer is pending
(TIME-WAIT included); then there must be zero endpoints, zero connections, zero reserved ports
and zero armed timers on both stacks.  Memory is compared with tracemalloc between the end of a
second round and the end of a later one: it must be flat.

``SOAK_SECONDS`` (default 0: two rounds plus one measured round) keeps running rounds until that
many wall-clock seconds have passed -- for a long run by hand::

    SOAK_SECONDS=600 python -m pytest tests/soak -s
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import time
import tracemalloc
from dataclasses import dataclass, field

import pytest

from aionetstack.errors import ConnectStarted, NetstackError, WouldBlock
from aionetstack.link.pipe import pipe
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.transport.tcp.state import TcpState

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "0"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "200"))
CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "50"))
MAX_BYTES = int(os.environ.get("SOAK_MAX_BYTES", "65536"))


@dataclass
class Side:
    ep: TcpEndpoint
    out: bytes
    sent: int = 0
    shut: bool = False
    got: bytearray = field(default_factory=bytearray)
    eof: bool = False

    def pump(self) -> None:
        ep = self.ep
        while self.sent < len(self.out):
            try:
                n = ep.write(memoryview(self.out)[self.sent:self.sent + 65536])
            except WouldBlock:
                break
            self.sent += n
        if self.sent == len(self.out) and not self.shut:
            ep.shutdown_write()
            self.shut = True
        while not self.eof:
            try:
                data = ep.read()
            except WouldBlock:
                break
            if not data:
                self.eof = True
            self.got += data


@dataclass
class Conn:
    client: Side
    server: Side | None = None


class Soak:
    def __init__(self, seed: int = 2026) -> None:
        self.net = VirtualNetwork(seed=seed)
        self.a: CoreStack = self.net.stack()
        self.b: CoreStack = self.net.stack()
        ea, eb = pipe(seed=seed, loss=0.02, reorder=0.03, duplicate=0.01, corrupt=0.002,
                      delay=0.002, jitter=0.001, rate=100e6)
        self.a.add_nic(ea, ["198.18.0.2/24"])
        self.b.add_nic(eb, ["198.18.0.1/24"])
        self.lst = self.b.tcp.new_endpoint()
        self.lst.bind(None, 443)
        self.lst.listen(CONCURRENCY * 2)
        self.rng = random.Random(seed)
        self.bytes = 0
        self.connections = 0
        self.integrity_failures = 0
        self.failed: list[str] = []

    def _payload(self) -> bytes:
        size = self.rng.choice([0, 1, self.rng.randrange(1, 1460),
                                self.rng.randrange(1, MAX_BYTES + 1)])
        return self.rng.randbytes(size)

    def round(self) -> None:
        pending = CONNECTIONS
        active: list[Conn] = []
        unmatched: dict[int, Conn] = {}
        while pending or active:
            while pending and len(active) < CONCURRENCY:
                pending -= 1
                ep = self.a.tcp.new_endpoint()
                try:
                    ep.connect("198.18.0.1", 443)
                except ConnectStarted:
                    pass
                c = Conn(Side(ep, self._payload()))
                active.append(c)
            while True:
                try:
                    srv = self.lst.accept()
                except WouldBlock:
                    break
                assert srv.remote is not None
                unmatched[srv.remote[1]] = Conn(Side(srv, b""))
            for c in active:
                if c.server is None and c.client.ep.local is not None:
                    m = unmatched.pop(c.client.ep.local[1], None)
                    if m is not None:
                        c.server = Side(m.client.ep, self._payload())
            still = []
            for c in active:
                for side in (c.client, c.server):
                    if side is not None and side.ep.state is not TcpState.SYN_SENT:
                        try:
                            side.pump()
                        except NetstackError as exc:
                            self.failed.append(repr(exc))
                            side.eof = True
                if c.client.eof and c.server is not None and c.server.eof:
                    self._finish(c)
                elif c.client.ep.error is not None and c.server is None:
                    self.failed.append(repr(c.client.ep.error))
                    c.client.ep.close()
                else:
                    still.append(c)
            active = still
            self.net.run(duration=0.01)
        assert not unmatched
        assert self.net.run(timeout=3600.0), "timers still pending an hour after the round"

    def _finish(self, c: Conn) -> None:
        assert c.server is not None
        for tx, rx in ((c.client, c.server), (c.server, c.client)):
            if hashlib.sha256(rx.got).digest() != hashlib.sha256(tx.out).digest():
                self.integrity_failures += 1
            self.bytes += len(rx.got)
        c.client.ep.close()
        c.server.ep.close()
        self.connections += 1

    def assert_clean(self) -> None:
        assert self.failed == [], self.failed[:5]
        assert self.integrity_failures == 0
        for s in (self.a, self.b):
            assert s.tcp.connections == {}
            # the listener is the only endpoint left
            assert s.tcp.endpoints == ({self.lst} if s is self.b else set())
            assert len(s.timers) == 0
            assert s.tcp.memory.buffered == 0 and s.tcp.memory.ooo == 0  # Limits budgets
        assert len(self.a.ports) == 0 and len(self.b.ports) == 1


@pytest.mark.timeout(600)
def test_soak_many_connections_lossy_reordering_pipe() -> None:
    t0 = time.perf_counter()
    soak = Soak()
    soak.round()
    soak.assert_clean()
    soak.round()
    soak.assert_clean()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    base = tracemalloc.get_traced_memory()[0]
    rounds = 2
    while True:
        soak.round()
        soak.assert_clean()
        rounds += 1
        if time.perf_counter() - t0 >= SOAK_SECONDS:
            break
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = "\n".join(str(s) for s in after.compare_to(before, "lineno")[:5])
    assert grown < 256 * 1024, f"heap grew by {grown} bytes over a round:\n{top}"
    soak.lst.close()
    assert soak.net.run(timeout=10.0)
    assert soak.b.tcp.endpoints == set() and len(soak.b.ports) == 0
    pa, pb = soak.a.nics[2].link.stats(), soak.b.nics[2].link.stats()
    elapsed = time.perf_counter() - t0
    print(f"\nsoak: {rounds} rounds, {soak.connections} connections, {soak.bytes} bytes "
          f"verified by SHA-256, {soak.integrity_failures} integrity failures, 0 leaks; "
          f"virtual {soak.net.now - 1000:.0f} s in {elapsed:.1f} s wall; link a: {pa}; "
          f"link b: {pb}; heap growth {grown} B")
