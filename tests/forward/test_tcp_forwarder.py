"""TcpForwarder: connections to any address and port reach the handler (sans-IO, virtual time)."""

from __future__ import annotations

import pytest
from fwd_helpers import CLIENT4, CLIENT6, b, make_net

from aionetstack.errors import (
    AddressNotAvailable,
    ConnectionRefused,
    ConnectStarted,
    HostUnreachable,
    InvalidArgument,
    InvalidEndpointState,
    WouldBlock,
)
from aionetstack.transport.tcp import TcpEndpoint, TcpState
from aionetstack.transport.tcp.forwarder import TcpForwarder, TcpForwarderRequest

DESTS = [("198.19.0.1", 80), ("198.19.200.7", 443), ("10.99.1.2", 22), ("198.51.100.9", 65535),
         ("fd00:19::1", 80), ("fd00:abcd::42", 8443), ("2001:db8::7", 1)]


def _accepting(net: object) -> tuple[list[TcpForwarderRequest], list[TcpEndpoint]]:
    reqs: list[TcpForwarderRequest] = []
    eps: list[TcpEndpoint] = []

    def handler(req: TcpForwarderRequest) -> None:
        reqs.append(req)
        eps.append(req.accept())

    TcpForwarder(net.gw, handler)  # type: ignore[attr-defined]
    return reqs, eps


def test_many_destinations_reach_handler_with_original_destination() -> None:
    n = make_net()
    reqs, eps = _accepting(n)
    clients = [n.connect(host, port) for host, port in DESTS]
    assert n.run(lambda: all(c.state is TcpState.ESTABLISHED for c in clients))
    assert n.run(lambda: all(e.state is TcpState.ESTABLISHED for e in eps))
    assert len(reqs) == len(DESTS)
    by_dst = {(r.local[0], r.local[1]): (r, e) for r, e in zip(reqs, eps, strict=True)}
    for c, (host, port) in zip(clients, DESTS, strict=True):
        r, e = by_dst[(b(host), port)]
        assert c.local is not None
        assert r.remote == c.local and e.remote == c.local
        assert e.local == (b(host), port)
        assert c.remote == (b(host), port)
        assert c.local[0] == b(CLIENT6 if ":" in host else CLIENT4)
        assert e.family == r.family == (6 if ":" in host else 4)
    # data both ways, then a clean close
    for i, c in enumerate(clients):
        c.write(b"ping %d" % i)
    for host, port in DESTS:
        _, e = by_dst[(b(host), port)]
        assert n.run(lambda e=e: e.unread() > 0)
        got = e.read()
        e.write(got.upper() + b" from " + host.encode())
        e.close()
    for i, c in enumerate(clients):
        host = DESTS[i][0]
        assert n.run(lambda c=c: c.unread() > 0 and c.rcv.fin_received)
        assert c.read() == b"PING %d from %s" % (i, host.encode())
        c.close()
    assert n.run(lambda: not n.gw.tcp.connections and not n.cli.tcp.connections, 300)
    st = n.gw.stats()["tcp"]
    assert st["forwarder-requests"] == st["forwarder-accepted"] == len(DESTS)
    assert st["forwarder-established"] == len(DESTS)


def test_bulk_transfer_through_forwarded_connection() -> None:
    n = make_net()
    _, eps = _accepting(n)
    c = n.connect("198.19.3.3", 9000)
    assert n.run(lambda: bool(eps) and eps[0].state is TcpState.ESTABLISHED)
    e = eps[0]
    data = bytes(range(256)) * 4000  # 1 MB
    sent, got = 0, bytearray()

    def step() -> bool:
        nonlocal sent
        try:
            if sent < len(data):
                sent += c.write(memoryview(data)[sent:sent + 65536])
        except WouldBlock:
            pass
        try:
            got.extend(e.read())
        except WouldBlock:
            pass
        return len(got) == len(data)

    assert n.run(step, 120)
    assert bytes(got) == data


