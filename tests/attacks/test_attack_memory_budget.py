"""Memory budgets over all TCP connections: out-of-order bytes and buffered bytes.

* Out-of-order blast: a peer opens many connections and, on each, sends a window's worth of
  segments beyond a hole that it never fills.  Each connection alone stays inside its window,
  but together they would hold ``connections x window``; ``Limits.max_ooo_bytes`` caps the sum.
  Past it out-of-order segments are dropped (``dropped.ooo-budget``), in-order data is still
  taken, and the accounting (``stack.tcp.memory``) is exact: it goes back to zero when the holes
  fill and when connections are reset, aborted or closed.
* Buffered bytes: past ``Limits.max_buffer_bytes`` (send + receive + out-of-order over all
  connections) new connections are refused with a RST (``dropped.memory-limit``) while the
  established ones keep working; once the buffers drain, new connections come in again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import stackrig

from aionetstack.errors import ConnectionReset
from aionetstack.stack.limits import Limits, TcpMemory
from aionetstack.stack.stack import CoreStack
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.transport.tcp.receiver import Receiver
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.seqnum import MASK, seq_add
from aionetstack.wire.tcp import ACK, FIN, RST, SYN, TcpOptions

SEG = 1460


@dataclass
class Conn:
    ep: TcpEndpoint
    sport: int
    nxt: int  # the peer's next sequence number
    ack: int  # what the peer acknowledges
    stream: bytes  # what the peer sends on this connection


def open_many(n: int, limits: Limits, seed: int = 5) -> tuple[
        stackrig.RawPeer, CoreStack, TcpEndpoint, list[Conn]]:
    """``n`` connections to :80 from a hand-driven peer (no window scaling: 64 KiB windows)."""
    _, s, peer = stackrig.raw_stack(seed, limits=limits)
    lst = s.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen(n)
    rng = random.Random(seed)
    conns = []
    for i in range(n):
        sport, isn = 5000 + i, rng.getrandbits(32)
        peer.send(sport=sport, seq=isn, flags=SYN, options=TcpOptions(mss=SEG))
        sa = [h for h in peer.recv() if h.flags & SYN]
        assert len(sa) == 1
        peer.send(sport=sport, seq=isn + 1, ack=sa[0].seq + 1, flags=ACK)
        ep = lst.accept()
        assert ep.state is TcpState.ESTABLISHED
        conns.append(Conn(ep, sport, (isn + 1) & MASK, (sa[0].seq + 1) & MASK,
                          rng.randbytes(40 * SEG)))
    peer.recv()
    return peer, s, lst, conns


def send(peer: stackrig.RawPeer, c: Conn, off: int, n: int = SEG, flags: int = ACK,
         settle: bool = True) -> None:
    peer.send_raw(peer.segment(sport=c.sport, seq=seq_add(c.nxt, off), ack=c.ack, flags=flags,
                               payload=c.stream[off:off + n]), settle=settle)


def check_exact(s: CoreStack) -> None:
    """The stack's totals are the sum over its connections, byte for byte."""
    mem = s.tcp.memory
    live = [ep for ep in s.tcp.endpoints if ep.rcv.account is mem]
    assert mem.ooo == sum(ep.rcv.ooo_bytes for ep in live)
    assert mem.ooo == sum(len(b.data) for ep in live for b in ep.rcv.ooo)
    assert mem.buffered == sum(ep.rcv.ooo_bytes + len(ep.rcv.buffer) + len(ep.snd.buffer)
                               for ep in live)


