"""UdpForwarder: full-cone flows to any address, rejection, idle timeout; echo to any address."""

from __future__ import annotations

import pytest
from fwd_helpers import CLIENT4, CLIENT6, b, make_net

from aionetstack.errors import (
    ClosedForReceive,
    ConnectionRefused,
    HostUnreachable,
    InvalidArgument,
    WouldBlock,
)
from aionetstack.stack.waiter import EVENT_HUP
from aionetstack.transport.udp_forwarder import UdpFlow, UdpForwarder, UdpForwarderRequest


def _accept_all(n: object) -> tuple[list[UdpForwarderRequest], list[UdpFlow]]:
    reqs: list[UdpForwarderRequest] = []
    flows: list[UdpFlow] = []

    def handler(req: UdpForwarderRequest) -> None:
        reqs.append(req)
        flows.append(req.accept())

    UdpForwarder(n.gw, handler)  # type: ignore[attr-defined]
    return reqs, flows


def _drain(flow: UdpFlow) -> list[tuple[bytes, tuple[bytes, int]]]:
    out = []
    while True:
        try:
            out.append(flow.recvfrom())
        except WouldBlock:
            return out


@pytest.mark.parametrize("fam", [4, 6])
def test_cone_mapping_one_source_many_destinations(fam: int) -> None:
    n = make_net()
    reqs, flows = _accept_all(n)
    dests = ([("198.19.0.1", 53), ("198.19.0.2", 53), ("10.1.2.3", 1234)] if fam == 4 else
             [("fd00:19::1", 53), ("fd00:19::2", 53), ("2001:db8::3", 1234)])
    u = n.cli.udp_endpoint(fam)
    u.bind(None, 5000)
    for i, (host, port) in enumerate(dests):
        u.sendto(b"q%d" % i, (host, port))
    n.run(timeout=0.1)
    assert len(reqs) == 1 and len(flows) == 1  # one mapping for the one source
    flow = flows[0]
    client = (b(CLIENT4 if fam == 4 else CLIENT6), 5000)
    assert flow.remote == client and reqs[0].remote == client
    assert flow.local == (b(dests[0][0]), dests[0][1])
    got = _drain(flow)
    assert got == [(b"q%d" % i, (b(h), p)) for i, (h, p) in enumerate(dests)]
    # replies from every destination (and from one never contacted) reach the same client port
    for i, (host, port) in enumerate(dests):
        flow.sendto(b"r%d" % i, (host, port))
    other = ("198.19.99.99", 7) if fam == 4 else ("fd00:19::99", 7)
    flow.sendto(b"unsolicited", other)
    n.run(timeout=0.1)
    replies = []
    while True:
        try:
            replies.append(u.recvfrom())
        except WouldBlock:
            break
    expect = [(b"r%d" % i, (b(h), p)) for i, (h, p) in enumerate(dests)]
    assert replies == [*expect, (b"unsolicited", (b(other[0]), other[1]))]
    # a second source port is a second flow
    u2 = n.cli.udp_endpoint(fam)
    u2.bind(None, 5001)
    u2.sendto(b"x", dests[0])
    n.run(timeout=0.1)
    assert len(flows) == 2 and flows[1].remote == (client[0], 5001)
    assert n.gw.stats()["udp"]["forwarder-accepted"] == 2


@pytest.mark.parametrize(("dst", "reply", "exc"), [
    ("198.19.1.1", "port-unreachable", ConnectionRefused),
    ("fd00:19::1", "port-unreachable", ConnectionRefused),
    ("198.19.1.1", "admin-prohibited", HostUnreachable),
    ("fd00:19::1", "admin-prohibited", HostUnreachable),
])
def test_reject_sends_icmp_unreachable(dst: str, reply: str, exc: type[Exception]) -> None:
    n = make_net()
    seen: list[UdpForwarderRequest] = []

    def handler(req: UdpForwarderRequest) -> None:
        seen.append(req)
        req.reject(reply)

    UdpForwarder(n.gw, handler)
    u = n.cli.udp_endpoint(6 if ":" in dst else 4)
    u.connect(dst, 53)
    u.send(b"hello?")
    n.run(timeout=0.1)
    assert len(seen) == 1 and seen[0].local == (b(dst), 53)
    with pytest.raises(exc):
        u.recvfrom()
    assert n.gw.stats()["udp"]["forwarder-rejected"] == 1
    assert not n.gw.udp.forwarder.flows  # type: ignore[union-attr]


def test_destination_filter_is_per_datagram_within_a_flow() -> None:
    n = make_net()
    _, flows = _accept_all(n)
    n.gw.udp.forwarder.destination_filter = (  # type: ignore[union-attr]
        lambda addr, port: addr.startswith(b"\xc6\x13"))
    u = n.cli.udp_endpoint(4)
    u.bind(None, 6000)
    u.sendto(b"allowed", ("198.19.0.5", 53))
    n.run(timeout=0.1)
    u.sendto(b"blocked", ("203.0.113.5", 53))
    n.run(timeout=0.1)
    assert [d for d, _ in _drain(flows[0])] == [b"allowed"]
    st = n.gw.stats()
    assert st["udp"]["forwarder-filtered"] == 1
    assert st["icmpv4"]["error-sent.3"] == 1  # admin prohibited about the blocked datagram
    # a connected client socket sees it as a hard error
    c = n.cli.udp_endpoint(4)
    c.connect("203.0.113.5", 53)
    c.send(b"blocked too")
    n.run(timeout=0.1)
    with pytest.raises(HostUnreachable):
        c.recvfrom()