@pytest.mark.parametrize("dst", ["198.19.9.9", "fd00:19::9"])
def test_reject_sends_reset(dst: str) -> None:
    n = make_net()
    seen: list[TcpForwarderRequest] = []

    def handler(req: TcpForwarderRequest) -> None:
        seen.append(req)
        req.reject()

    TcpForwarder(n.gw, handler)
    c = n.connect(dst, 25)
    assert n.run(lambda: c.state is TcpState.CLOSED)
    assert isinstance(c.error, ConnectionRefused)
    assert len(seen) == 1 and seen[0].local == (b(dst), 25)
    assert n.gw.stats()["tcp"]["forwarder-rejected"] == 1
    assert not n.gw.tcp.connections


@pytest.mark.parametrize("dst", ["198.19.9.9", "fd00:19::9"])
def test_reject_with_icmp_admin_prohibited(dst: str) -> None:
    n = make_net()
    TcpForwarder(n.gw, lambda req: req.reject("admin-prohibited"))
    c = n.connect(dst, 25)
    assert n.run(lambda: c.state is TcpState.CLOSED)
    assert isinstance(c.error, HostUnreachable)  # a hard error aborts the attempt


def test_destination_filter_resets_without_calling_handler() -> None:
    n = make_net()
    calls: list[TcpForwarderRequest] = []

    def handler(req: TcpForwarderRequest) -> None:
        calls.append(req)
        req.accept()

    TcpForwarder(n.gw, handler, destination_filter=lambda addr, port: addr[:2] == b"\xc6\x13")
    ok = n.connect("198.19.1.1", 80)
    refused = n.connect("198.20.1.1", 80)
    assert n.run(lambda: ok.state is TcpState.ESTABLISHED and refused.state is TcpState.CLOSED)
    assert isinstance(refused.error, ConnectionRefused)
    assert [r.local[0] for r in calls] == [b("198.19.1.1")]
    assert n.gw.stats()["tcp"]["forwarder-filtered"] == 1


def test_deferred_decision_and_syn_retransmissions() -> None:
    n = make_net()
    held: list[TcpForwarderRequest] = []
    fwd = TcpForwarder(n.gw, held.append)
    c = n.connect("198.19.4.4", 4444)
    n.run(timeout=3.5)  # the client retransmits its SYN (RTO 1 s, then 2 s)
    assert len(held) == 1 and fwd.pending == 1
    assert n.gw.stats()["tcp"]["dropped.forwarder-syn-pending"] >= 1
    ep = held[0].accept()
    assert ep.state is TcpState.SYN_RECEIVED and fwd.pending == 1
    assert n.run(lambda: c.state is TcpState.ESTABLISHED and ep.state is TcpState.ESTABLISHED)
    assert fwd.pending == 0 and ep.parent is None
    with pytest.raises(InvalidEndpointState):
        held[0].accept()
    with pytest.raises(InvalidEndpointState):
        held[0].reject()


def test_pending_bound_drops_excess_syns_and_expiry_frees_slots() -> None:
    n = make_net()
    held: list[TcpForwarderRequest] = []
    fwd = TcpForwarder(n.gw, held.append, max_pending=3, pending_timeout=5.0)
    clients = [n.connect("198.19.5.5", 1000 + i) for i in range(10)]
    n.run(timeout=0.5)
    assert len(held) == 3 and fwd.pending == 3
    st = n.gw.stats()["tcp"]
    assert st["dropped.forwarder-pending-limit"] == 7
    # accepting one keeps its slot until the handshake completes, then frees it
    ep = held[0].accept()
    assert fwd.pending == 3
    assert n.run(lambda: ep.state is TcpState.ESTABLISHED)
    assert fwd.pending == 2
    # undecided requests expire; the clients' retransmitted SYNs make new requests
    n.run(timeout=6.0)
    assert n.gw.stats()["tcp"]["forwarder-expired"] >= 2
    assert len(held) > 3
    assert fwd.pending <= 3
    # a handler that accepts at once: every client gets through on a later SYN retransmission
    fwd.handler = lambda r: held.append(r) or r.accept()  # type: ignore[func-returns-value]
    for r in held:
        if not r.decided:
            r.accept()
    assert n.run(lambda: all(c.state is TcpState.ESTABLISHED for c in clients), 200)
    assert n.run(lambda: n.gw.stats()["tcp"]["forwarder-established"] == 10)
    assert fwd.pending == 0


