"""Packets in, data out: drive a stack by hand, without asyncio (the l3l4kit / smoltcp model).

    net = Embedded(["198.18.0.2/24", "fd00::2/64"], clock=time.monotonic)
    net.listen(7, on_flow=lambda flow: flow.on_data(flow.send))       # an echo server
    while True:
        for pkt in read_packets_from_somewhere():
            net.feed(pkt)                 # IP packets in
        for pkt in net.take_packets():    # IP packets out (or: output=callback, or write_into)
            write_somewhere(pkt)
        deadline = net.poll()             # run timers; when to call poll() again at the latest

Flows surface through callbacks: ``on_flow(flow)`` for each accepted connection; per flow,
``on_data(bytes)``, ``on_end()`` (the peer's FIN) and ``on_close(exc)`` (fully closed or failed).
``flow.send(data)`` queues data (returns how many bytes the send buffer took; the rest is kept
by the flow and sent as the window allows), ``flow.end()`` half-closes, ``flow.close()``,
``flow.abort()``.  Callbacks run after the stack finished processing the input that caused
them — never inside it — so a callback may send, close or feed more packets.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aionetstack.clock import Clock, ManualClock
from aionetstack.errors import ConnectStarted, WouldBlock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver
from aionetstack.stack.addr import AddressLike, to_bytes, to_str
from aionetstack.stack.stack import CoreStack
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp import TcpEndpoint, TcpState


class _PacketLink(Link):
    """An L3 link whose 'wire' is the embedder: packets out go to a queue or callback."""

    name = "embed"

    def __init__(self, mtu: int, output: Callable[[bytes], None] | None) -> None:
        self._caps = LinkCaps(mtu=mtu, l2=False)
        self.output = output
        self.queue: deque[bytes] = deque()
        self.receiver: LinkReceiver | None = None

    @property
    def caps(self) -> LinkCaps:
        return self._caps

    def attach(self, receiver: LinkReceiver, clock: Clock) -> None:
        self.receiver = receiver

    def send(self, frame: Frame) -> None:
        data = bytes(frame)
        if self.output is not None:
            self.output(data)
        else:
            self.queue.append(data)


class Flow:
    """One TCP connection seen from the embedder."""

    def __init__(self, net: Embedded, ep: TcpEndpoint) -> None:
        self._net = net
        self.endpoint = ep
        self._on_data: Callable[[bytes], Any] | None = None
        self._on_end: Callable[[], Any] | None = None
        self._on_close: Callable[[BaseException | None], Any] | None = None
        self._pending = bytearray()
        self._end_requested = False
        self._ended = False
        self._end_seen = False
        self._closed = False
        self.connected = ep.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)
        ep.waiter.register(lambda ev: net._ready(self), EVENT_IN | EVENT_OUT | EVENT_ERR |
                           EVENT_HUP)

    def __repr__(self) -> str:
        return f"<Flow {self.endpoint!r}>"

    @property
    def local(self) -> tuple[str, int]:
        a = self.endpoint.local
        return (to_str(a[0]), a[1]) if a else ("", 0)

    @property
    def remote(self) -> tuple[str, int]:
        a = self.endpoint.remote
        return (to_str(a[0]), a[1]) if a else ("", 0)

    def on_data(self, cb: Callable[[bytes], Any]) -> Flow:
        self._on_data = cb
        self._net._ready(self)
        return self

    def on_end(self, cb: Callable[[], Any]) -> Flow:
        self._on_end = cb
        return self

    def on_close(self, cb: Callable[[BaseException | None], Any]) -> Flow:
        self._on_close = cb
        return self

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data``; returns how much the TCP send buffer took right now."""
        if self._end_requested or self._closed:
            raise BrokenPipeError("flow is closed for sending")
        n = 0
        if not self._pending:
            try:
                n = self.endpoint.write(data)
            except WouldBlock:
                n = 0
        if n < len(data):
            self._pending += memoryview(data)[n:]
        return n

    @property
    def unsent(self) -> int:
        return len(self._pending) + self.endpoint.send_buffered()

    def end(self) -> None:
        """Half-close: FIN after everything queued."""
        self._end_requested = True
        self._pump()

    def close(self) -> None:
        self._end_requested = True
        self.endpoint.close()

    def abort(self) -> None:
        self._pending.clear()
        self.endpoint.abort()

    def _pump(self) -> None:
        ep = self.endpoint
        if self._pending:
            try:
                n = ep.write(self._pending)
            except WouldBlock:
                n = 0
            except OSError:
                self._pending.clear()
                return
            del self._pending[:n]
        if self._end_requested and not self._pending and not self._ended:
            self._ended = True
            try:
                ep.shutdown_write()
            except OSError:
                pass

    def _dispatch(self) -> None:
        ep = self.endpoint
        if not self.connected and ep.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT,
                                               TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
            self.connected = True
        self._pump()
        while self._on_data is not None and not self._closed:
            try:
                data = ep.read(256 * 1024)
            except WouldBlock:
                break
            except OSError:
                break
            if not data:
                if self._on_end is not None and not self._end_seen:
                    self._end_seen = True
                    self._on_end()
                break
            self._on_data(data)
        done = ep.error is not None or ep.state in (TcpState.CLOSED, TcpState.TIME_WAIT)
        if done and not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close(ep.error)


