"""Conformance, options: MSS (IPv4 and IPv6 defaults), option parsing, timestamps (RTT, PAWS,
TS on every segment), SACK blocks and D-SACK."""

from __future__ import annotations

import itertools
import random

import pytest
from conformance_helpers import ISS, MSS, PEER_ISS, S, establish, listener, only, to_state
from tcp_helpers import Wire

from aionetstack.link.pipe import pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import install_tcp
from aionetstack.transport.tcp.isn import IsnGenerator
from aionetstack.wire.ipv4 import pack_ipv4
from aionetstack.wire.ipv6 import pack_ipv6, parse_ipv6
from aionetstack.wire.tcp import ACK, PSH, RST, SYN, TcpHeader, TcpOptions, pack_tcp, parse_tcp

# -- MSS ------------------------------------------------------------------------------------------


class Wire6(Wire):
    """The same hand-driven peer over IPv6 (fd00::1 is the stack, fd00::2 the peer)."""

    def send(self, *, sport: int = 4000, dport: int = 80, seq: int = 0, ack: int = 0,
             flags: int = 0, window: int = 65535, options: TcpOptions | None = None,
             payload: bytes = b"") -> None:
        l4 = 20 + (options.packed_len() if options else 0) + len(payload)
        buf = bytearray(40 + l4)
        pack_ipv6(buf, 0, src=self.peer, dst=self.local, next_header=6, payload_len=l4)
        pack_tcp(buf, 40, src=self.peer, dst=self.local, sport=sport, dport=dport, seq=seq,
                 ack=ack, flags=flags, window=window, options=options, payload=payload)
        self.end.send(buf)
        self.net.settle()

    def recv(self) -> list[TcpHeader]:
        self.net.settle()
        self.end.poll()
        out = []
        for f in self.frames:
            if f[0] >> 4 == 6:
                ip = parse_ipv6(memoryview(f))
                if ip.next_header == 6:
                    out.append(parse_tcp(memoryview(f)[40:]))
        self.frames.clear()
        return out


def _wire6() -> Wire6:
    net = VirtualNetwork(seed=5)
    s = net.stack()
    ea, eb = pipe(seed=5)
    s.add_nic(ea, ["fd00::1/64"])
    w = Wire6(net, s, install_tcp(s), eb, peer=to_bytes("fd00::2"), local=to_bytes("fd00::1"))
    eb.attach(w, net.clock)
    return w


def test_ipv6_mss_from_the_mtu_and_default_1220() -> None:
    w = _wire6()
    w.tcp.isn_override = ISS
    lst = w.tcp.new_endpoint(6)
    lst.bind(None, 80)
    lst.listen()
    w.send(seq=PEER_ISS, flags=SYN)  # no MSS option
    sa = only(w.recv())
    assert sa.flags == SYN | ACK and sa.options.mss == 1500 - 60
    w.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    ep = lst.accept()
    assert ep.snd.mss == 1220  # RFC 9293 §3.7.1 / RFC 8200: 1280 - 60
    ep.nodelay = True
    ep.write(b"6" * 2000)
    assert [len(s.payload) for s in w.recv()] == [1220, 780]


def test_ipv4_mss_default_536_and_our_mss_from_the_mtu(wire: Wire) -> None:
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN)
    assert only(wire.recv()).options.mss == 1500 - 40
    wire.send(seq=PEER_ISS + 1, ack=ISS + 1, flags=ACK)
    assert lst.accept().snd.mss == 536


def test_mss_on_syn_only(wire: Wire) -> None:
    _, ep = establish(wire)
    ep.write(b"x")
    assert only(wire.recv()).options.mss is None
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK, options=TcpOptions(mss=100))
    assert ep.snd.mss == MSS  # an MSS option outside a SYN is ignored


# -- option parsing (RFC 9293 §3.2, MUST-4..7, MUST-64) ------------------------------------------