def test_out_of_order_blast_across_connections_stays_under_the_budget() -> None:
    budget = 128 * 1024
    n, per_conn = 24, 40  # 24 connections x 40 segments beyond a hole = 1.4 MB offered
    peer, s, lst, conns = open_many(n, Limits(max_ooo_bytes=budget))
    mem = s.tcp.memory
    t0 = time.process_time()
    offered = 0
    for k in range(1, per_conn):  # round robin, as a blast over many connections would come
        for c in conns:
            if k * SEG < c.ep.rcv.rcv_wnd:
                send(peer, c, k * SEG, settle=False)
                offered += 1
        s_net_settle(peer)
    st = s.stats()["tcp"]
    queued = sum(c.ep.rcv.ooo_bytes for c in conns)
    assert mem.peak_ooo <= budget and mem.ooo == queued
    assert budget - SEG < queued <= budget  # filled to the brim, never past it
    assert st["dropped.ooo-budget"] == offered - queued // SEG > 0
    assert sum(c.ep.rcv.ooo_dropped for c in conns) == st["dropped.ooo-budget"]
    check_exact(s)
    # every connection still takes in-order data, budget or not; the holes fill and the queued
    # blocks behind them are released into the receive buffers (and out of the OOO budget)
    for c in conns:
        send(peer, c, 0)
    assert mem.ooo == 0 and s.stats()["tcp"]["dropped.ooo-budget"] == st["dropped.ooo-budget"]
    check_exact(s)
    # a reset (RFC 9293 §3.10.7.4: SEG.SEQ == RCV.NXT), an abort and a graceful close, each
    # on a connection holding out-of-order bytes, give those bytes back
    for c in conns:
        c.ep.read()
        got = c.ep.rcv.bytes_received
        send(peer, c, got + SEG)  # a new hole; the budget has room again
        assert c.ep.rcv.ooo_bytes == SEG
    check_exact(s)
    assert mem.ooo == n * SEG
    reset, aborted, closed, rest = conns[0], conns[1], conns[2], conns[3:]
    peer.send(sport=reset.sport, seq=seq_add(reset.nxt, reset.ep.rcv.bytes_received),
              flags=RST)
    assert reset.ep.state is TcpState.CLOSED and isinstance(reset.ep.error, ConnectionReset)
    aborted.ep.abort()
    closed.ep.close()  # nothing unread: a FIN, and the out-of-order bytes stay until CLOSED
    assert mem.ooo == (n - 2) * SEG
    check_exact(s)
    # the rest of every stream arrives in order and is delivered intact
    for c in rest:
        got = c.ep.rcv.bytes_received
        body = bytearray(c.stream[:got])
        for off in range(got, len(c.stream), SEG):
            send(peer, c, off)
            body += c.ep.read() if c.ep.unread() else b""
        assert bytes(body) == c.stream
    cpu = time.process_time() - t0
    assert cpu < 5.0, cpu
    # everything goes away: the peer FINs, we close; the budget is back at zero
    for c in rest:
        send(peer, c, len(c.stream), 0, flags=ACK | FIN)
        c.ep.close()
    peer.send(sport=closed.sport, seq=seq_add(closed.nxt, closed.ep.rcv.bytes_received),
              flags=RST)
    lst.close()
    s.close()
    assert mem.ooo == 0 and mem.buffered == 0
    assert mem.peak_ooo <= budget


def s_net_settle(peer: stackrig.RawPeer) -> None:
    peer.net.settle()
    peer.frames.clear()


def test_buffered_bytes_budget_refuses_new_connections_and_keeps_established() -> None:
    budget = 100_000
    peer, s, _, conns = open_many(2, Limits(max_buffer_bytes=budget))
    mem = s.tcp.memory
    a, b = conns
    # the peer holds its window at zero: what we write stays in the send buffer
    peer.send(sport=a.sport, seq=a.nxt, ack=a.ack, flags=ACK, window=0)
    assert a.ep.write(b"w" * budget) == budget
    assert mem.buffered == budget and mem.over()
    check_exact(s)
    # a new SYN is refused with a RST (RFC 9293 §3.10.7.2 leaves the choice to the listener)
    peer.send(sport=6000, seq=1, flags=SYN, options=TcpOptions(mss=SEG))
    answer = peer.recv()
    assert [h.flags & (SYN | RST) for h in answer] == [RST]
    st = s.stats()["tcp"]
    assert st["dropped.memory-limit"] == 1 and st.get("dropped.connection-limit", 0) == 0
    assert len(s.tcp.connections) == 2
    # ... out-of-order bytes are refused too (memory pressure), in-order data is still taken
    send(peer, b, SEG)
    assert b.ep.rcv.ooo_bytes == 0 and s.stats()["tcp"]["dropped.ooo-budget"] == 1
    send(peer, b, 0)  # fills the hole; the refused segment comes again, in order
    send(peer, b, SEG)
    assert b.ep.read() == b.stream[:2 * SEG]
    check_exact(s)
    # the established connection still sends: the window opens and the peer acknowledges all
    peer.send(sport=a.sport, seq=a.nxt, ack=a.ack, flags=ACK, window=65535)
    sent = 0
    for _ in range(200):
        segs = [h for h in peer.recv() if h.payload]
        sent += sum(len(h.payload) for h in segs)
        if sent >= budget:
            break
        if segs:
            peer.send(sport=a.sport, seq=a.nxt, ack=seq_add(a.ack, sent), flags=ACK)
        else:
            peer.net.run(duration=0.5)
    peer.send(sport=a.sport, seq=a.nxt, ack=seq_add(a.ack, budget), flags=ACK)
    assert sent == budget and a.ep.send_buffered() == 0
    assert mem.buffered == 0 and not mem.over()
    # ... and a new connection is accepted again
    peer.send(sport=6001, seq=1, flags=SYN, options=TcpOptions(mss=SEG))
    assert [h.flags & (SYN | ACK) for h in peer.recv()] == [SYN | ACK]
    assert s.stats()["tcp"]["dropped.memory-limit"] == 1
    s.close()
    assert mem.buffered == 0 and mem.ooo == 0


