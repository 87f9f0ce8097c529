"""The packets-in/data-out embedding API, driven by a hand-written loop (no asyncio)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from aionetstack.clock import ManualClock
from aionetstack.embed import Embedded, Flow


def pump(a: Embedded, b: Embedded, clock: ManualClock, until: object, *, loss: float = 0.0,
         seed: int = 0, limit: float = 300.0) -> None:
    """The embedder's own I/O loop: move packets between two stacks, run timers."""
    rng = random.Random(seed)
    end = clock.now + limit
    while not until():  # type: ignore[operator]
        moved = False
        for src, dst in ((a, b), (b, a)):
            for pkt in src.take_packets():
                moved = True
                if rng.random() >= loss:
                    dst.feed(pkt)
        deadlines = [d for d in (a.poll(), b.poll()) if d is not None]
        if moved:
            continue
        if not deadlines or clock.now > end:
            raise AssertionError("the exchange stalled")
        clock.set(max(clock.now, min(deadlines)))


@pytest.mark.parametrize("family,loss", [(4, 0.0), (6, 0.0), (4, 0.05)])
def test_echo_between_embedded_stacks(family: int, loss: float) -> None:
    clock = ManualClock(100.0)
    server = Embedded(["198.18.0.2/24", "fd00::2/64"], clock=clock, seed=1)
    client = Embedded(["198.18.0.1/24", "fd00::1/64"], clock=clock, seed=2)
    accepted: list[Flow] = []

    def on_flow(flow: Flow) -> None:
        accepted.append(flow)
        flow.on_data(flow.send).on_end(flow.end)  # echo, then half-close back

    server.listen(7, on_flow)
    data = os.urandom(1_000_000)
    got = bytearray()
    ended: list[bool] = []
    closed: list[BaseException | None] = []
    flow = client.connect("198.18.0.2" if family == 4 else "fd00::2", 7)
    flow.on_data(got.extend).on_end(lambda: ended.append(True)).on_close(closed.append)
    flow.send(data)
    flow.end()
    pump(client, server, clock, lambda: bool(ended) and bool(closed), loss=loss, seed=3)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert closed == [None]
    assert len(accepted) == 1
    assert accepted[0].remote[1] == flow.local[1]
    assert flow.remote == ("198.18.0.2" if family == 4 else "fd00::2", 7)


def test_write_into_caller_buffers_and_bad_input() -> None:
    clock = ManualClock()
    net = Embedded(["198.18.0.2/24"], clock=clock, seed=1)
    net.feed(b"\x45\x00\x00")  # truncated: counted, never raised
    net.feed(b"")
    net.feed(os.urandom(60))
    st = net.stack.stats()
    assert st["ipv4"].get("malformed", 0) + st["link"].get("malformed", 0) >= 2
    flow = net.connect("198.18.0.9", 80)  # a SYN leaves through the caller
    small = bytearray(10)
    with pytest.raises(ValueError):
        net.write_into(small)
    buf = bytearray(2000)
    n = net.write_into(buf)
    assert n >= 40 and buf[0] >> 4 == 4 and buf[9] == 6  # an IPv4 TCP SYN
    assert buf[33] & 0x02  # SYN flag
    assert net.write_into(buf) == 0
    assert not flow.connected


def test_output_callback_mode() -> None:
    clock = ManualClock()
    sent: list[bytes] = []
    net = Embedded(["fd00::2/64"], clock=clock, seed=1, output=sent.append)
    net.connect("fd00::9", 443)
    assert len(sent) == 1 and sent[0][0] >> 4 == 6
    deadline = net.poll()
    assert deadline is not None and deadline > clock.now  # the SYN retransmission timer
    clock.set(deadline)
    net.poll()
    assert len(sent) == 2  # retransmitted
