"""Resource exhaustion: fragment reassembly, the neighbour cache, the connection table.

Each test pushes one ``stack.limits`` cap (``aionetstack/stack/limits.py``) far past its value
and checks that the table stops at the cap, that the counter documented for it shows exactly
how often it bit, that memory stays bounded, and that legitimate traffic keeps working.
"""

from __future__ import annotations

import ast
import gc
import struct
import tracemalloc

import pytest
import stackrig  # also puts tests/core on sys.path
from core_helpers import PEER4, STACK_MAC, wired_stack

from aionetstack._accel import source_path
from aionetstack.errors import ConnectionRefused, ConnectionReset, ConnectStarted, WouldBlock
from aionetstack.link.pipe import pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.stack.limits import Limits
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.ipv4 import pack_ipv4
from aionetstack.wire.tcp import SYN, pack_tcp

# -- fragment reassembly --------------------------------------------------------------------------


def first_fragment(peer: stackrig.RawPeer, ident: int, size: int = 1480) -> bytearray:
    buf = bytearray(20 + size)
    pack_ipv4(buf, 0, src=peer.src, dst=peer.local, protocol=17, payload_len=size, ident=ident,
              mf=True)
    return buf


@pytest.mark.parametrize("cap", [256 * 1024, None])
def test_fragment_reassembly_exhaustion(cap: int | None) -> None:
    limits = Limits(reassembly_bytes=cap) if cap else Limits()
    net, s, peer = stackrig.raw_stack(limits=limits, prefix="/24")
    peer.keep = False
    r4 = s.ipv4.reassembler
    budget = limits.reassembly_bytes
    fit = budget // (1480 + 28)  # payload + the header kept for a time exceeded (20 + 8)
    n = fit * 2 + 100
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        peer.send_raw(first_fragment(peer, i & 0xFFFF), settle=(i % 128 == 127))
    net.settle()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert r4.pending_bytes <= budget
    assert len(r4) == fit
    assert r4.stats()["evicted"] == n - fit  # every datagram past the cap evicted the oldest
    assert s.stats()["fragment"]["evicted.ipv4"] == n - fit
    assert held < budget * 1.5 + 512 * 1024, held
    # a legitimate fragmented datagram still gets through while the cache is full
    ep = s.udp_endpoint(4)
    ep.bind(None, 9)
    body = struct.pack("!HHHH", 1, 9, 8 + 2000, 0) + b"L" * 2000
    for off, more in ((0, True), (1480, False)):
        part = body[off:off + 1480]
        buf = bytearray(20 + len(part))
        pack_ipv4(buf, 0, src=peer.src, dst=peer.local, protocol=17, payload_len=len(part),
                  ident=0xBEEF, mf=more, frag_offset=off)
        buf[20:] = part
        peer.send_raw(buf)
    assert len(ep.queue) == 1
    # the timeout frees everything
    net.run(duration=limits.reassembly_timeout4 + 1)
    assert r4.pending_bytes == 0 and len(r4) == 0 and r4.next_deadline() is None
    assert r4.stats()["evicted"] == n - fit + 1  # the legitimate datagram made room too
    assert s.stats()["fragment"]["timeout"] == fit - 1


# -- neighbour cache ------------------------------------------------------------------------------