def test_receiver_accounting_is_exact_under_random_segments() -> None:
    """Random overlapping segments in random order, reads and a FIN: the budget always equals
    what the receiver holds, never exceeds its cap, and drops to zero on ``release``."""

    class Owner:
        def __init__(self, limits: Limits) -> None:
            self.limits = limits

    rng = random.Random(11)
    for trial in range(30):
        cap = rng.choice([3000, 20000, 1 << 20])
        mem = TcpMemory(Owner(Limits(max_ooo_bytes=cap)))
        r = Receiver(1 << 16, 0)
        r.account = mem
        r.start(rng.getrandbits(32))
        r.advertise(syn=True)
        base = r.rcv_nxt
        data = rng.randbytes(60000)
        got = bytearray()
        for _ in range(400):
            a = rng.randrange(len(data))
            b = min(len(data), a + rng.randrange(1, 3000))
            fin = b == len(data) and rng.random() < 0.5
            r.on_data(seq_add(base, a), memoryview(data)[a:b], fin)
            r.advertise()
            if rng.random() < 0.2:
                if rng.random() < 0.5:
                    got += r.read(rng.randrange(-1, 5000))
                else:
                    out = bytearray(rng.randrange(4000))
                    got += out[:r.read_into(out)]
            assert mem.ooo == r.ooo_bytes == sum(len(blk.data) for blk in r.ooo)
            assert mem.buffered == r.ooo_bytes + len(r.buffer)
            assert mem.ooo <= cap and mem.peak_ooo <= cap
        got += r.read(-1)
        assert bytes(got) == data[:len(got)], trial
        if r.fin_received:
            assert mem.ooo == 0
        r.release()
        r.release()  # idempotent
        assert mem.ooo == 0 and mem.buffered == 0


def test_a_fin_beyond_a_hole_and_the_hole_filling_free_the_queue() -> None:
    lv = stackrig.tcp_peer(limits=Limits(max_ooo_bytes=4 * SEG))
    mem = lv.s.tcp.memory
    body = bytes(range(256)) * 24
    lv.send(seq=lv.peer_nxt + SEG, ack=lv.peer_ack, flags=ACK | FIN, payload=body[SEG:2 * SEG])
    assert mem.ooo == SEG
    lv.send(seq=lv.peer_nxt, ack=lv.peer_ack, flags=ACK, payload=body[:SEG])
    assert mem.ooo == 0 and mem.buffered == 2 * SEG
    assert lv.ep.state is TcpState.CLOSE_WAIT
    assert lv.ep.read() == body[:2 * SEG] and mem.buffered == 0
    lv.ep.close()
    lv.send(seq=lv.peer_nxt + 2 * SEG + 1, ack=lv.ep.snd.snd_max, flags=ACK)
    assert lv.ep.state is TcpState.CLOSED
    lv.s.close()
    assert mem.buffered == 0 and mem.peak_ooo == SEG