def test_idle_timeout_frees_the_flow_and_traffic_refreshes_it() -> None:
    n = make_net()
    flows: list[UdpFlow] = []
    fwd = UdpForwarder(n.gw, lambda r: flows.append(r.accept()), idle_timeout=60.0)
    u = n.cli.udp_endpoint(4)
    u.bind(None, 7000)
    u.sendto(b"1", ("198.19.0.7", 9))
    n.run(timeout=0.1)
    flow = flows[0]
    hups: list[int] = []
    flow.waiter.register(hups.append, EVENT_HUP)
    n.run(timeout=40.0)
    flow.sendto(b"reply")  # outbound refreshes (RFC 4787 REQ-6)
    n.run(timeout=40.0)
    u.sendto(b"2", ("198.19.0.8", 9))  # inbound too
    n.run(timeout=59.0)
    assert not flow.closed and fwd.flows
    n.run(timeout=2.0)
    assert flow.closed and flow.expired and not fwd.flows and hups
    assert [d for d, _ in _drain_until_closed(flow)] == [b"1", b"2"]
    assert n.gw.stats()["udp"]["forwarder-idle-closed"] == 1
    u.sendto(b"3", ("198.19.0.7", 9))  # a new flow for the same source
    n.run(timeout=0.1)
    assert len(flows) == 2 and flows[1].local == (b("198.19.0.7"), 9)


def _drain_until_closed(flow: UdpFlow) -> list[tuple[bytes, tuple[bytes, int]]]:
    out = []
    while True:
        try:
            out.append(flow.recvfrom())
        except ClosedForReceive:
            return out


def test_pending_requests_queue_datagrams_and_are_bounded() -> None:
    n = make_net()
    held: list[UdpForwarderRequest] = []
    fwd = UdpForwarder(n.gw, held.append, max_pending=2, pending_timeout=5.0)
    eps = []
    for port in (8000, 8001, 8002):
        u = n.cli.udp_endpoint(4)
        u.bind(None, port)
        eps.append(u)
        for i in range(3):
            u.sendto(b"%d" % i, ("198.19.0.9", 99 + i))
    n.run(timeout=0.1)
    assert len(held) == 2 and fwd.pending == 2
    assert n.gw.stats()["udp"]["dropped.forwarder-pending-limit"] == 3
    flow = held[0].accept()
    assert [(d, p) for d, (_, p) in _drain(flow)] == [(b"0", 99), (b"1", 100), (b"2", 101)]
    n.run(timeout=6.0)
    assert fwd.pending == 0 and n.gw.stats()["udp"]["forwarder-expired"] == 1


def test_flow_limit_and_close() -> None:
    n = make_net()
    flows: list[UdpFlow] = []
    fwd = UdpForwarder(n.gw, lambda r: flows.append(r.accept()), max_flows=2)
    for port in (8100, 8101, 8102):
        u = n.cli.udp_endpoint(4)
        u.bind(None, port)
        u.sendto(b"x", ("198.19.0.10", 1))
    n.run(timeout=0.1)
    assert len(flows) == 2
    assert n.gw.stats()["udp"]["dropped.forwarder-flow-limit"] == 1
    fwd.close()
    assert all(f.closed for f in flows) and n.gw.udp.forwarder is None
    with pytest.raises(InvalidArgument):
        UdpForwarder(n.gw, lambda r: None, idle_timeout=0)


def test_local_endpoints_take_precedence_over_the_forwarder() -> None:
    n = make_net()
    _, flows = _accept_all(n)
    n.gw.add_address(n.gnic, "198.19.0.100/32")
    srv = n.gw.udp_endpoint(4)
    srv.bind("198.19.0.100", 53)
    u = n.cli.udp_endpoint(4)
    u.sendto(b"to the bound socket", ("198.19.0.100", 53))
    n.run(timeout=0.1)
    assert srv.recvfrom()[0] == b"to the bound socket" and not flows


@pytest.mark.parametrize("dst", ["198.19.50.1", "fd00:19::50"])
def test_echo_to_any_address_is_optional(dst: str) -> None:
    for echo in (False, True):
        n = make_net(echo=echo)
        ep = n.cli.icmp_echo_endpoint(6 if ":" in dst else 4)
        ep.send(b(dst), 1, b"ping")
        n.run(timeout=0.5)
        if echo:
            src, seq, payload, _ = ep.recv()
            assert (src, seq, payload) == (b(dst), 1, b"ping")
        else:
            with pytest.raises(WouldBlock):
                ep.recv()
            st = n.gw.stats()["icmpv4" if ":" not in dst else "icmpv6"]
            assert st["dropped.echo-not-local"] == 1
