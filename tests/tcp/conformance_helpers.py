"""Shared setup for the packet-level conformance tests (``test_tcp_conformance_*``).

The stack under test is 198.18.0.1 with ISN ``ISS``; the hand-driven peer (198.18.0.2:4000) uses
``PEER_ISS``.  ``establish`` runs a passive open; ``to_state`` drives the child endpoint into any
synchronized state and reports the sequence numbers that state implies.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tcp_helpers import Wire

from aionetstack.errors import ConnectStarted
from aionetstack.transport.tcp import TcpEndpoint, TcpState
from aionetstack.wire.tcp import ACK, FIN, SYN, TcpHeader, TcpOptions

ISS = 1000
PEER_ISS = 5000
MSS = 1460
S = TcpState

SYNCHRONIZED = ["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK",
                "TIME_WAIT", "TIME_WAIT_CLOSED"]
# TIME_WAIT_CLOSED: TIME-WAIT after the user closed the endpoint, where a compact ``TimeWait``
# record answers instead of the endpoint (``aionetstack.transport.tcp.timewait``)
TIME_WAITS = ["TIME_WAIT", "TIME_WAIT_CLOSED"]


def state_of(name: str) -> TcpState:
    """The TCP state a ``to_state`` name stands for."""
    return S[name.removesuffix("_CLOSED")]


def only(segs: list[TcpHeader]) -> TcpHeader:
    assert len(segs) == 1, segs
    return segs[0]


def listener(wire: Wire, backlog: int = 4, port: int = 80) -> TcpEndpoint:
    wire.tcp.isn_override = ISS
    lst = wire.tcp.new_endpoint()
    lst.bind(None, port)
    lst.listen(backlog)
    return lst


def establish(wire: Wire, *, ts: bool = False, wscale: int | None = 7, window: int = 65535,
              sack: bool = True, mss: int | None = MSS, iss: int = ISS,
              peer_iss: int = PEER_ISS) -> tuple[TcpEndpoint, TcpEndpoint]:
    """A passive open completed by the peer; (listener, accepted child)."""
    lst = listener(wire)
    wire.tcp.isn_override = iss
    opts = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack,
                      timestamp=(777, 0) if ts else None)
    wire.send(seq=peer_iss, flags=SYN, options=opts, window=window)
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.seq == iss and sa.ack == (peer_iss + 1) & 0xFFFFFFFF
    wire.send(seq=(peer_iss + 1) & 0xFFFFFFFF, ack=(iss + 1) & 0xFFFFFFFF, flags=ACK,
              window=window,
              options=TcpOptions(timestamp=(778, sa.options.timestamp[0])) if ts else None)
    assert wire.recv() == []
    child = lst.accept()
    assert child.state is S.ESTABLISHED
    return lst, child


def connect(wire: Wire, port: int = 80) -> tuple[TcpEndpoint, TcpHeader]:
    """An active open to the peer; (endpoint, the SYN it sent)."""
    wire.tcp.isn_override = ISS
    ep = wire.tcp.new_endpoint()
    with pytest.raises(ConnectStarted):
        ep.connect("198.18.0.2", port)
    syn = only(wire.recv())
    assert syn.flags == SYN and syn.seq == ISS
    return ep, syn


@dataclass
class At:
    """An endpoint in a given state: what it expects next (``rcv_nxt``) and sent up to."""

    ep: TcpEndpoint
    rcv_nxt: int
    snd_max: int


def to_state(wire: Wire, state: str, *, ts: bool = False) -> At:
    """Drive a passively opened endpoint into ``state`` (a name from ``SYNCHRONIZED``)."""
    closed = state.endswith("_CLOSED")
    state = state.removesuffix("_CLOSED")
    _, ep = establish(wire, ts=ts)
    rcv, snd = PEER_ISS + 1, ISS + 1
    tsv = [1000]

    def peer(**kw: object) -> None:
        if ts:
            tsv[0] += 1
            kw["options"] = TcpOptions(timestamp=(tsv[0], 0))
        wire.send(**kw)  # type: ignore[arg-type]

    if state in ("CLOSE_WAIT", "LAST_ACK"):
        peer(seq=rcv, ack=snd, flags=ACK | FIN)
        rcv += 1
        assert only(wire.recv()).ack == rcv
        if state == "LAST_ACK":
            ep.shutdown_write()
            assert only(wire.recv()).flags == ACK | FIN
            snd += 1
    elif state != "ESTABLISHED":
        ep.shutdown_write()
        assert only(wire.recv()).flags == ACK | FIN
        snd += 1
        if state in ("FIN_WAIT_2", "TIME_WAIT"):
            peer(seq=rcv, ack=snd, flags=ACK)
            assert wire.recv() == []
        if state in ("CLOSING", "TIME_WAIT"):
            peer(seq=rcv, ack=snd if state == "TIME_WAIT" else ISS + 1, flags=ACK | FIN)
            rcv += 1
            assert only(wire.recv()).ack == rcv
    assert ep.state is S[state], (ep.state, state)
    if closed:
        ep.close()
        assert wire.recv() == [] and ep.state is S[state]
        assert len(wire.tcp.time_wait) == 1 and ep not in wire.tcp.endpoints
    return At(ep, rcv, snd)
