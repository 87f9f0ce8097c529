"""A hypothesis state machine: two TCP endpoints over a lossy link on a manual clock.

Every segment either stack sends waits in a ``Relay`` until a rule delivers, drops, duplicates or
reorders it.  Other rules write random data, read, advance virtual time, shut down writing, close
and abort.  Invariants after every step, for both endpoints:

* ``snd_una <= snd_nxt <= snd_max`` in sequence-number arithmetic;
* the send buffer within its capacity, the receive buffer within capacity plus one window-scale
  unit, out-of-order bytes within the receive window;
* the bytes each side has read are exactly a prefix of what the other side wrote (no loss in
  the middle, no duplicate, no reordering).

Teardown lets the link carry everything, reads what is left, closes both ends and runs virtual
time until no timer is pending: then every waiter was woken with HUP, no endpoint is left in the
tables, no port is reserved and no timer is armed (TIME-WAIT included).
"""

from __future__ import annotations

import random

import stackrig
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aionetstack.errors import ConnectStarted, NetstackError, WouldBlock
from aionetstack.link.pipe import pipe
from aionetstack.stack.waiter import EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.seqnum import seq_le, seq_sub

FIGURES = {"runs": 0, "steps": 0, "segments": 0, "bytes": 0, "delivered": 0}


class TwoEndpoints(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16), small=st.booleans())
    def setup(self, seed: int, small: bool) -> None:
        FIGURES["runs"] += 1
        self.net = VirtualNetwork(seed=seed)
        a, b = self.net.stack(), self.net.stack()
        self.stacks = (a, b)
        ea, ra = pipe(seed=seed)
        eb, rb = pipe(seed=seed + 1)
        a.add_nic(ea, ["198.18.0.1/24"])
        b.add_nic(eb, ["198.18.0.2/24"])
        self.relay = stackrig.Relay(self.net, (ra, rb))
        if small:  # small buffers: zero windows, persist probes, partial writes
            for s in self.stacks:
                s.tcp.rcvbuf = 3000
                s.tcp.sndbuf = 5000
        lst = b.tcp.new_endpoint()
        lst.bind(None, 80)
        lst.listen(4)
        cli = a.tcp.new_endpoint()
        try:
            cli.connect("198.18.0.2", 80)
        except ConnectStarted:
            pass
        self.relay.auto = True  # the handshake goes through unharmed
        self.net.run(until=lambda: bool(lst.listen_queue and lst.listen_queue.accept_queue),
                     timeout=10)
        srv = lst.accept()
        lst.close()
        self.net.settle()
        self.relay.auto = False
        self.eps: tuple[TcpEndpoint, TcpEndpoint] = (cli, srv)
        self.written = [bytearray(), bytearray()]
        self.read_ = [bytearray(), bytearray()]
        self.hup = [False, False]
        self.rng = random.Random(seed)
        for i, ep in enumerate(self.eps):
            ep.waiter.register(self._waker(i), EVENT_IN | EVENT_OUT | EVENT_HUP)

    def _waker(self, i: int):  # type: ignore[no-untyped-def]
        def wake(events: int) -> None:
            if events & EVENT_HUP:
                self.hup[i] = True
        return wake

    # -- API rules --------------------------------------------------------------------------------
    @rule(side=st.integers(0, 1), size=st.integers(1, 20000))
    def write(self, side: int, size: int) -> None:
        data = self.rng.randbytes(size)
        try:
            n = self.eps[side].write(data)
        except (WouldBlock, NetstackError):
            return
        self.written[side] += data[:n]
        FIGURES["bytes"] += n
        self.net.settle()

    @rule(side=st.integers(0, 1), n=st.sampled_from([-1, 1, 100, 5000]))
    def read(self, side: int, n: int) -> None:
        try:
            data = self.eps[side].read(n)
        except (WouldBlock, NetstackError):
            return
        self.read_[side] += data
        self.net.settle()

    @rule(seconds=st.sampled_from([0.001, 0.04, 0.2, 1.0, 3.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.net.run(duration=seconds)

    @rule(side=st.integers(0, 1))
    def shutdown_write(self, side: int) -> None:
        try:
            self.eps[side].shutdown_write()
        except NetstackError:
            pass
        self.net.settle()

    @precondition(lambda self: self.rng.random() < 0.3)
    @rule(side=st.integers(0, 1))
    def close(self, side: int) -> None:
        self.eps[side].close()
        self.net.settle()

    @precondition(lambda self: self.rng.random() < 0.15)
    @rule(side=st.integers(0, 1))
    def abort(self, side: int) -> None:
        self.eps[side].abort()
        self.net.settle()

    # -- link rules -------------------------------------------------------------------------------
    @rule(n=st.integers(1, 8))
    def deliver(self, n: int) -> None:
        FIGURES["segments"] += min(n, len(self.relay.queue))
        self.relay.deliver(n)

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.1]))
    def pump(self, seconds: float) -> None:
        """Deliver everything queued, then let time pass (ACKs, retransmissions)."""
        FIGURES["segments"] += len(self.relay.queue)
        self.relay.deliver(len(self.relay.queue))
        if seconds:
            self.net.run(duration=seconds)

    @rule()
    def drop_next(self) -> None:
        self.relay.drop()

    @rule()
    def duplicate_next(self) -> None:
        self.relay.duplicate()

    @rule()
    def reorder_next(self) -> None:
        self.relay.reorder()

    # -- invariants -------------------------------------------------------------------------------
    @invariant()
    def sequence_space(self) -> None:
        FIGURES["steps"] += 1
        for ep in self.eps:
            snd, rcv = ep.snd, ep.rcv
            if ep.state is TcpState.CLOSED:
                continue
            assert seq_le(snd.snd_una, snd.snd_nxt), ep
            assert seq_le(snd.snd_nxt, snd.snd_max), ep
            assert seq_sub(snd.snd_max, snd.snd_una) <= len(snd.buffer) + 2
            assert len(snd.buffer) <= snd.capacity
            assert len(rcv.buffer) <= rcv.capacity + (1 << rcv.rcv_wscale)
            assert rcv.ooo_bytes <= rcv.capacity + (1 << rcv.rcv_wscale)

    @invariant()
    def memory_accounting_is_exact(self) -> None:
        """Each stack's ``tcp.memory`` is what its connections hold (Limits budgets)."""
        for s, ep in zip(self.stacks, self.eps, strict=True):
            mem = s.tcp.memory
            live = {e for e in (ep, *s.tcp.endpoints) if e.rcv.account is mem}
            assert mem.ooo == sum(e.rcv.ooo_bytes for e in live)
            assert mem.buffered == sum(e.rcv.ooo_bytes + len(e.rcv.buffer) + len(e.snd.buffer)
                                       for e in live)

    @invariant()
    def delivered_is_a_prefix(self) -> None:
        for side in (0, 1):
            got, sent = self.read_[1 - side], self.written[side]
            assert len(got) <= len(sent)
            assert got == sent[:len(got)], "data corrupted, duplicated or reordered"

    def teardown(self) -> None:
        if not hasattr(self, "eps"):
            return
        self.relay.flush()
        for i, ep in enumerate(self.eps):
            while True:
                try:
                    data = ep.read()
                except (WouldBlock, NetstackError):
                    break
                if not data:
                    break
                self.read_[i] += data
        self.delivered_is_a_prefix()
        FIGURES["delivered"] += len(self.read_[0]) + len(self.read_[1])
        for ep in self.eps:
            ep.close()
        assert self.net.run(timeout=3600.0), "timers still pending after an hour"
        for i, (s, ep) in enumerate(zip(self.stacks, self.eps, strict=True)):
            assert ep.state is TcpState.CLOSED, ep
            assert self.hup[i], "a waiter was never told the endpoint ended"
            assert s.tcp.connections == {} and s.tcp.listeners == {}
            assert len(s.tcp.endpoints) == 0, s.tcp.endpoints
            assert len(s.ports) == 0
            assert len(s.timers) == 0
            assert s.tcp.memory.buffered == 0 and s.tcp.memory.ooo == 0


TwoEndpoints.TestCase.settings = settings(
    max_examples=300, stateful_step_count=80, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_two_endpoints_over_a_lossy_link = TwoEndpoints.TestCase


def test_stateful_figures() -> None:
    print(f"\nstateful: {FIGURES['runs']} runs, {FIGURES['steps']} steps, "
          f"{FIGURES['segments']} segments relayed, {FIGURES['bytes']} bytes written, "
          f"{FIGURES['delivered']} read")