def _raw_segment(wire: Wire, flags: int, seq: int, ack: int, opts: bytes,
                 payload: bytes = b"") -> None:
    seg = bytearray(20 + len(opts) + len(payload))
    pack_tcp(seg, 0, src=wire.peer, dst=wire.local, sport=4000, dport=80, seq=seq, ack=ack,
             flags=flags, window=8000, checksum=False)
    seg[12] = ((20 + len(opts)) // 4) << 4
    seg[20:20 + len(opts)] = opts
    seg[20 + len(opts):] = payload
    from aionetstack.wire.checksum import checksum

    pseudo = wire.peer + wire.local + bytes([0, 6]) + len(seg).to_bytes(2, "big")
    seg[16:18] = checksum(pseudo + bytes(seg)).to_bytes(2, "big")
    buf = bytearray(20) + seg
    pack_ipv4(buf, 0, src=wire.peer, dst=wire.local, protocol=6, payload_len=len(seg))
    wire.end.send(buf)
    wire.net.settle()


def test_unknown_options_on_data_segments_are_skipped(wire: Wire) -> None:
    _, ep = establish(wire)
    opts = bytes([1, 30, 6, 0xAA, 0xBB, 0xCC, 0xDD, 0]) + bytes(4)  # NOP, kind 30 len 6, EOL
    _raw_segment(wire, ACK | PSH, PEER_ISS + 1, ISS + 1, opts, b"payload")
    assert ep.read() == b"payload"


@pytest.mark.parametrize("opts", [
    bytes([30, 0, 1, 1]),  # length zero
    bytes([30, 1, 1, 1]),  # length one
    bytes([30, 9, 1, 1]),  # runs past the header
    bytes([2, 3, 5, 0]),  # MSS with the wrong length
    bytes([8, 6, 0, 0, 0, 1, 0, 0]),  # timestamps with the wrong length
])
def test_illegal_option_length_is_dropped_safely(wire: Wire, opts: bytes) -> None:
    _, ep = establish(wire)
    _raw_segment(wire, ACK | PSH, PEER_ISS + 1, ISS + 1, opts, b"bad")
    assert wire.recv() == [] and ep.unread() == 0 and ep.state is S.ESTABLISHED
    assert wire.s.stats()["tcp"]["malformed.bad-option"] == 1
    _raw_segment(wire, ACK | PSH, PEER_ISS + 1, ISS + 1, b"", b"good")
    assert ep.read() == b"good"


# -- timestamps (RFC 7323 §3-5) ------------------------------------------------------------------


def test_rtt_sampled_from_the_echoed_timestamp(wire: Wire) -> None:
    _, ep = establish(wire, ts=True)
    ep.write(b"t" * 100)
    d = only(wire.recv())
    assert d.options.timestamp is not None
    tsval = d.options.timestamp[0]
    wire.advance(0.1)  # below the 200 ms RTO: no retransmission to make the echo ambiguous
    wire.send(seq=PEER_ISS + 1, ack=ISS + 101, flags=ACK,
              options=TcpOptions(timestamp=(900, tsval)))
    assert ep.rtt.srtt is not None
    # the handshake gave a ~0 sample; the 100 ms one moves SRTT by 1/8 (RFC 6298 §2.3)
    assert ep.rtt.srtt == pytest.approx(0.001 * 7 / 8 + 0.1 / 8, abs=0.0005)


@pytest.mark.parametrize("state", ["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT", "TIME_WAIT_CLOSED"])
def test_timestamps_on_every_non_rst_segment_once_agreed(wire: Wire, state: str) -> None:
    at = to_state(wire, state, ts=True)
    recent = at.ep.ts_recent
    wire.send(seq=at.rcv_nxt + 10_000_000, ack=at.snd_max, flags=ACK,
              options=TcpOptions(timestamp=(recent + 1, 0)))  # out of window: a dup ACK
    a = only(wire.recv())
    assert a.options.timestamp is not None and a.options.timestamp[1] == recent
    wire.send(seq=at.rcv_nxt + 5, flags=RST)  # challenge ACK
    a = only(wire.recv())
    assert a.flags == ACK and a.options.timestamp is not None


def test_timestamps_on_retransmissions_probes_and_keepalives(wire: Wire) -> None:
    _, ep = establish(wire, ts=True)
    ep.write(b"r")
    first = only(wire.recv())
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)
    again = only(wire.recv())
    assert again.options.timestamp is not None and first.options.timestamp is not None
    assert again.options.timestamp[0] > first.options.timestamp[0]
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK, window=0,
              options=TcpOptions(timestamp=(2000, again.options.timestamp[0])))
    ep.write(b"z")
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=5)
    probe = only(wire.recv())
    assert probe.options.timestamp is not None and probe.options.timestamp[1] == 2000
    wire.send(seq=PEER_ISS + 1, ack=ISS + 2, flags=ACK, window=1000,
              options=TcpOptions(timestamp=(2001, 0)))
    wire.recv()
    wire.send(seq=PEER_ISS + 1, ack=ISS + 3, flags=ACK, options=TcpOptions(timestamp=(2002, 0)))
    ep.keepidle, ep.keepintvl = 10.0, 1.0
    ep.keepalive = True
    wire.net.run(until=lambda: bool(wire.end.pending), timeout=20)
    ka = only(wire.recv())
    assert ka.seq == ISS + 2 and ka.options.timestamp is not None
    assert ka.options.timestamp[1] == 2002


