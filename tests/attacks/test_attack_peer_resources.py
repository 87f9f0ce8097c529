"""A peer that tries to make us burn CPU or hold memory: tiny MSS, a window held at zero.

* Tiny MSS: a peer announcing MSS 1 (or 64) would make us cut a transfer into one-byte segments;
  the MSS is clamped to 64 bytes, so 64 KB costs about a thousand segments, not 65,536.
* Zero-window hold: a peer that opens a connection, lets us queue data and advertises a zero
  window forever while answering every probe.  Persist probes go on with backoff (RFC 9293
  §3.8.6.1 -- the connection must not be dropped merely because the window stays closed), and a
  user timeout (``TcpEndpoint.user_timeout``, TCP_USER_TIMEOUT) frees the connection and its
  buffers.
"""

from __future__ import annotations

import time

import pytest
import stackrig

from aionetstack.errors import TimedOut
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.seqnum import seq_sub
from aionetstack.wire.tcp import ACK


def receive_all(lv: stackrig.Live, total: int, timeout: float = 600.0) -> tuple[bytes, int]:
    """Play an honest receiver: take in-order data, ACK it; returns (data, segments seen)."""
    got = bytearray()
    segments = 0
    expect = lv.peer_ack
    end = lv.net.now + timeout
    while len(got) < total and lv.net.now < end:
        segs = lv.peer.recv()
        if not segs:
            lv.net.run(duration=0.05)
            continue
        for h in segs:
            if h.payload:
                segments += 1
                assert len(h.payload) <= max(lv.ep.snd.mss, 64)
                off = seq_sub(expect, h.seq)
                if 0 <= off < len(h.payload):
                    got += h.payload[off:]
                    expect = (expect + len(h.payload) - off) & 0xFFFFFFFF
        lv.send(seq=lv.peer_nxt, ack=expect, flags=ACK, window=65535)
    return bytes(got), segments


@pytest.mark.parametrize(("announced", "used"), [(1, 64), (40, 64), (64, 64), (0, 536),
                                                 (None, 536)])
def test_tiny_mss_is_clamped(announced: int | None, used: int) -> None:
    lv = stackrig.tcp_peer(mss=announced)
    assert lv.ep.snd.mss == used
    payload = bytes(range(256)) * 256  # 64 KiB
    t0 = time.process_time()
    n = 0
    while n < len(payload):
        n += lv.ep.write(payload[n:])
    got, segments = receive_all(lv, len(payload))
    cpu = time.process_time() - t0
    assert got == payload
    assert segments <= len(payload) // used + 50
    assert cpu < 10.0


def test_zero_window_hold_probes_forever_then_user_timeout_frees() -> None:
    lv = stackrig.tcp_peer()
    ep = lv.ep
    lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, window=0)  # window closes
    assert ep.snd.snd_wnd == 0
    assert ep.write(b"q" * 100000) == 100000
    probes = 0

    def hold(seconds: float) -> None:
        nonlocal probes
        end = lv.net.now + seconds
        while lv.net.now < end and ep.state is TcpState.ESTABLISHED:
            lv.net.run(duration=1.0)
            for h in lv.peer.recv():
                assert len(h.payload) <= 1  # a probe, never a burst into a closed window
                probes += 1
                lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, window=0)

    hold(1800.0)  # half an hour of a closed window
    assert ep.state is TcpState.ESTABLISHED
    assert probes >= 15  # backoff is capped at max_rto (120 s): probing never stops
    assert ep.send_buffered() == 100000
    set_at = lv.net.now
    ep.user_timeout = 60.0  # the window has been closed for longer: the next probe gives up
    hold(600.0)
    assert ep.state is TcpState.CLOSED
    assert isinstance(ep.error, TimedOut)
    assert lv.net.now - set_at <= lv.s.tcp.max_rto + 1.0
    ep.close()
    lv.listener.close()
    lv.net.settle()
    assert lv.s.tcp.endpoints == set() and lv.s.tcp.connections == {}
    assert len(lv.s.timers) == 0
    print(f"\nzero-window hold: {probes} probes answered before the user timeout")


