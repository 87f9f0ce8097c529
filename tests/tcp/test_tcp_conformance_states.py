"""Conformance, handshake and states: RST/SYN/ACK processing in every synchronized state
(RFC 9293 §3.10.7.4, RFC 5961), SYN-RECEIVED, SYN-SENT and the listen queues."""

from __future__ import annotations

import pytest
from conformance_helpers import (
    ISS,
    MSS,
    PEER_ISS,
    SYNCHRONIZED,
    TIME_WAITS,
    At,
    S,
    connect,
    establish,
    listener,
    only,
    state_of,
    to_state,
)
from tcp_helpers import Wire

from aionetstack.errors import ConnectionReset
from aionetstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions

# After an ACK carrying FIN our side has consumed a sequence number for it
_PEER_FIN = {"CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT", "TIME_WAIT_CLOSED"}


def assert_ack(seg: TcpHeader, at: At) -> None:
    """The ACK the endpoint sends to re-synchronize: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
    assert seg.flags == ACK and not seg.payload
    assert seg.seq == at.snd_max and seg.ack == at.rcv_nxt
    ep = at.ep
    free = ep.rcv.capacity - ep.unread()
    assert seg.window == min(free >> ep.rcv.rcv_wscale, 0xFFFF)


# -- RST (RFC 5961 §3.2) -------------------------------------------------------------------------


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_rst_with_exact_sequence_resets(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    wire.send(seq=at.rcv_nxt, flags=RST)
    assert wire.recv() == []
    assert at.ep.state is S.CLOSED
    if state in ("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2"):
        assert isinstance(at.ep.error, ConnectionReset)
    else:  # CLOSING, LAST-ACK, TIME-WAIT: the connection was finished anyway
        assert at.ep.error is None
    assert wire.tcp.connections == {}


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_rst_in_window_but_not_exact_draws_challenge_ack(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    wire.send(seq=at.rcv_nxt + 1000, flags=RST)
    assert_ack(only(wire.recv()), at)
    assert at.ep.state is state_of(state)
    wire.send(seq=at.rcv_nxt + 1, ack=at.snd_max, flags=RST | ACK)
    assert_ack(only(wire.recv()), at)
    assert at.ep.state is state_of(state)


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_rst_outside_the_window_is_dropped(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    wire.send(seq=at.rcv_nxt + 10_000_000, flags=RST)
    wire.send(seq=at.rcv_nxt - 1, flags=RST)
    wire.send(seq=(at.rcv_nxt - 100_000) & 0xFFFFFFFF, ack=at.snd_max, flags=RST | ACK)
    assert wire.recv() == []
    assert at.ep.state is state_of(state)


# -- SYN in a synchronized state (RFC 5961 §4.2) -------------------------------------------------


@pytest.mark.parametrize("state", SYNCHRONIZED)
@pytest.mark.parametrize("offset", [0, 100, -50, 10_000_000])
def test_syn_in_synchronized_state_draws_challenge_ack(wire: Wire, state: str,
                                                       offset: int) -> None:
    if state in TIME_WAITS and offset > 0:
        pytest.skip("a higher SYN reopens TIME-WAIT (test_tcp_conformance_closing)")
    at = to_state(wire, state)
    wire.send(seq=(at.rcv_nxt + offset) & 0xFFFFFFFF, flags=SYN,
              options=TcpOptions(mss=MSS))
    assert_ack(only(wire.recv()), at)
    assert at.ep.state is state_of(state)
    wire.send(seq=at.rcv_nxt, ack=at.snd_max, flags=SYN | ACK)  # a SYN-ACK too
    assert_ack(only(wire.recv()), at)
    assert at.ep.state is state_of(state)


# -- segments that fail the acceptability test (RFC 9293 §3.10.7.4 first check) ------------------


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_out_of_window_segment_is_acked_and_dropped(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    ep = at.ep
    beyond = at.rcv_nxt + ep.rcv.capacity + 10 * MSS
    wire.send(seq=beyond, ack=at.snd_max, flags=ACK | PSH, payload=b"far future")
    assert_ack(only(wire.recv()), at)
    wire.send(seq=at.rcv_nxt - 200, ack=at.snd_max, flags=ACK | PSH, payload=b"x" * 100)  # old
    assert_ack(only(wire.recv()), at)
    wire.send(seq=at.rcv_nxt + 10_000_000, ack=at.snd_max, flags=ACK)  # zero-length, outside
    assert_ack(only(wire.recv()), at)
    assert ep.state is state_of(state) and ep.unread() == 0
    assert ep.rcv.rcv_nxt == at.rcv_nxt and not ep.rcv.ooo


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_ack_of_unsent_data_is_acked_and_dropped(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    una = at.ep.snd.snd_una
    payload = b"" if state in _PEER_FIN else b"data"
    wire.send(seq=at.rcv_nxt, ack=at.snd_max + 5000, flags=ACK | PSH, payload=payload)
    assert_ack(only(wire.recv()), at)
    assert at.ep.state is state_of(state) and at.ep.unread() == 0 and at.ep.snd.snd_una == una


@pytest.mark.parametrize("state", SYNCHRONIZED)
def test_segment_without_ack_flag_is_dropped(wire: Wire, state: str) -> None:
    at = to_state(wire, state)
    wire.send(seq=at.rcv_nxt, flags=PSH, payload=b"no ack here")
    wire.send(seq=at.rcv_nxt, flags=FIN)
    assert wire.recv() == []
    assert at.ep.state is state_of(state) and at.ep.unread() == 0
    assert at.ep.rcv.rcv_nxt == at.rcv_nxt


def test_old_duplicate_ack_changes_nothing(wire: Wire) -> None:
    _, ep = establish(wire, wscale=None)
    ep.write(b"a" * 300)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ISS + 301, flags=ACK, window=4000)
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK, window=10)  # old ACK, shrunk window
    assert wire.recv() == []
    assert ep.snd.snd_una == ISS + 301 and ep.snd.snd_wnd == 4000  # SND.WL2 rule
    ep.write(b"b" * 2 * MSS)
    assert [len(s.payload) for s in wire.recv()] == [MSS, MSS]  # 2920 fits the 4000 window


# -- SYN-RECEIVED --------------------------------------------------------------------------------


@pytest.mark.parametrize("ack", [ISS, ISS - 1000, ISS + 2, ISS + 100_000])
def test_syn_received_unacceptable_ack_draws_rst(wire: Wire, ack: int) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, ack=ack, flags=ACK)
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ack and r.window == 0
    assert lst.listen_queue is not None and len(lst.listen_queue.syn_queue) == 1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)  # the right one still completes it
    assert wire.recv() == [] and lst.accept().state is S.ESTABLISHED


def test_syn_received_rst_out_of_window_is_ignored(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 10_000_000, flags=RST)
    assert wire.recv() == [] and len(wire.tcp.connections) == 1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.accept().state is S.ESTABLISHED


def test_syn_received_data_without_ack_is_dropped(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 1, flags=PSH, payload=b"too soon")
    assert wire.recv() == []
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"now")
    ep = lst.accept()
    assert ep.read() == b"now"


def test_syn_received_timeout_backs_off_and_forgets(wire: Wire) -> None:
    lst = listener(wire)
    t0 = wire.net.now
    wire.send(seq=PEER_ISS, flags=SYN)
    times = []
    while wire.tcp.connections:
        wire.net.run(until=lambda: bool(wire.end.pending) or not wire.tcp.connections,
                     timeout=300)
        for s in wire.recv():
            assert s.flags == SYN | ACK and s.seq == ISS and s.ack == PEER_ISS + 1
            times.append(round(wire.net.now - t0, 3))
    assert times == [0, 1, 3, 7, 15, 31]  # synack_retries = 5
    assert round(wire.net.now - t0) == 63
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)  # too late: no connection, a RST
    assert only(wire.recv()).flags == RST
    with pytest.raises(Exception):  # noqa: B017 - WouldBlock
        lst.accept()


# -- SYN-SENT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ack", [ISS, ISS - 1, ISS + 2])
def test_rst_in_syn_sent_with_unacceptable_ack_is_ignored(wire: Wire, ack: int) -> None:
    ep, syn = connect(wire)
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ack, flags=RST | ACK)
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, flags=RST)  # no ACK at all
    assert wire.recv() == [] and ep.state is S.SYN_SENT


def test_syn_sent_ack_without_syn_is_ignored_or_reset(wire: Wire) -> None:
    ep, syn = connect(wire)
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=ACK)  # good ACK, no SYN
    assert wire.recv() == [] and ep.state is S.SYN_SENT
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS, flags=ACK)  # bad ACK
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS and ep.state is S.SYN_SENT


def test_receive_in_syn_sent_waits_for_the_handshake(wire: Wire) -> None:
    from aionetstack.errors import WouldBlock

    ep, syn = connect(wire)
    with pytest.raises(WouldBlock):
        ep.read()
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK | PSH,
              options=TcpOptions(mss=MSS), payload=b"hello")
    a = only(wire.recv())  # the data on the SYN-ACK is acknowledged at once
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PEER_ISS + 6
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS + 6, ack=ISS + 1, flags=FIN | ACK)
    assert only(wire.recv()).ack == PEER_ISS + 7
    assert ep.state is S.CLOSE_WAIT
    assert ep.read() == b"hello" and ep.read() == b""


def test_queued_data_and_fin_in_syn_sent_go_after_the_handshake(wire: Wire) -> None:
    ep, syn = connect(wire)
    assert ep.write(b"first") == 5
    ep.shutdown_write()
    assert wire.recv() == []
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK,
              options=TcpOptions(mss=MSS))
    s = only(wire.recv())  # data and FIN together, carrying the ACK: no extra pure ACK
    assert s.flags == ACK | PSH | FIN and s.seq == ISS + 1 and s.ack == PEER_ISS + 1
    assert bytes(s.payload) == b"first"
    assert ep.state is S.FIN_WAIT_1


def test_fin_queued_in_syn_sent_goes_after_the_handshake(wire: Wire) -> None:
    ep, syn = connect(wire)
    ep.shutdown_write()
    assert wire.recv() == []
    wire.send(sport=80, dport=syn.sport, seq=PEER_ISS, ack=ISS + 1, flags=SYN | ACK)
    s = only(wire.recv())
    assert s.flags == ACK | FIN and s.seq == ISS + 1 and s.ack == PEER_ISS + 1
    assert ep.state is S.FIN_WAIT_1


# -- listen queues --------------------------------------------------------------------------------


def test_full_accept_queue_drops_new_syns(wire: Wire) -> None:
    wire.tcp.syncookies = False
    lst = listener(wire, backlog=1)
    wire.send(sport=4000, seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(sport=4000, seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.listen_queue is not None and len(lst.listen_queue.accept_queue) == 1
    wire.send(sport=4001, seq=PEER_ISS, flags=SYN)
    assert wire.recv() == []  # dropped: the peer retries
    assert wire.s.stats()["tcp"]["dropped.listen-overflow"] == 1
    lst.accept()
    wire.send(sport=4001, seq=PEER_ISS, flags=SYN)  # room again
    assert only(wire.recv()).flags == SYN | ACK


def test_syn_cookie_ack_without_recent_overflow_is_reset(wire: Wire) -> None:
    """A plain ACK is never taken for a cookie unless the SYN queue overflowed recently."""
    lst = listener(wire, backlog=8)
    wire.send(sport=4005, seq=100, ack=ISS + 1, flags=ACK)
    r = only(wire.recv())
    assert r.flags == RST and r.seq == ISS + 1
    assert lst.listen_queue is not None and not lst.listen_queue.accept_queue
    assert wire.tcp.connections == {}


def test_listener_ignores_rst_and_drops_bare_segments(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=1, flags=RST)
    wire.send(seq=1, ack=5, flags=RST | ACK)
    assert wire.recv() == []
    assert lst.state is S.LISTEN


@pytest.mark.parametrize("dst", ["198.18.0.255", "255.255.255.255", "224.0.0.1"])
def test_syn_to_broadcast_or_multicast_is_not_answered(wire: Wire, dst: str) -> None:
    from aionetstack.stack.addr import to_bytes

    lst = listener(wire)
    wire.local = to_bytes(dst)
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS))
    wire.send(seq=PEER_ISS, ack=7, flags=ACK)  # nor a RST for other segments
    assert wire.recv() == []
    assert wire.tcp.connections == {} and lst.listen_queue is not None
    assert not lst.listen_queue.syn_queue


def test_different_syn_in_syn_received_draws_challenge_ack(wire: Wire) -> None:
    """RFC 5961 §4.2 (and RFC 9293 §3.10.7.4 step 4): a SYN that is not a retransmission of the
    first one does not reset the half-open connection."""
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    only(wire.recv())
    wire.send(seq=PEER_ISS + 100, flags=SYN)
    a = only(wire.recv())
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PEER_ISS + 1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.accept().state is S.ESTABLISHED


def test_ip_options_are_ignored_safely(wire: Wire) -> None:
    from aionetstack.wire.ipv4 import pack_ipv4
    from aionetstack.wire.tcp import pack_tcp

    lst = listener(wire)
    opts = bytes([1, 1, 1, 0])  # NOP NOP NOP EOL
    seg = bytearray(20)
    pack_tcp(seg, 0, src=wire.peer, dst=wire.local, sport=4000, dport=80, seq=PEER_ISS, ack=0,
             flags=SYN, window=1000)
    buf = bytearray(24) + seg
    assert pack_ipv4(buf, 0, src=wire.peer, dst=wire.local, protocol=6, payload_len=20,
                     options=opts) == 24
    wire.end.send(buf)
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.ack == PEER_ISS + 1
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.accept().state is S.ESTABLISHED