def test_paws_rejects_old_tsval_but_not_rst(wire: Wire) -> None:
    _, ep = establish(wire, ts=True)
    base = PEER_ISS + 1
    wire.send(seq=base, ack=ISS + 1, flags=ACK | PSH, payload=b"a",
              options=TcpOptions(timestamp=(5000, 0)))
    wire.send(seq=base + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"b",
              options=TcpOptions(timestamp=(4000, 0)))  # TSval went backwards: dropped
    acks = wire.recv()
    assert acks[-1].ack == base + 1 and acks[-1].options.timestamp is not None
    assert acks[-1].options.timestamp[1] == 5000
    assert ep.read() == b"a"
    wire.send(seq=base + 1, flags=RST, options=TcpOptions(timestamp=(1, 0)))  # RST: no PAWS
    assert ep.state is S.CLOSED


def test_ts_recent_only_from_segments_at_the_left_edge(wire: Wire) -> None:
    _, ep = establish(wire, ts=True)
    base = PEER_ISS + 1
    wire.send(seq=base + 100, ack=ISS + 1, flags=ACK, payload=b"x" * 10,
              options=TcpOptions(timestamp=(9000, 0)))  # out of order: not the left edge
    a = only(wire.recv())
    assert ep.ts_recent == 778 and a.options.timestamp is not None
    assert a.options.timestamp[1] == 778
    wire.send(seq=base, ack=ISS + 1, flags=ACK, payload=b"y" * 100,
              options=TcpOptions(timestamp=(800, 0)))
    a = only(wire.recv())
    assert ep.ts_recent == 800 and a.options.timestamp is not None
    assert a.options.timestamp[1] == 800


def test_tsvals_keep_increasing_across_connections_to_one_host(wire: Wire) -> None:
    """RFC 7323 §7.1 with RFC 6191 §2: the timestamp offset is one per pair of hosts, so each
    new connection's TSvals continue the last one's (a peer with the old 4-tuple in TIME-WAIT
    accepts the new SYN), actively opened or accepted alike."""
    tsvals = []
    for _ in range(6):
        ep = wire.tcp.new_endpoint()
        ep.start_connect("198.18.0.2", 80)
        syn = only(wire.recv())
        assert syn.flags == SYN and syn.options.timestamp is not None
        tsvals.append(syn.options.timestamp[0])
        ep.abort()
        wire.advance(0.01)
    lst = listener(wire)
    wire.send(seq=PEER_ISS, flags=SYN, options=TcpOptions(mss=MSS, timestamp=(777, 0)))
    sa = only(wire.recv())
    assert sa.flags == SYN | ACK and sa.options.timestamp is not None
    tsvals.append(sa.options.timestamp[0])
    steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(tsvals)]
    assert all(9 <= d <= 11 for d in steps), steps  # 10 ms apart on a millisecond clock
    lst.close()


