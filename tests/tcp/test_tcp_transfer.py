"""End-to-end transfers between two stacks over an in-memory pipe."""

from __future__ import annotations

import hashlib
import random

import pytest
from tcp_helpers import Pair, make_pair

from aionetstack.errors import WouldBlock
from aionetstack.transport.tcp import TcpEndpoint, TcpState


def pump(p: Pair, src: TcpEndpoint, dst: TcpEndpoint, data: bytes, timeout: float = 600.0,
         close: bool = True) -> bytes:
    """Write ``data`` from src (then shut down), read everything at dst until EOF."""
    sent = 0
    got = bytearray()
    eof = False

    def step() -> bool:
        nonlocal sent, eof
        while sent < len(data):
            try:
                sent += src.write(data[sent:sent + 65536])
            except WouldBlock:
                break
        if sent == len(data) and close and src.state in (TcpState.ESTABLISHED,
                                                          TcpState.CLOSE_WAIT):
            src.shutdown_write()
        while not eof:
            try:
                chunk = dst.read()
            except WouldBlock:
                break
            if not chunk:
                eof = True
                break
            got.extend(chunk)
        return eof

    assert p.run(step, timeout), (len(got), src.info(), dst.info())
    return bytes(got)


def test_handshake_and_small_echo(pair: Pair) -> None:
    lst, cli, srv = pair.connect()
    assert srv.state is TcpState.ESTABLISHED
    assert cli.write(b"hello") == 5
    assert pair.run(lambda: srv.unread() == 5)
    assert srv.read() == b"hello"
    with pytest.raises(WouldBlock):
        srv.read()
    srv.write(b"world")
    assert pair.run(lambda: cli.unread() == 5)
    assert cli.read() == b"world"
    cli.close()
    assert pair.run(lambda: srv.read() == b"" if srv.rcv.fin_received else False)
    srv.close()
    lst.close()
    assert pair.run(lambda: srv.state is TcpState.CLOSED)
    assert cli.state is TcpState.TIME_WAIT
    pair.net.run(61.0)
    assert cli.state is TcpState.CLOSED
    pair.assert_no_leaks()


def _transfer(p: Pair, size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    lst, cli, srv = p.connect()
    got = pump(p, cli, srv, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    srv.close()
    lst.close()
    assert p.run(lambda: srv.state is TcpState.CLOSED and cli.state is TcpState.TIME_WAIT,
                 120.0), (srv, cli)
    cli.close()
    p.net.run(61.0)
    assert cli.state is TcpState.CLOSED
    p.assert_no_leaks()


def test_1mb_clean() -> None:
    _transfer(make_pair(delay=0.05), 1 << 20, 1)


def test_1mb_impaired() -> None:
    """5% loss, 5% reordering, 2% duplication, 1% corruption, 100 ms RTT; seeded."""
    p = make_pair(seed=7, delay=0.05, loss=0.05, reorder=0.05, duplicate=0.02, corrupt=0.01)
    _transfer(p, 1 << 20, 2)
    links = [end.stats() for end in p.links]
    assert sum(s["dropped_loss"] for s in links) > 20
    assert sum(s["corrupted"] for s in links) > 0 and sum(s["reordered"] for s in links) > 0
    stats = [p.a.stats(), p.b.stats()]
    # every corrupted frame was caught by a checksum (IPv4 header or TCP) and dropped
    caught = sum(s["tcp"].get("malformed.bad-checksum", 0) + s["ipv4"].get(
        "malformed.bad-checksum", 0) + s["tcp"].get("malformed.bad-option", 0) for s in stats)
    assert caught > 0
    assert stats[0]["tcp"]["retransmitted"] > 0


def test_1mb_impaired_with_cubic() -> None:
    p = make_pair(seed=8, delay=0.05, loss=0.02, reorder=0.02, duplicate=0.02)
    p.ta.congestion_control = p.tb.congestion_control = "cubic"
    _transfer(p, 1 << 20, 3)
