"""Blind in-window attacks on a live connection (RFC 5961) and ACKs of unsent data.

The attacker knows the 4-tuple but not the sequence numbers.  Only a RST at exactly RCV.NXT
resets; any other in-window RST or any SYN draws a challenge ACK (§3, §4); data whose ACK is
outside [SND.UNA - MAX.SND.WND, SND.NXT] is dropped with an ACK (§5); challenge ACKs are
rate-limited per stack (§7).  Optimistic ACKs -- acknowledging data never sent -- are answered
and ignored: ``snd_una`` does not move and ``cwnd`` does not grow.
"""

from __future__ import annotations

import pytest
import stackrig

from aionetstack.errors import ConnectionReset
from aionetstack.transport.tcp.state import TcpState
from aionetstack.wire.seqnum import MASK
from aionetstack.wire.tcp import ACK, RST, SYN

ATTACKS: list[str] = []


def live(**kw: object) -> stackrig.Live:
    lv = stackrig.tcp_peer(**kw)  # type: ignore[arg-type]
    lv.ep.write(b"server data" * 100)  # something in flight
    lv.net.settle()
    lv.peer.recv()
    return lv


def challenge_acks(lv: stackrig.Live) -> int:
    return int(lv.s.stats()["tcp"].get("challenge-acks", 0))


def assert_challenge_ack(lv: stackrig.Live) -> None:
    replies = lv.peer.recv()
    assert len(replies) == 1, replies
    r = replies[0]
    assert r.flags == ACK and not r.payload
    assert r.ack == lv.ep.rcv.rcv_nxt  # tells the real peer where we are


def test_rst_with_exact_sequence_number_resets() -> None:
    ATTACKS.append("rst-exact")
    lv = live()
    lv.send(seq=lv.ep.rcv.rcv_nxt, flags=RST)
    assert lv.ep.state is TcpState.CLOSED
    assert isinstance(lv.ep.error, ConnectionReset)
    assert lv.peer.recv() == []


@pytest.mark.parametrize("offset", [1, 100, 30000, 65534])
def test_in_window_rst_draws_a_challenge_ack(offset: int) -> None:
    ATTACKS.append("rst-in-window")
    lv = live()
    nxt = lv.ep.rcv.rcv_nxt
    lv.send(seq=nxt + offset, flags=RST)
    lv.send(seq=nxt + offset, ack=lv.peer_ack, flags=RST | ACK)
    assert lv.ep.state is TcpState.ESTABLISHED
    assert challenge_acks(lv) == 2
    replies = lv.peer.recv()
    assert len(replies) == 2 and all(r.flags == ACK and r.ack == nxt for r in replies)


@pytest.mark.parametrize("offset", [-1, -70000, 65535, 2**31])
def test_out_of_window_rst_is_silently_dropped(offset: int) -> None:
    ATTACKS.append("rst-out-of-window")
    lv = live()
    lv.send(seq=lv.ep.rcv.rcv_nxt + offset, flags=RST)
    assert lv.ep.state is TcpState.ESTABLISHED
    assert lv.peer.recv() == [] and challenge_acks(lv) == 0


def test_blind_rst_sweep_of_the_whole_sequence_space() -> None:
    """One RST per window across all 2**32 sequence numbers: the one that lands in the window
    is not exact, so the connection survives on a challenge ACK."""
    ATTACKS.append("rst-sweep")
    lv = live(wscale=7)
    wnd = lv.ep.rcv.rcv_wnd
    assert wnd > 200000
    start = (lv.ep.rcv.rcv_nxt + 12345) & MASK
    tries = 0
    for k in range(0, 2**32, wnd):
        lv.peer.send_raw(lv.peer.segment(sport=lv.sport, seq=start + k, flags=RST), settle=False)
        tries += 1
        if tries % 256 == 0:
            lv.net.settle()
    lv.net.settle()
    assert tries >= 2**32 // wnd
    assert lv.ep.state is TcpState.ESTABLISHED
    assert 1 <= challenge_acks(lv) <= 2


@pytest.mark.parametrize("where", ["exact", "in-window", "out-of-window"])
def test_syn_on_an_established_connection(where: str) -> None:
    ATTACKS.append("syn-injection")
    lv = live()
    nxt = lv.ep.rcv.rcv_nxt
    seq = {"exact": nxt, "in-window": nxt + 500, "out-of-window": nxt - 5000}[where]
    lv.send(seq=seq, flags=SYN)
    assert lv.ep.state is TcpState.ESTABLISHED
    assert_challenge_ack(lv)
    assert challenge_acks(lv) == (0 if where == "out-of-window" else 1)


@pytest.mark.parametrize("ack", ["too-old", "unsent"])
def test_blind_data_injection_with_a_bad_ack_is_dropped(ack: str) -> None:
    ATTACKS.append("data-injection")
    lv = live()
    snd = lv.ep.snd
    a = {"too-old": snd.snd_una - snd.max_snd_wnd - 1000, "unsent": snd.snd_max + 1000}[ack]
    lv.send(seq=lv.ep.rcv.rcv_nxt, ack=a, flags=ACK, payload=b"EVIL" * 10)
    assert lv.ep.unread() == 0 and lv.ep.rcv.rcv_nxt == lv.peer_nxt
    assert lv.ep.state is TcpState.ESTABLISHED
    assert_challenge_ack(lv)


def test_challenge_acks_are_rate_limited() -> None:
    ATTACKS.append("challenge-ack-rate")
    lv = live()
    nxt = lv.ep.rcv.rcv_nxt
    for i in range(3000):
        lv.peer.send_raw(lv.peer.segment(sport=lv.sport, seq=nxt + 1 + i, flags=RST),
                         settle=False)
    lv.net.settle()
    st = lv.s.stats()["tcp"]
    assert st["challenge-acks"] == 1000
    assert st["dropped.challenge-ack-limit"] == 2000
    assert len(lv.peer.recv()) == 1000
    assert lv.ep.state is TcpState.ESTABLISHED
    lv.net.run(duration=1.0)
    lv.send(seq=nxt + 7, flags=RST)
    assert challenge_acks(lv) == 1001  # a new one-second window


def test_optimistic_ack_of_unsent_data_does_not_inflate_cwnd() -> None:
    ATTACKS.append("optimistic-ack")
    lv = live()
    ep, snd = lv.ep, lv.ep.snd
    ep.write(b"x" * 200000)
    lv.net.settle()
    lv.peer.recv()
    una, nxt, cwnd = snd.snd_una, snd.snd_max, snd.cc.cwnd
    for i in range(200):  # ACK far beyond anything sent, with growing values
        lv.send(seq=lv.peer_nxt, ack=nxt + 1 + 1460 * i, flags=ACK)
    assert (snd.snd_una, snd.snd_max, snd.cc.cwnd) == (una, nxt, cwnd)
    replies = lv.peer.recv()
    assert replies and all(r.flags == ACK and not r.payload for r in replies)
    # the real ACK still works and the transfer goes on
    lv.send(seq=lv.peer_nxt, ack=nxt, flags=ACK)
    assert snd.snd_una == nxt and snd.cc.cwnd >= cwnd
    data = [r for r in lv.peer.recv() if r.payload]
    assert data, "the sender stalled after the bogus ACKs"


def test_figures() -> None:
    print(f"\nblind-injection attacks run: {len(ATTACKS)}")