def test_neighbour_cache_exhaustion_by_a_scan_of_a_slash16() -> None:
    """8,192 spoofed SYNs to a closed port from all over an on-link /16: each RST we owe needs
    an ARP resolution.  The cache stops at ``neighbour_entries``, evicting the oldest dynamic
    entry each time (``neighbour`` ``evicted``); the static entry of the real peer survives."""
    limits = Limits()
    net = VirtualNetwork(seed=9)
    s, nic, wire = wired_stack(net, addresses=("198.18.0.1/24", "10.0.0.1/16"), limits=limits)
    cache = nic.neigh4
    assert cache is not None and cache.max_entries == limits.neighbour_entries
    eth = bytes.fromhex(STACK_MAC.replace(":", "")) + bytes.fromhex("020000000002") + b"\x08\x00"
    dst = to_bytes("10.0.0.1")
    n = 8192
    for i in range(n):
        src = bytes((10, 0, 1 + i // 250, 2 + i % 250))
        buf = bytearray(40)
        pack_ipv4(buf, 0, src=src, dst=dst, protocol=6, payload_len=20)
        pack_tcp(buf, 20, src=src, dst=dst, sport=5000, dport=9, seq=i, ack=0, flags=SYN,
                 window=1024)
        wire.end.send(eth + bytes(buf))
        if i % 128 == 127:
            net.settle()
            wire.frames.clear()
    net.settle()
    wire.frames.clear()
    st = s.stats()
    assert len(cache) == limits.neighbour_entries
    assert st["neighbour"]["evicted"] == n - (limits.neighbour_entries - 1)  # one is static
    assert st["tcp"]["dropped.no-endpoint"] == n
    assert cache.lookup(to_bytes(PEER4)) is not None  # the static peer was never evicted
    # unanswered resolutions fail and free their entries (and the RSTs queued on them)
    net.run(duration=10.0)
    wire.take()
    assert len(cache) == 1
    assert s.stats()["neighbour"]["failed"] == limits.neighbour_entries - 1


# -- connection table -----------------------------------------------------------------------------


class Pair:
    def __init__(self, limits: Limits) -> None:
        self.net = VirtualNetwork(seed=21)
        self.a = self.net.stack()
        self.b = self.net.stack(limits=limits)
        ea, eb = pipe(seed=21, delay=0.001)
        self.a.add_nic(ea, ["198.18.0.2/24"])
        self.b.add_nic(eb, ["198.18.0.1/24"])
        self.lst = self.b.tcp.new_endpoint()
        self.lst.bind(None, 80)
        self.lst.listen(1024)

    def connect(self) -> TcpEndpoint:
        cli = self.a.tcp.new_endpoint()
        with pytest.raises(ConnectStarted):
            cli.connect("198.18.0.1", 80)
        q = self.lst.listen_queue
        assert q is not None
        self.net.run(until=lambda: cli.state is TcpState.CLOSED or (
            cli.state is TcpState.ESTABLISHED and bool(q.accept_queue)), timeout=30.0)
        return cli

    def accept(self) -> TcpEndpoint:
        return self.lst.accept()


def echo(net: VirtualNetwork, a: TcpEndpoint, b: TcpEndpoint, data: bytes) -> None:
    assert a.write(data) == len(data)
    buf = bytearray()

    def done() -> bool:
        try:
            buf.extend(b.read())
        except WouldBlock:
            pass
        return len(buf) >= len(data)

    assert net.run(until=done, timeout=30.0)
    assert bytes(buf) == data


@pytest.mark.parametrize("syncookies_in_use", [False, True])
def test_connection_exhaustion_refuses_new_and_keeps_established(
        syncookies_in_use: bool) -> None:
    """``cap + 5`` clients connect at once.  Without cookies the last five SYNs are refused
    with a RST; with a tiny half-open budget most clients come in through SYN cookies and the
    last five cookie ACKs are refused instead (the client, already ESTABLISHED, sees a reset).
    Either way exactly five ``dropped.connection-limit`` and ``cap`` working connections."""
    cap = 40
    p = Pair(Limits(max_connections=cap, max_half_open=4 if syncookies_in_use else 4096))
    clients = []
    for _ in range(cap + 5):
        cli = p.a.tcp.new_endpoint()
        with pytest.raises(ConnectStarted):
            cli.connect("198.18.0.1", 80)
        clients.append(cli)
    servers: list[TcpEndpoint] = []

    def settled() -> bool:
        while True:
            try:
                servers.append(p.accept())
            except WouldBlock:
                break
        return all(c.state is TcpState.CLOSED or c.state is TcpState.ESTABLISHED
                   for c in clients) and len(servers) >= cap

    assert p.net.run(until=settled, timeout=60.0)
    p.net.run(duration=1.0)
    live = [c for c in clients if c.state is TcpState.ESTABLISHED]
    refused = [c for c in clients if c.state is TcpState.CLOSED]
    st = p.b.stats()["tcp"]
    assert len(live) == cap and len(refused) == 5 and len(servers) == cap
    assert st["dropped.connection-limit"] == 5
    assert len(p.b.tcp.connections) == cap
    for c in refused:
        with pytest.raises(ConnectionRefused if not syncookies_in_use else ConnectionReset):
            c.connect_result() if not syncookies_in_use else c.read()
    if syncookies_in_use:
        assert st["syncookies-accepted"] == cap - 4
    # established connections keep working, both ways
    by_port = {s.remote[1]: s for s in servers if s.remote is not None}
    pairs = [(c, by_port[c.local[1]]) for c in live if c.local is not None]
    for cli, srv in pairs[:10]:
        echo(p.net, cli, srv, b"ping" * 500)
        echo(p.net, srv, cli, b"pong" * 500)
    # one connection goes away (the client closes first, so the server keeps no TIME-WAIT)
    cli, srv = pairs.pop()
    cli.close()
    p.net.run(until=lambda: srv.state is TcpState.CLOSE_WAIT, timeout=10.0)
    srv.close()
    p.net.run(until=lambda: srv.state is TcpState.CLOSED, timeout=10.0)
    assert len(p.b.tcp.connections) == cap - 1
    new = p.connect()
    assert new.state is TcpState.ESTABLISHED
    pairs.append((new, p.accept()))
    echo(p.net, new, pairs[-1][1], b"welcome back")
    for c in refused:
        c.close()
    for cli, srv in pairs:
        cli.close()
        srv.close()
    p.lst.close()
    assert p.net.run(timeout=600.0)
    for stack in (p.a, p.b):
        assert stack.tcp.connections == {} and len(stack.tcp.endpoints) == 0
        assert len(stack.timers) == 0


def test_limits_are_validated_and_documented() -> None:
    import aionetstack.stack.limits as mod

    with pytest.raises(ValueError):
        Limits(max_connections=0)
    with pytest.raises(ValueError):
        Limits(reassembly_timeout4=0)
    with pytest.raises(ValueError):
        Limits(max_ooo_bytes=0)
    with pytest.raises(ValueError):
        Limits(max_buffer_bytes=-1)
    # from the source: a compiled module (aionetstack._accel) keeps no docstring
    doc = ast.get_docstring(ast.parse(source_path(mod.__name__).read_text())) or ""
    for name in ("max_connections", "max_half_open", "reassembly_bytes", "neighbour_entries",
                 "dropped.connection-limit", "evicted", "max_ooo_bytes", "max_buffer_bytes",
                 "dropped.ooo-budget", "dropped.memory-limit", "dropped.ooo-block-limit",
                 "evicted.ipv4", "timeout"):
        assert name in doc