class Embedded:
    """A stack with one L3 interface whose packets the caller moves."""

    def __init__(self, addresses: Iterable[str], *, mtu: int = 1500,
                 clock: Clock | None = None, seed: int | None = None,
                 output: Callable[[bytes], None] | None = None,
                 routes: Iterable[str] = ("0.0.0.0/0", "::/0")) -> None:
        self.clock: Clock = clock or ManualClock()
        rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self.stack = CoreStack(clock=self.clock, rng=rng)
        self._link = _PacketLink(mtu, output)
        self.nic = self.stack.add_nic(self._link, list(addresses), name="embed0")
        for r in routes:  # everything not local leaves through the caller
            fam6 = ":" in r
            if any((len(a.address) == 16) == fam6 for a in self.nic.addresses):
                self.stack.routes.add(_route(r, self.nic.id))
        self._ready_flows: dict[Flow, None] = {}
        self._accept_pending = False
        self._listeners: list[tuple[TcpEndpoint, Callable[[Flow], Any]]] = []
        self._flows: set[Flow] = set()

    # -- packets -------------------------------------------------------------------------------
    def feed(self, packet: bytes | bytearray | memoryview) -> None:
        """One IP packet in (IPv4 or IPv6).  Malformed packets are counted and dropped."""
        self.nic.link_deliver(memoryview(packet))
        self._dispatch()

    def take_packets(self) -> list[bytes]:
        """Every IP packet the stack has sent since the last call (queue mode)."""
        out = list(self._link.queue)
        self._link.queue.clear()
        return out

    def write_into(self, buf: bytearray | memoryview) -> int:
        """Copy the next outbound packet into ``buf``; its length, 0 when none is waiting.

        Raises ValueError (and keeps the packet) when ``buf`` is too small for it.
        """
        q = self._link.queue
        if not q:
            return 0
        pkt = q[0]
        if len(buf) < len(pkt):
            raise ValueError(f"buffer of {len(buf)} bytes is too small for a "
                             f"{len(pkt)}-byte packet")
        buf[:len(pkt)] = pkt
        q.popleft()
        return len(pkt)

    def poll(self, now: float | None = None) -> float | None:
        """Run due timers; returns the next deadline (call ``poll`` again by then)."""
        nxt = self.stack.poll(now)
        self._dispatch()
        return nxt

    # -- flows ---------------------------------------------------------------------------------
    def listen(self, port: int, on_flow: Callable[[Flow], Any],
               address: AddressLike | None = None, backlog: int = 128) -> None:
        fam = 6 if address is not None and len(to_bytes(address)) == 16 else 4
        families = [fam] if address is not None else [4, 6]
        for f in families:
            if not any(a.family == f for a in self.nic.addresses):
                continue
            ep = self.stack.tcp.new_endpoint(f)
            ep.bind(address, port)
            ep.listen(backlog)
            ep.waiter.register(lambda ev: self._accept_ready(), EVENT_IN)
            self._listeners.append((ep, on_flow))

    def connect(self, address: AddressLike, port: int) -> Flow:
        dst = to_bytes(address)
        ep = self.stack.tcp.new_endpoint(4 if len(dst) == 4 else 6)
        try:
            ep.connect(dst, port)
        except ConnectStarted:
            pass
        flow = Flow(self, ep)
        self._flows.add(flow)
        return flow

    def _accept_ready(self) -> None:
        self._accept_pending = True

    def _ready(self, flow: Flow) -> None:
        self._ready_flows[flow] = None

    def _dispatch(self) -> None:
        for _ in range(1000):
            if self._accept_pending:
                self._accept_pending = False
                self._accept_all()
            if not self._ready_flows:
                return
            ready = list(self._ready_flows)
            self._ready_flows.clear()
            for flow in ready:
                flow._dispatch()
                if flow._closed:
                    self._flows.discard(flow)

    def _accept_all(self) -> None:
        for ep, on_flow in self._listeners:
            while True:
                try:
                    child = ep.accept()
                except WouldBlock:
                    break
                flow = Flow(self, child)
                self._flows.add(flow)
                on_flow(flow)
                self._ready(flow)

    def flows(self) -> list[Flow]:
        return list(self._flows)


def _route(spec: str, nic_id: int) -> Any:
    from aionetstack.stack.addr import parse_network
    from aionetstack.stack.route import RouteEntry

    net, plen = parse_network(spec)
    return RouteEntry(net, plen, nic_id, metric=1000)
