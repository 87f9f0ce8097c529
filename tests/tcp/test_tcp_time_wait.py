"""Compact TIME-WAIT: once the user has closed an endpoint in TIME-WAIT a ``TimeWait`` record
answers for the 4-tuple (``aionetstack.transport.tcp.timewait``).  It must answer exactly as the
endpoint would, keep the port until 2*MSL is over, and let the endpoint go."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator

import pytest
from conformance_helpers import ISS, MSS, PEER_ISS, S, connect, only, to_state
from tcp_helpers import Wire, make_wire

from aionetstack.errors import AddressNotAvailable, ConnectStarted
from aionetstack.stack.waiter import EVENT_HUP
from aionetstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects while the test runs."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _script(wire: Wire, rcv: int, snd: int, ts: bool) -> None:
    """Segments of the old incarnation (and worse) sent to a connection in TIME-WAIT."""

    def opts(tsval: int) -> TcpOptions | None:
        return TcpOptions(timestamp=(tsval, 0)) if ts else None

    wire.advance(3.0)
    wire.send(seq=rcv - 1, ack=snd, flags=ACK | FIN, options=opts(2000))  # retransmitted FIN
    wire.send(seq=rcv, ack=snd, flags=ACK, options=opts(2001))  # a duplicate ACK: ignored
    wire.send(seq=rcv + 10_000_000, ack=snd, flags=ACK, options=opts(2002))  # out of window
    wire.send(seq=rcv + 5, flags=RST)  # in the window, not exact: challenge ACK
    wire.send(seq=rcv, flags=SYN, options=TcpOptions(mss=MSS))  # not beyond: challenge ACK
    wire.send(seq=rcv, ack=snd + 5000, flags=ACK)  # ACK of unsent data
    wire.send(seq=rcv, ack=(snd - 10_000_000) & 0xFFFFFFFF, flags=ACK)  # too old an ACK
    wire.send(seq=rcv, ack=snd, flags=PSH, payload=b"no ack flag")  # dropped
    if ts:
        wire.send(seq=rcv, ack=snd, flags=ACK, options=opts(5))  # PAWS: older than TS.Recent
    wire.advance(1.0)
    wire.send(seq=rcv - 1, ack=snd, flags=ACK | FIN, options=opts(2010))


@pytest.mark.parametrize("ts", [False, True])
def test_record_answers_byte_for_byte_as_the_endpoint(ts: bool) -> None:
    """The same segments to an endpoint kept in TIME-WAIT (not closed by its user) and to a
    closed one (a record answers) draw identical bytes and counters."""
    runs: list[tuple[list[bytes], dict[str, int]]] = []
    for tw in ("TIME_WAIT", "TIME_WAIT_CLOSED"):
        wire = make_wire()
        at = to_state(wire, tw, ts=ts)
        assert (len(wire.tcp.time_wait) == 1) == (tw == "TIME_WAIT_CLOSED")
        answers: list[bytes] = []
        real_send = wire.send

        def send(real: Callable[..., None] = real_send, w: Wire = wire,
                 out: list[bytes] = answers, **kw: object) -> None:
            real(**kw)
            w.recv()
            out.extend(w.raw)

        wire.send = send  # type: ignore[method-assign]
        _script(wire, at.rcv_nxt, at.snd_max, ts)
        assert at.ep.state is S.TIME_WAIT
        runs.append((answers, wire.s.stats()["tcp"]))
    (endpoint_answers, endpoint_stats), (record_answers, record_stats) = runs
    assert len(endpoint_answers) >= 7
    assert record_answers == endpoint_answers
    assert record_stats == endpoint_stats


@pytest.mark.parametrize("ts", [False, True])
def test_record_acks_old_and_future_data(ts: bool) -> None:
    """Data of the old incarnation (or beyond the window) is answered with
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and dropped (no SACK blocks: nothing is queued)."""
    wire = make_wire()
    at = to_state(wire, "TIME_WAIT_CLOSED", ts=ts)
    for seq in (at.rcv_nxt - 200, at.rcv_nxt + 1 << 20):
        wire.send(seq=seq & 0xFFFFFFFF, ack=at.snd_max, flags=ACK | PSH, payload=b"x" * 100,
                  options=TcpOptions(timestamp=(5000, 0)) if ts else None)
        a = only(wire.recv())
        assert a.flags == ACK and a.seq == at.snd_max and a.ack == at.rcv_nxt
        assert not a.payload and not a.options.sack_blocks
        assert (a.options.timestamp is not None) == ts
    assert at.ep.state is S.TIME_WAIT and len(wire.tcp.time_wait) == 1


def test_retransmitted_fin_restarts_2msl_then_the_port_is_released(wire: Wire) -> None:
    ep, syn = connect(wire)
    lport = syn.sport
    wire.send(sport=80, dport=lport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK,
              options=TcpOptions(mss=MSS))
    wire.net.run(0.001)
    wire.recv()
    ep.close()
    fin = only(wire.recv())
    assert fin.flags == ACK | FIN
    wire.send(sport=80, dport=lport, seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    assert only(wire.recv()).ack == PEER_ISS + 2
    assert ep.state is S.TIME_WAIT and ep not in wire.tcp.endpoints
    assert wire.tcp.connections == {} and len(wire.tcp.time_wait) == 1
    assert len(wire.s.ports) == 1 and len(wire.s.timers) == 1
    msl = wire.tcp.msl
    wire.advance(msl)
    wire.send(sport=80, dport=lport, seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 2 and a.ack == PEER_ISS + 2
    heard: list[int] = []
    ep.waiter.register(heard.append, EVENT_HUP)
    wire.advance(2 * msl - 0.5)  # 2*MSL from the retransmitted FIN, not from the first
    assert ep.state is S.TIME_WAIT and len(wire.s.ports) == 1 and heard == []
    wire.advance(1.0)
    assert heard and all(e & EVENT_HUP for e in heard)  # the record's end woke the waiter
    assert ep.state is S.CLOSED and ep.error is None
    assert len(wire.tcp.time_wait) == 0 and len(wire.s.ports) == 0
    assert len(wire.s.timers) == 0
    # the 4-tuple is free again: a new SYN from the peer's port now finds nobody
    wire.send(sport=80, dport=lport, seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK)
    assert only(wire.recv()).flags == RST


def test_a_connect_never_picks_a_4_tuple_in_time_wait(wire: Wire) -> None:
    wire.tcp.isn_override = ISS
    ep = wire.tcp.new_endpoint()
    ep.reuse_address = True
    ep.bind(None, 5555)
    ep.start_connect("198.18.0.2", 80)
    assert only(wire.recv()).flags == SYN
    wire.send(sport=80, dport=5555, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK)
    wire.net.run(0.001)
    wire.recv()
    ep.close()
    assert only(wire.recv()).flags == ACK | FIN
    wire.send(sport=80, dport=5555, seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK | FIN)
    only(wire.recv())
    assert ep.state is S.TIME_WAIT and len(wire.tcp.time_wait) == 1
    again = wire.tcp.new_endpoint()
    again.reuse_address = True
    again.bind(None, 5555)  # SO_REUSEADDR: the port may be shared, the 4-tuple may not
    with pytest.raises(AddressNotAvailable):
        again.connect("198.18.0.2", 80)
    other = wire.tcp.new_endpoint()
    other.reuse_address = True
    other.bind(None, 5555)
    with pytest.raises(ConnectStarted):
        other.connect("198.18.0.2", 81)  # another 4-tuple


def test_abort_of_the_closed_endpoint_ends_the_record(wire: Wire) -> None:
    at = to_state(wire, "TIME_WAIT_CLOSED")
    at.ep.abort()  # no RST from TIME-WAIT
    assert wire.recv() == []
    assert at.ep.state is S.CLOSED and at.ep.error is None
    assert len(wire.tcp.time_wait) == 0 and len(wire.s.timers) == 0


def test_closing_the_stack_ends_every_record(wire: Wire) -> None:
    at = to_state(wire, "TIME_WAIT_CLOSED")
    wire.s.close()
    assert at.ep.state is S.CLOSED
    assert len(wire.tcp.time_wait) == 0 and len(wire.s.ports) == 0


def test_the_closed_endpoint_is_freed_while_the_record_answers(wire: Wire, no_gc: None) -> None:
    at = to_state(wire, "TIME_WAIT_CLOSED")
    rcv, snd = at.rcv_nxt, at.snd_max
    ep = at.ep
    del at
    # ``ep`` (and getrefcount's argument) alone hold it: no reference cycle, and not the
    # record, so reference counting frees it here (the compiled class takes no weak references)
    assert sys.getrefcount(ep) == 2
    del ep
    wire.send(seq=rcv - 1, ack=snd, flags=ACK | FIN)
    a = only(wire.recv())
    assert a.flags == ACK and a.ack == rcv and a.seq == snd
    wire.advance(2 * wire.tcp.msl + 1)
    assert len(wire.tcp.time_wait) == 0


@pytest.mark.parametrize("state", ["CLOSED", "LISTEN"])
def test_finished_endpoints_are_not_kept_in_reference_cycles(wire: Wire, no_gc: None,
                                                             state: str) -> None:
    """A connection that reached CLOSED (here: LAST-ACK, then the ACK of our FIN), or a closed
    listener, is freed by reference counting once nobody holds it: its timers and its sender
    no longer refer back to it."""
    at = to_state(wire, "LAST_ACK")
    (lst,) = wire.tcp.listeners.values()
    wire.send(seq=at.rcv_nxt, ack=at.snd_max, flags=ACK)
    assert at.ep.state is S.CLOSED
    at.ep.close()  # the user lets go too
    held = [at.ep]
    if state == "LISTEN":
        lst.close()
        held.append(lst)
    del at, lst
    # each is held by ``held`` alone (plus ``x`` and getrefcount's argument): freed with it
    assert [sys.getrefcount(x) for x in held] == [3] * len(held)