def test_user_timeout_counts_from_the_first_zero_window_probe() -> None:
    """With the user timeout set up front, a held window frees the connection after about
    that long -- although every probe is answered (answered probes reset the retry count)."""
    lv = stackrig.tcp_peer()
    ep = lv.ep
    ep.user_timeout = 30.0
    lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, window=0)
    ep.write(b"q" * 5000)
    start = lv.net.now
    probes = 0
    while ep.state is TcpState.ESTABLISHED and lv.net.now - start < 3600:
        lv.net.run(duration=0.5)
        for _ in lv.peer.recv():
            probes += 1
            lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, window=0)
    assert ep.state is TcpState.CLOSED and isinstance(ep.error, TimedOut)
    assert 30.0 <= lv.net.now - start <= 30.0 + 2 * 16.0 and probes >= 4
    # the window opening resets the clock: a later zero-window episode gets its own 30 s
    lv2 = stackrig.tcp_peer(seed=4)
    ep2 = lv2.ep
    ep2.user_timeout = 30.0
    lv2.send(seq=lv2.peer_nxt, ack=lv2.peer_ack, flags=ACK, window=0)
    ep2.write(b"q" * 5000)
    for _ in range(50):  # 25 s closed, probes answered
        lv2.net.run(duration=0.5)
        for _ in lv2.peer.recv():
            lv2.send(seq=lv2.peer_nxt, ack=lv2.peer_ack, flags=ACK, window=0)
    got, _ = receive_all(lv2, 5000)  # the window opens and everything is delivered
    assert len(got) == 5000
    lv2.send(seq=lv2.peer_nxt, ack=ep2.snd.snd_max, flags=ACK, window=0)
    ep2.write(b"r" * 100)
    for _ in range(40):  # 20 s closed again: under 30 s in this episode
        lv2.net.run(duration=0.5)
        for _ in lv2.peer.recv():
            lv2.send(seq=lv2.peer_nxt, ack=ep2.snd.snd_max, flags=ACK, window=0)
    assert ep2.state is TcpState.ESTABLISHED


def test_out_of_order_confetti_is_bounded() -> None:
    """A peer sends one byte at every other sequence number across the whole window: without a
    cap that is one block per byte (~150 bytes of bookkeeping each) and O(blocks) work per
    segment -- quadratic.  New blocks past ``max(64, rcvbuf // 1024)`` are refused and counted;
    the hole then fills normally and every byte accepted is delivered in order."""
    from aionetstack.transport.tcp.receiver import MIN_OOO_BLOCKS

    lv = stackrig.tcp_peer(wscale=7)
    rcv = lv.ep.rcv
    wnd = rcv.rcv_wnd
    cap = max(MIN_OOO_BLOCKS, rcv.capacity // 1024)
    t0 = time.process_time()
    sent = 0
    for off in range(2, wnd, 2):
        lv.peer.send_raw(lv.peer.segment(sport=lv.sport, seq=lv.peer_nxt + off, ack=lv.peer_ack,
                                         flags=ACK, payload=b"c"), settle=False)
        sent += 1
        if sent % 256 == 0:
            lv.net.settle()
            lv.peer.frames.clear()
    lv.net.settle()
    lv.peer.frames.clear()
    cpu = time.process_time() - t0
    assert len(rcv.ooo) == cap and rcv.ooo_bytes == cap
    assert rcv.ooo_dropped == sent - cap
    assert lv.s.stats()["tcp"]["dropped.ooo-block-limit"] == sent - cap
    assert cpu < 8.0, cpu  # ~1-2 s; the uncapped receiver took ~25 s (quadratic)
    # the real data: the hole and everything after it, in one go
    lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, payload=b"R" * (2 * cap + 2))
    assert lv.ep.read() == b"R" * (2 * cap + 2)
    assert not rcv.ooo and rcv.ooo_bytes == 0
