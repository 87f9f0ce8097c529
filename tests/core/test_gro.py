"""Software GRO (``aionetstack.network.gro``): TCP segments of one flow that arrive in one batch
are merged before the network layer sees them, and nothing else changes.

Frames are crafted with scapy and sent as one batch through the pipe the ``Wire`` drives; what
the NIC hands to the network layer is recorded (and still delivered), and merged packets are
parsed back with scapy.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from core_helpers import PEER4, PEER6, STACK4, STACK6, to_stack, wired_stack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from aionetstack.errors import ConnectStarted
from aionetstack.network.gro import Gro
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpState, install_tcp

# the rig records what GRO hands the NIC by replacing ``NIC.link_deliver`` on the instance, which
# the compiled NIC does not allow: these run in the pure-Python pass
pytestmark = pytest.mark.pure_python

SEQ, ACKNO = 1000, 5000
TS = [("NOP", None), ("NOP", None), ("Timestamp", (77, 88))]


def seg(i: int | None = None, *, seq: int | None = None, size: int = 1000, flags: str = "A",
        v6: bool = False, sport: int = 4000, opts: Any = TS, ack: int = ACKNO,
        dst: str | None = None, fill: bytes | None = None) -> Any:
    """Segment ``i`` of a stream of ``size``-byte segments (or one at ``seq``)."""
    if seq is None:
        seq = SEQ + (i or 0) * size
    ip = (IPv6(src=PEER6, dst=dst or STACK6) if v6
          else IP(src=PEER4, dst=dst or STACK4, flags="DF", id=seq & 0xFFFF))
    data = fill if fill is not None else bytes([(seq + k) & 0xFF for k in range(size)])
    return ip / TCP(sport=sport, dport=80, seq=seq, ack=ack, flags=flags, window=500,
                    options=opts) / data


class Rig:
    """A stack whose NIC's deliveries (after GRO) are recorded as ``(bytes, trusted)``."""

    def __init__(self, l2: bool = True, verify: bool = True) -> None:
        self.net = VirtualNetwork(seed=3)
        self.stack, self.nic, self.wire = wired_stack(self.net, l2=l2, verify=verify)
        self.l2 = l2
        self.got: list[tuple[bytes, bool]] = []
        real = self.nic.link_deliver

        def record(frame: memoryview, trusted: bool = False) -> None:
            self.got.append((bytes(frame), trusted))
            real(frame, trusted)

        self.nic.link_deliver = record  # type: ignore[method-assign]
        assert self.nic.gro is not None
        self.nic.gro.deliver = record  # GRO's output (it holds the NIC's input since it was made)

    def batch(self, *pkts: Any) -> list[Any]:
        """Send ``pkts`` as one batch; return what the NIC delivered, parsed."""
        self.got.clear()
        for p in pkts:
            self.wire.end.send(to_stack(p, l2=self.l2) if not isinstance(p, bytes) else p)
        self.net.settle()
        out = []
        for frame, trusted in self.got:
            pkt = Ether(frame).payload if self.l2 else (
                IP(frame) if frame[0] >> 4 == 4 else IPv6(frame))
            pkt.trusted = trusted
            out.append(pkt)
        return out


def payload(pkt: Any) -> bytes:
    return bytes(pkt[TCP].payload)


def stream(n: int, size: int = 1000) -> bytes:
    return b"".join(payload(seg(i, size=size)) for i in range(n))


@pytest.mark.parametrize("l2", [True, False])
@pytest.mark.parametrize("v6", [False, True])
def test_in_order_segments_of_a_flow_become_one_packet(l2: bool, v6: bool) -> None:
    r = Rig(l2=l2)
    segs = [seg(i, v6=v6) for i in range(10)]
    segs[-1][TCP].flags = "PA"
    (merged,) = r.batch(*segs)
    assert merged.trusted
    assert payload(merged) == stream(10)
    tcp = merged[TCP]
    assert tcp.seq == SEQ and tcp.ack == ACKNO and tcp.window == 500
    assert tcp.flags == "PA"  # PSH of the last segment
    assert dict(tcp.options)["Timestamp"] == (77, 88)
    if v6:
        assert merged[IPv6].plen == 20 + 12 + 10_000
    else:
        ip = merged[IP]
        assert ip.len == 20 + 32 + 10_000
        recomputed = ip.copy()
        del recomputed.chksum
        assert IP(bytes(recomputed)).chksum == ip.chksum
    assert r.nic.gro is not None
    assert r.nic.gro.stats == {"gro_merged": 1, "gro_packets": 10, "gro_bad_sum": 0,
                               "gro_acks_folded": 0}


def test_at_most_64k_per_merged_packet() -> None:
    r = Rig()
    got = r.batch(*[seg(i, size=1400) for i in range(60)])
    assert [len(payload(p)) for p in got] == [46 * 1400, 14 * 1400]
    assert all(p[IP].len <= 65535 for p in got)
    assert b"".join(payload(p) for p in got) == stream(60, 1400)


