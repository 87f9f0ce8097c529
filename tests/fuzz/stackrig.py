"""Shared rigs for the fuzz, attack and soak suites (imported as a plain module).

* ``RawPeer`` -- the far end of an L3 pipe driven by hand: it sends hand-built IPv4/TCP segments
  from any source address (spoofing is the point) and parses what the stack answers.
* ``Relay`` -- sits between two pipes and holds every frame until a test delivers, drops,
  duplicates or reorders it (the lossy link of the stateful test).
* ``tcp_peer`` -- a stack with a listener on port 80 and a ``RawPeer`` that completed the
  three-way handshake by hand, for segment-level tests against a live connection.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from aionetstack.link.pipe import PipeEnd, pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.stack.limits import Limits
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.ipv4 import pack_ipv4, parse_ipv4
from aionetstack.wire.seqnum import MASK
from aionetstack.wire.tcp import ACK, SYN, TcpHeader, TcpOptions, pack_tcp, parse_tcp

TESTS = Path(__file__).resolve().parents[1]
for _sub in ("core", "tcp", "fuzz"):
    if str(TESTS / _sub) not in sys.path:
        sys.path.append(str(TESTS / _sub))

LOCAL = "198.18.0.1"
PEER = "198.18.0.2"


@dataclass
class RawPeer:
    """An L3 pipe end driven by the test.  ``keep=False`` only counts the frames it receives."""

    net: VirtualNetwork
    end: PipeEnd
    local: bytes
    src: bytes
    keep: bool = True
    frames: list[bytes] = field(default_factory=list)
    received: int = 0

    def link_deliver(self, frame: memoryview) -> None:
        self.received += 1
        if self.keep:
            self.frames.append(bytes(frame))

    def link_wakeup(self, at: float) -> None:
        if at <= self.net.now:
            self.end.poll()

    def segment(self, *, sport: int = 4000, dport: int = 80, seq: int = 0, ack: int = 0,
                flags: int = ACK, window: int = 65535, options: TcpOptions | None = None,
                payload: bytes = b"", src: bytes | None = None) -> bytearray:
        src = src or self.src
        l4 = 20 + (options.packed_len() if options else 0) + len(payload)
        buf = bytearray(20 + l4)
        pack_ipv4(buf, 0, src=src, dst=self.local, protocol=6, payload_len=l4)
        pack_tcp(buf, 20, src=src, dst=self.local, sport=sport, dport=dport, seq=seq & MASK,
                 ack=ack & MASK, flags=flags, window=window, options=options, payload=payload)
        return buf

    def send_raw(self, packet: bytes | bytearray, settle: bool = True) -> None:
        self.end.send(packet)
        if settle:
            self.net.settle()

    def send(self, **kw: object) -> None:
        self.send_raw(self.segment(**kw))  # type: ignore[arg-type]

    def recv(self) -> list[TcpHeader]:
        """Every TCP segment the stack sent since the last call (others are discarded)."""
        self.net.settle()
        self.end.poll()
        out: list[TcpHeader] = []
        for f in self.frames:
            try:
                ip = parse_ipv4(memoryview(f))
            except MalformedPacket:
                continue
            if ip.protocol == 6:
                out.append(parse_tcp(memoryview(f)[ip.header_len:ip.total_length]))
        self.frames.clear()
        return out


def raw_stack(seed: int = 3, *, limits: Limits | None = None, prefix: str = "/16",
              verify: bool = True) -> tuple[VirtualNetwork, CoreStack, RawPeer]:
    net = VirtualNetwork(seed=seed)
    s = net.stack(limits=limits)
    se, pe = pipe(seed=seed)
    nic = s.add_nic(se, [LOCAL + prefix])
    if verify:
        nic.rx_trusted = False
        nic.tx_offload = False
    peer = RawPeer(net, pe, to_bytes(LOCAL), to_bytes(PEER))
    pe.attach(peer, net.clock)
    return net, s, peer


@dataclass
class Live:
    net: VirtualNetwork
    s: CoreStack
    peer: RawPeer
    listener: TcpEndpoint
    ep: TcpEndpoint
    sport: int
    peer_nxt: int  # the peer's next sequence number (== ep.rcv.rcv_nxt)
    peer_ack: int  # what the peer acknowledged (== ep.snd.snd_una)

    def send(self, **kw: object) -> None:
        kw.setdefault("sport", self.sport)
        self.peer.send(**kw)


def tcp_peer(seed: int = 3, *, mss: int | None = 1460, window: int = 65535,
             wscale: int | None = None, limits: Limits | None = None,
             sport: int = 4000) -> Live:
    """A stack listening on :80 and a connection to it from a hand-driven peer."""
    net, s, peer = raw_stack(seed, limits=limits)
    lst = s.tcp.new_endpoint()
    lst.bind(None, 80)
    lst.listen(16)
    isn = 1000
    peer.send(sport=sport, seq=isn, flags=SYN, window=window,
              options=TcpOptions(mss=mss, wscale=wscale))
    synack = [h for h in peer.recv() if h.flags & SYN]
    assert len(synack) == 1, synack
    sa = synack[0]
    peer.send(sport=sport, seq=isn + 1, ack=sa.seq + 1, flags=ACK, window=window)
    ep = lst.accept()
    assert ep.state.name == "ESTABLISHED"
    peer.recv()
    return Live(net, s, peer, lst, ep, sport, isn + 1, (sa.seq + 1) & MASK)


class Relay:
    """Holds frames between two stacks; the test decides their fate.

    Frames from side 0 travel to side 1 and back.  ``auto`` forwards at once (teardown).
    """

    def __init__(self, net: VirtualNetwork, ends: tuple[PipeEnd, PipeEnd]) -> None:
        self.net = net
        self.ends = ends
        self.queue: deque[tuple[int, bytes]] = deque()
        self.auto = False
        self.delivered = self.dropped = self.duplicated = self.reordered = 0
        ends[0].attach(_Side(self, 0), net.clock)
        ends[1].attach(_Side(self, 1), net.clock)

    def arrived(self, side: int, frame: bytes) -> None:
        if self.auto:
            self._out(side, frame)
        else:
            self.queue.append((side, frame))

    def _out(self, side: int, frame: bytes) -> None:
        self.delivered += 1
        self.ends[1 - side].send(frame)

    def deliver(self, n: int = 1) -> None:
        for _ in range(min(n, len(self.queue))):
            self._out(*self.queue.popleft())
        self.net.settle()

    def drop(self) -> None:
        if self.queue:
            self.queue.popleft()
            self.dropped += 1

    def duplicate(self) -> None:
        if self.queue:
            self.queue.appendleft(self.queue[0])
            self.duplicated += 1

    def reorder(self) -> None:
        if len(self.queue) >= 2:
            a = self.queue.popleft()
            b = self.queue.popleft()
            self.queue.appendleft(a)
            self.queue.appendleft(b)
            self.reordered += 1

    def flush(self) -> None:
        self.auto = True
        while self.queue:
            self._out(*self.queue.popleft())
        self.net.settle()


class _Side:
    def __init__(self, relay: Relay, side: int) -> None:
        self.relay = relay
        self.side = side

    def link_deliver(self, frame: memoryview) -> None:
        self.relay.arrived(self.side, bytes(frame))

    def link_wakeup(self, at: float) -> None:
        end = self.relay.ends[self.side]
        if at <= self.relay.net.now:
            end.poll()
