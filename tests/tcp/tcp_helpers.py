"""TCP test helpers: two stacks over a pipe, and a hand-driven wire for packet tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from aionetstack.errors import ConnectStarted
from aionetstack.link.pipe import PipeEnd, pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint, TcpProtocol, install_tcp
from aionetstack.wire.ipv4 import pack_ipv4, parse_ipv4
from aionetstack.wire.tcp import TcpHeader, TcpOptions, pack_tcp, parse_tcp

A = "198.18.0.1"
B = "198.18.0.2"


@dataclass
class Pair:
    net: VirtualNetwork
    a: CoreStack
    b: CoreStack
    ta: TcpProtocol
    tb: TcpProtocol
    links: tuple[PipeEnd, PipeEnd]

    def run(self, until: Callable[[], bool], timeout: float = 60.0) -> bool:
        return self.net.run(until=until, timeout=timeout)

    def connect(self, port: int = 80) -> tuple[TcpEndpoint, TcpEndpoint, TcpEndpoint]:
        """(listener on b, client on a, accepted server endpoint on b)."""
        lst = self.tb.new_endpoint()
        lst.bind(None, port)
        lst.listen(16)
        cli = self.ta.new_endpoint()
        with pytest.raises(ConnectStarted):
            cli.connect(B, port)
        accepted: list[TcpEndpoint] = []

        def ready() -> bool:
            if not accepted and lst.listen_queue and lst.listen_queue.accept_queue:
                accepted.append(lst.accept())
            return bool(accepted) and cli.state.name == "ESTABLISHED"

        assert self.run(ready, 30.0)
        return lst, cli, accepted[0]

    def assert_no_leaks(self) -> None:
        for s, t in ((self.a, self.ta), (self.b, self.tb)):
            assert t.connections == {}
            assert len(t.time_wait) == 0
            assert t.listeners == {}
            assert len(t.endpoints) == 0, t.endpoints
            assert len(s.ports) == 0


def make_pair(seed: int = 1, **pipe_kw: Any) -> Pair:
    net = VirtualNetwork(seed=seed)
    a, b = net.stack(), net.stack()
    ea, eb = pipe(seed=seed, **pipe_kw)
    a.add_nic(ea, [A + "/24"])
    b.add_nic(eb, [B + "/24"])
    return Pair(net, a, b, install_tcp(a), install_tcp(b), (ea, eb))


@dataclass
class Wire:
    """Stack ``s`` (198.18.0.1) on one end of a pipe; the test drives the other end by hand."""

    net: VirtualNetwork
    s: CoreStack
    tcp: TcpProtocol
    end: PipeEnd
    frames: list[bytes] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # the TCP bytes of the last ``recv``
    peer: bytes = field(default_factory=lambda: to_bytes(B))
    local: bytes = field(default_factory=lambda: to_bytes(A))

    # LinkReceiver
    def link_deliver(self, frame: memoryview) -> None:
        self.frames.append(bytes(frame))

    def link_wakeup(self, at: float) -> None:
        pass

    def send(self, *, sport: int = 4000, dport: int = 80, seq: int = 0, ack: int = 0,
             flags: int = 0, window: int = 65535, options: TcpOptions | None = None,
             payload: bytes = b"", settle: bool = True) -> None:
        """Send one segment to the stack; with ``settle=False`` it waits in the pipe, to arrive
        in one batch with the next ones (as from one read of a link)."""
        l4 = 20 + (options.packed_len() if options else 0) + len(payload)
        buf = bytearray(20 + l4)
        pack_ipv4(buf, 0, src=self.peer, dst=self.local, protocol=6, payload_len=l4)
        pack_tcp(buf, 20, src=self.peer, dst=self.local, sport=sport, dport=dport, seq=seq,
                 ack=ack, flags=flags, window=window, options=options, payload=payload)
        self.end.send(buf)
        if settle:
            self.net.settle()

    def recv(self) -> list[TcpHeader]:
        """Every TCP segment the stack emitted since the last call."""
        self.net.settle()
        self.end.poll()
        out = []
        self.raw = []
        for f in self.frames:
            ip = parse_ipv4(memoryview(f))
            if ip.protocol == 6:
                self.raw.append(f[ip.header_len:])
                out.append(parse_tcp(memoryview(f)[ip.header_len:]))
        self.frames.clear()
        return out

    def advance(self, seconds: float) -> None:
        self.net.run(seconds)


def make_wire(seed: int = 3) -> Wire:
    net = VirtualNetwork(seed=seed)
    s = net.stack()
    ea, eb = pipe(seed=seed)
    s.add_nic(ea, [A + "/24"])
    w = Wire(net, s, install_tcp(s), eb)
    eb.attach(w, net.clock)
    return w