def test_timestamp_offsets_differ_between_pairs_of_hosts() -> None:
    isn = IsnGenerator(random.Random(7))
    a, b, c = to_bytes("198.18.0.1"), to_bytes("198.18.0.2"), to_bytes("198.18.0.3")
    assert isn.ts_offset(a, b) == isn.ts_offset(a, b)
    assert len({isn.ts_offset(a, b), isn.ts_offset(a, c), isn.ts_offset(b, a)}) == 3
    # the secret decides: another generator gives other offsets for the same hosts
    assert IsnGenerator(random.Random(8)).ts_offset(a, b) != isn.ts_offset(a, b)


# -- SACK (RFC 2018, RFC 2883) --------------------------------------------------------------------


def test_four_sack_blocks_without_timestamps_most_recent_first(wire: Wire) -> None:
    establish(wire)
    base = PEER_ISS + 1
    for i in range(6):
        wire.send(seq=base + 200 * (i + 1), ack=ISS + 1, flags=ACK, payload=b"s" * 100)
    acks = wire.recv()
    assert len(acks) == 6
    assert acks[-1].options.sack_blocks == tuple(
        (base + 200 * k, base + 200 * k + 100) for k in (6, 5, 4, 3))
    # a segment that extends an older block moves that block to the front
    wire.send(seq=base + 300, ack=ISS + 1, flags=ACK, payload=b"s" * 50)
    a = only(wire.recv())
    assert a.options.sack_blocks[0] == (base + 200, base + 350)
    assert a.options.sack_blocks[1:] == ((base + 1200, base + 1300), (base + 1000, base + 1100),
                                         (base + 800, base + 900))


def test_no_sack_blocks_unless_permitted(wire: Wire) -> None:
    _, ep = establish(wire, sack=False)
    wire.send(seq=PEER_ISS + 101, ack=ISS + 1, flags=ACK, payload=b"s" * 100)
    a = only(wire.recv())
    assert a.ack == PEER_ISS + 1 and a.options.sack_blocks == ()
    assert not ep.snd.sack_ok


def test_dsack_block_first_then_real_blocks_are_used(wire: Wire) -> None:
    _, ep = establish(wire, wscale=None)
    ep.nodelay = True
    ep.write(b"D" * (4 * MSS))
    assert len(wire.recv()) == 4
    una = ISS + 1
    wire.send(seq=PEER_ISS + 1, ack=una + MSS, flags=ACK, options=TcpOptions(sack_blocks=(
        (una, una + MSS),  # D-SACK: a duplicate below the cumulative ACK
        (una + 2 * MSS, una + 3 * MSS))))
    assert ep.snd.sb.blocks == [(una + 2 * MSS, una + 3 * MSS)]
    assert ep.state is S.ESTABLISHED and not ep.snd.in_recovery
    # a D-SACK inside a SACKed block (RFC 2883 §4.2) is tolerated too
    wire.send(seq=PEER_ISS + 1, ack=una + MSS, flags=ACK, options=TcpOptions(sack_blocks=(
        (una + 2 * MSS, una + 2 * MSS + 100), (una + 2 * MSS, una + 3 * MSS))))
    assert ep.snd.sb.blocks == [(una + 2 * MSS, una + 3 * MSS)]
    wire.send(seq=PEER_ISS + 1, ack=una + 4 * MSS, flags=ACK)
    assert ep.snd.sb.blocks == [] and ep.send_buffered() == 0