def test_a_gap_a_shorter_segment_or_psh_ends_the_merge() -> None:
    r = Rig()
    gap = [seg(0), seg(1), seg(3), seg(4)]
    assert [(p[TCP].seq, len(payload(p))) for p in r.batch(*gap)] == [
        (SEQ, 2000), (SEQ + 3000, 2000)]
    short = [seg(0), seg(seq=SEQ + 1000, size=500), seg(seq=SEQ + 1500)]
    assert [len(payload(p)) for p in r.batch(*short)] == [1500, 1000]
    pushed = [seg(0, flags="PA"), seg(1)]
    assert [len(payload(p)) for p in r.batch(*pushed)] == [1000, 1000]
    longer = [seg(0, size=500), seg(seq=SEQ + 500, size=1000)]
    assert [len(payload(p)) for p in r.batch(*longer)] == [500, 1000]


def test_headers_that_differ_are_not_merged() -> None:
    r = Rig()
    other_ts = [("NOP", None), ("NOP", None), ("Timestamp", (78, 88))]
    cases = [
        [seg(0), seg(1, ack=ACKNO + 1)],
        [seg(0), seg(1, opts=other_ts)],
        [seg(0), seg(1, opts=[])],
    ]
    for pkts in cases:
        assert len(r.batch(*pkts)) == 2, pkts
    win = [seg(0), seg(1)]
    win[1][TCP].window = 501
    assert len(r.batch(*win)) == 2
    ttl = [seg(0), seg(1)]
    ttl[1][IP].ttl = 3
    assert len(r.batch(*ttl)) == 2


def test_flows_merge_separately_and_keep_their_order() -> None:
    r = Rig()
    a = [seg(i, sport=4000) for i in range(4)]
    b = [seg(i, sport=4001, fill=b"b" * 1000) for i in range(4)]
    got = r.batch(*[p for pair in zip(a, b, strict=True) for p in pair])
    assert sorted((p[TCP].sport, len(payload(p))) for p in got) == [(4000, 4000), (4001, 4000)]


@pytest.mark.parametrize("flags", ["FA", "A", "RA", "SA", "UA", "EA"])
def test_control_segments_and_pure_acks_go_alone_after_the_flows_data(flags: str) -> None:
    r = Rig()
    last = seg(seq=SEQ + 3000, flags=flags, size=0 if flags == "A" else 1000)
    got = r.batch(seg(0), seg(1), seg(2), last, seg(4))
    assert [(p[TCP].seq, len(payload(p))) for p in got][:2] == [
        (SEQ, 3000), (SEQ + 3000, len(payload(last)))]
    assert got[1][TCP].flags == last[TCP].flags


def test_a_bad_checksum_unmerges_the_run_and_only_the_bad_segment_is_dropped() -> None:
    """The merge's summed checksum fails: its segments are delivered one by one, in order and
    unverified, so the normal path drops (and counts) exactly the bad one."""
    r = Rig()
    tcp = r.stack.stats()["tcp"]
    bad = seg(2)
    bad[TCP].chksum = (TCP(bytes(bad[TCP])).chksum + 1) & 0xFFFF  # scapy keeps the bad value
    before = tcp.get("malformed.bad-checksum", 0)
    got = r.batch(seg(0), seg(1), bad, seg(3), seg(4))
    assert [(p[TCP].seq, len(payload(p)), p.trusted) for p in got] == [
        (SEQ + i * 1000, 1000, False) for i in range(5)]
    assert r.stack.stats()["tcp"]["malformed.bad-checksum"] == before + 1
    assert r.nic.gro is not None and r.nic.gro.stats["gro_bad_sum"] == 1
    # a bad IPv4 header checksum is caught per packet: that one goes alone, the rest merge
    bad_ip = seg(2)
    bad_ip[IP].chksum = 0x1234
    ipv4_malformed = r.stack.stats()["ipv4"].get("malformed", 0)
    got = r.batch(seg(0), seg(1), bad_ip, seg(3))
    assert [(len(payload(p)), p.trusted) for p in got] == [(2000, True), (1000, False),
                                                           (1000, True)]
    assert r.stack.stats()["ipv4"]["malformed"] == ipv4_malformed + 1
    # and a single corrupted segment never counts as verified
    lone = seg(7)
    lone[TCP].chksum = (TCP(bytes(lone[TCP])).chksum + 1) & 0xFFFF
    assert [p.trusted for p in r.batch(lone, seg(20))] == [False, True]