def test_client_reset_during_handshake_hangs_up_the_accepted_endpoint() -> None:
    n = make_net()
    eps: list[TcpEndpoint] = []
    held: list[TcpForwarderRequest] = []
    TcpForwarder(n.gw, held.append)
    c = n.connect("198.19.6.6", 80)
    n.run(timeout=0.1)
    c.abort()  # SYN-SENT: no RST goes out; the SYN-ACK we send is then answered with a RST
    eps.append(held[0].accept())
    assert n.run(lambda: eps[0].state is TcpState.CLOSED)
    assert not n.gw.tcp.connections and not n.gw.tcp.endpoints


def test_handshake_failure_bounded_by_synack_retries() -> None:
    n = make_net()
    held: list[TcpForwarderRequest] = []
    TcpForwarder(n.gw, held.append)
    n.connect("198.19.6.6", 80)
    n.run(timeout=0.1)
    n.cli.close()  # the client vanishes
    ep = held[0].accept()
    assert n.run(lambda: ep.state is TcpState.CLOSED, 300)
    assert not n.gw.tcp.connections


def test_no_forwarding_without_transparent_mode() -> None:
    n = make_net(transparent=False)
    calls: list[TcpForwarderRequest] = []
    TcpForwarder(n.gw, calls.append)
    c = n.connect("198.19.7.7", 80)
    n.run(timeout=2.0)
    assert not calls and c.state is TcpState.SYN_SENT
    assert n.gw.stats()["ipv4"]["dropped.not-for-us"] >= 1
    with pytest.raises(AddressNotAvailable):
        n.gw.find_route(b(CLIENT4), b("198.19.7.7"))  # no spoofing on this NIC


def test_forwarder_misuse_raises_typed_errors() -> None:
    n = make_net()
    fwd = TcpForwarder(n.gw, lambda r: None)
    with pytest.raises(InvalidArgument):
        TcpForwarder(n.gw, lambda r: None)
    fwd.close()
    TcpForwarder(n.gw, lambda r: None).close()
    with pytest.raises(InvalidArgument):
        TcpForwarder(n.gw, lambda r: None, max_pending=0)
    with pytest.raises(InvalidArgument):
        n.gw.set_transparent(n.gw.loopback)  # type: ignore[arg-type]
    held: list[TcpForwarderRequest] = []
    TcpForwarder(n.gw, held.append)
    n.connect("198.19.8.8", 80)
    n.run(timeout=0.1)
    with pytest.raises(InvalidArgument):
        held[0].reject("bogus")
    assert not held[0].decided


def test_close_resets_pending_requests() -> None:
    n = make_net()
    held: list[TcpForwarderRequest] = []
    fwd = TcpForwarder(n.gw, held.append)
    c = n.connect("198.19.8.8", 80)
    n.run(timeout=0.1)
    fwd.close()
    assert n.run(lambda: c.state is TcpState.CLOSED)
    assert isinstance(c.error, ConnectionRefused)
    assert n.gw.tcp.forwarder is None


def test_forwarder_bound_to_one_nic_ignores_the_others() -> None:
    from aionetstack.link.pipe import pipe

    n = make_net()
    other = n.net.stack()
    eo, eg2 = pipe(seed=2)
    onic = other.add_nic(eo, ["198.18.1.1/24"])
    other.add_route("0.0.0.0/0", nic=onic)
    gnic2 = n.gw.add_nic(eg2, [])
    n.gw.set_transparent(gnic2)
    n.gw.add_route("198.18.1.0/24", nic=gnic2)  # replies leave by the NIC the source is on
    calls: list[TcpForwarderRequest] = []

    def handler(req: TcpForwarderRequest) -> None:
        calls.append(req)
        req.accept()

    TcpForwarder(n.gw, handler, nic=n.gnic)
    c = n.connect("198.19.0.1", 80)
    ep = other.tcp_endpoint(4)
    with pytest.raises(ConnectStarted):
        ep.connect("198.19.0.1", 80)
    assert n.run(lambda: c.state is TcpState.ESTABLISHED and ep.state is TcpState.CLOSED)
    assert isinstance(ep.error, ConnectionRefused)  # the other NIC answers as a closed port
    assert [r.nic for r in calls] == [n.gnic]