def ack(n: int, *, sack: bool = False, win: int = 500, ts: int = 77) -> Any:
    """A pure ACK from the peer acknowledging ``n`` bytes of ours."""
    opts: list[Any] = [("NOP", None), ("NOP", None), ("Timestamp", (ts, 88))]
    if sack:
        opts += [("NOP", None), ("NOP", None), ("SAck", (ACKNO + n + 1000, ACKNO + n + 2000))]
    p = seg(seq=SEQ, size=0, ack=ACKNO + n, opts=opts)
    p[TCP].window = win
    return p


def test_a_run_of_pure_acks_is_folded_into_the_last() -> None:
    r = Rig()
    got = r.batch(*[ack(1000 * i, ts=77 + i, win=500 + i) for i in range(1, 6)])
    assert len(got) == 1 and got[0].trusted
    tcp = got[0][TCP]
    assert (tcp.ack, tcp.window, dict(tcp.options)["Timestamp"]) == (ACKNO + 5000, 505, (82, 88))
    assert r.nic.gro is not None and r.nic.gro.stats["gro_acks_folded"] == 4


def test_acks_that_carry_news_of_their_own_are_never_folded() -> None:
    r = Rig()
    dup = r.batch(ack(1000), ack(1000), ack(1000))  # duplicate ACKs: each one counts
    assert [p[TCP].ack for p in dup] == [ACKNO + 1000] * 3
    sacks = r.batch(ack(1000), ack(1000, sack=True), ack(1000, sack=True))
    assert len(sacks) == 3
    window = r.batch(ack(1000), ack(1000, win=900))  # a window update, nothing new acked
    assert [p[TCP].window for p in window] == [500, 900]
    back = r.batch(ack(2000), ack(1000))  # an older ACK is not "rising"
    assert [p[TCP].ack for p in back] == [ACKNO + 2000, ACKNO + 1000]


def test_folded_acks_keep_their_place_among_the_flows_data() -> None:
    r = Rig()
    got = r.batch(ack(1000), ack(2000), seg(0), seg(1), ack(3000), ack(4000))
    assert [(len(payload(p)), p[TCP].ack) for p in got] == [
        (0, ACKNO + 2000), (2000, ACKNO), (0, ACKNO + 4000)]


def test_a_bad_checksum_in_a_run_of_acks_delivers_them_all_for_checking() -> None:
    r = Rig()
    bad = ack(2000)
    bad[TCP].chksum = (TCP(bytes(bad[TCP])).chksum + 1) & 0xFFFF
    got = r.batch(ack(1000), bad, ack(3000))
    assert [(p[TCP].ack, p.trusted) for p in got] == [
        (ACKNO + 1000, False), (ACKNO + 2000, False), (ACKNO + 3000, False)]


def test_trusted_links_skip_verification_but_still_merge() -> None:
    r = Rig(verify=False)
    assert r.nic.rx_trusted
    (merged,) = r.batch(*[seg(i) for i in range(5)])
    assert payload(merged) == stream(5)


def test_packets_for_other_hosts_fragments_and_padding_are_left_alone() -> None:
    r = Rig()
    other = [seg(i, dst="198.18.0.99") for i in range(3)]
    assert len(r.batch(*other)) == 3
    frags = [seg(i) for i in range(3)]
    for p in frags:
        p[IP].flags = "MF"
    assert len(r.batch(*frags)) == 3
    padded = [to_stack(seg(i)) + b"\0\0" for i in range(3)]
    assert len(r.batch(*padded)) == 3


def test_gro_off_delivers_every_frame() -> None:
    r = Rig()
    r.nic.gro = None
    assert len(r.batch(*[seg(i) for i in range(5)])) == 5


def test_a_connection_receives_merged_data_and_acks_it_once() -> None:
    """End to end: a burst of 20 segments in one batch is one segment for TCP and one ACK."""
    r = Rig()
    tcp = install_tcp(r.stack)
    ep = tcp.new_endpoint(4)
    with pytest.raises(ConnectStarted):
        ep.connect(PEER4, 80)
    (syn_frame,) = r.wire.take()
    syn = Ether(syn_frame)[TCP]
    r.batch(IP(src=PEER4, dst=STACK4) / TCP(
        sport=80, dport=syn.sport, seq=SEQ - 1, ack=syn.seq + 1, flags="SA", window=65535,
        options=[("MSS", 1000)]))
    assert ep.state is TcpState.ESTABLISHED
    r.wire.take()
    data = [IP(src=PEER4, dst=STACK4) / TCP(sport=80, dport=syn.sport, seq=SEQ + i * 1000,
                                             ack=syn.seq + 1, flags="A", window=65535)
            / (bytes([i]) * 1000) for i in range(20)]
    received = r.stack.stats()["tcp"]["received"]
    r.batch(*data)
    assert r.stack.stats()["tcp"]["received"] == received + 1
    assert ep.read() == b"".join(bytes([i]) * 1000 for i in range(20))
    acks = [Ether(f)[TCP] for f in r.wire.take()]
    assert [a.ack for a in acks if a.flags == "A"][:1] == [SEQ + 20_000]
    assert len(acks) <= 2  # the ACK (and perhaps a window update after the read)


def test_a_control_segment_of_another_flow_does_not_overtake_pending_merges() -> None:
    """A handshake-completing ACK held for folding goes before a SYN that arrived after it (a
    listener's backlog sees the connections in their order)."""
    r = Rig()
    syn = seg(seq=9000, size=0, flags="S", sport=5000, opts=[])
    got = r.batch(ack(1000), syn, seg(0, sport=4001), seg(1, sport=4001))
    assert [(p[TCP].sport, str(p[TCP].flags), len(payload(p))) for p in got] == [
        (4000, "A", 0), (5000, "S", 0), (4001, "A", 2000)]


def test_a_frame_for_another_mac_is_never_merged_into_ours() -> None:
    r = Rig(l2=True)
    frames = [to_stack(seg(i)) for i in range(3)]
    frames[1] = bytes.fromhex("02aabbccddee") + frames[1][6:]  # same IP packet, foreign MAC
    got = r.batch(*frames)
    assert [len(payload(p)) for p in got] == [1000, 1000, 1000]
    assert r.stack.stats()["ethernet"]["dropped.not-for-us"] >= 1


# -- the fast path (next segment of the same flow) decides exactly as the full path ------------
_PERTURB = ["none", "ttl", "tos", "window", "ack", "ts", "psh", "gap", "short", "long", "id",
            "badsum", "sport", "mac", "srcmac", "ipsum", "pad", "shortpad"]


def _frame(i: int, how: str, l2: bool, v6: bool) -> bytes:
    kw: dict[str, Any] = {"size": 700, "v6": v6}
    if how == "sport":
        kw["sport"] = 4001
    elif how == "ack":
        kw["ack"] = ACKNO + 1
    elif how == "psh":
        kw["flags"] = "PA"
    elif how == "gap":
        kw["seq"] = SEQ + i * 700 + 1
    elif how in ("short", "shortpad", "long"):
        kw["seq"] = SEQ + i * 700
        kw["size"] = 900 if how == "long" else 300
    elif how == "ts":
        kw["opts"] = [("NOP", None), ("NOP", None), ("Timestamp", (78, 88))]
    p = seg(i, **kw)
    ip = p[IPv6] if v6 else p[IP]
    if how == "ttl":
        ip.setfieldval("hlim" if v6 else "ttl", 3)
    elif how == "tos":
        ip.setfieldval("tc" if v6 else "tos", 4)
    elif how == "window":
        p[TCP].window = 501
    elif how == "id" and not v6:
        ip.id = 7
    frame = bytearray(to_stack(p, l2=l2))
    l3 = 14 if l2 else 0
    if how == "badsum":
        frame[-1] ^= 0x40
    elif how == "ipsum" and not v6:
        frame[l3 + 10] ^= 0x01
    elif how == "mac" and l2:
        frame[0:6] = bytes.fromhex("02aabbccddee")
    elif how == "srcmac" and l2:
        frame[6:12] = bytes.fromhex("02aabbccddef")
    elif how in ("pad", "shortpad"):
        frame += b"\0\0"
    return bytes(frame)


def _both_paths(hows: list[str], l2: bool, v6: bool, verify: bool) -> list[Any]:
    """What the NIC delivers (and GRO counts) for these segments, with the fast path and
    without it (no template: every segment takes the full path)."""
    frames = [_frame(i, how, l2, v6) for i, how in enumerate(hows)]
    outs = []
    for fast in (True, False):
        r = Rig(l2=l2, verify=verify)
        assert r.nic.gro is not None
        with mock.patch.object(Gro, "_template", Gro._template if fast else lambda *a: None):
            r.batch(*frames)
        outs.append((list(r.got), dict(r.nic.gro.stats)))
    return outs


@pytest.mark.parametrize("how", _PERTURB)
@pytest.mark.parametrize(("l2", "v6", "verify"), [
    (l2, v6, verify) for l2 in (False, True) for v6 in (False, True) for verify in (False, True)])
def test_each_difference_is_judged_alike_by_both_paths(how: str, l2: bool, v6: bool,
                                                       verify: bool) -> None:
    fast, full = _both_paths(["none", "none", how, "none"], l2, v6, verify)
    assert fast == full


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hows=st.lists(st.sampled_from(_PERTURB + ["none"] * 4), max_size=12), l2=st.booleans(),
       v6=st.booleans(), verify=st.booleans())
def test_the_fast_path_merges_exactly_as_the_full_path(hows: list[str], l2: bool, v6: bool,
                                                       verify: bool) -> None:
    # a clean first segment: every perturbation then meets a chain it could join
    fast, full = _both_paths(["none", *hows], l2, v6, verify)
    assert fast == full
