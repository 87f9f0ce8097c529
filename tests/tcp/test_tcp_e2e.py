"""End-to-end connection scenarios between two stacks: wrap-around, half-close, resets, errors."""

from __future__ import annotations

import hashlib
import random
import weakref

import pytest
from tcp_helpers import A, B, Pair, make_pair
from test_tcp_transfer import pump

from aionetstack.errors import (
    ClosedForSend,
    ConnectionRefused,
    ConnectionReset,
    ConnectStarted,
    TimedOut,
    WouldBlock,
)
from aionetstack.stack.waiter import EVENT_ERR, EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp import TcpState
from aionetstack.transport.tcp.endpoint import TcpEndpoint


@pytest.mark.parametrize("impaired", [False, True])
def test_sequence_numbers_wrap_at_2_32(impaired: bool) -> None:
    kw = dict(delay=0.05, loss=0.05, reorder=0.05, duplicate=0.02) if impaired else {}
    p = make_pair(seed=11, **kw)  # type: ignore[arg-type]
    p.ta.isn_override = 2**32 - 3000
    p.tb.isn_override = 2**32 - 1
    data = random.Random(5).randbytes(300_000)
    back = random.Random(6).randbytes(200_000)
    lst, cli, srv = p.connect()
    assert cli.snd.iss == 2**32 - 3000 and srv.snd.iss == 2**32 - 1
    got = pump(p, cli, srv, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    got2 = pump(p, srv, cli, back)
    assert got2 == back
    assert cli.snd.snd_una < 2**20 and srv.rcv.rcv_nxt < 2**20  # both wrapped
    cli.close()
    srv.close()
    lst.close()
    assert p.run(lambda: cli.state is TcpState.CLOSED and srv.state is TcpState.CLOSED, 200)
    p.assert_no_leaks()


def test_half_close_server_keeps_sending(pair: Pair) -> None:
    lst, cli, srv = pair.connect()
    cli.write(b"request")
    cli.shutdown_write()
    assert cli.state is TcpState.FIN_WAIT_1
    with pytest.raises(ClosedForSend):
        cli.write(b"more")
    assert pair.run(lambda: srv.state is TcpState.CLOSE_WAIT)
    assert srv.read() == b"request" and srv.read() == b""
    reply = random.Random(1).randbytes(100_000)
    got = pump(pair, srv, cli, reply)
    assert got == reply
    assert pair.run(lambda: cli.state is TcpState.TIME_WAIT and srv.state is TcpState.CLOSED)
    cli.close()
    srv.close()
    lst.close()
    pair.net.run(61)
    pair.assert_no_leaks()


def test_abort_sends_rst_and_peer_sees_reset(pair: Pair) -> None:
    lst, cli, srv = pair.connect()
    events: list[int] = []
    srv.waiter.register(events.append, EVENT_ERR)
    cli.abort()
    assert cli.state is TcpState.CLOSED
    assert pair.run(lambda: srv.state is TcpState.CLOSED)
    assert events and events[0] & EVENT_ERR
    with pytest.raises(ConnectionReset):
        srv.read()
    with pytest.raises(ConnectionReset):
        srv.write(b"x")
    srv.close()
    lst.close()
    pair.assert_no_leaks()


def test_close_with_unread_data_resets_peer(pair: Pair) -> None:
    lst, cli, srv = pair.connect()
    cli.write(b"never read")
    assert pair.run(lambda: srv.unread() == 10)
    srv.close()
    assert pair.run(lambda: cli.state is TcpState.CLOSED)
    assert isinstance(cli.error, ConnectionReset)
    cli.close()
    lst.close()
    pair.assert_no_leaks()


def test_connect_to_closed_port_is_refused(pair: Pair) -> None:
    cli = pair.ta.new_endpoint()
    seen: list[int] = []
    cli.waiter.register(seen.append, EVENT_OUT)
    with pytest.raises(ConnectStarted):
        cli.connect(B, 9)
    assert pair.run(lambda: cli.state is TcpState.CLOSED)
    assert seen
    with pytest.raises(ConnectionRefusedError):
        cli.connect_result()
    assert isinstance(cli.error, ConnectionRefused)
    cli.close()
    pair.assert_no_leaks()


def test_syn_retries_then_timeout_with_total_loss() -> None:
    p = make_pair(loss=1.0)
    cli = p.ta.new_endpoint()
    t0 = p.net.now
    with pytest.raises(ConnectStarted):
        cli.connect(B, 80)
    assert p.run(lambda: cli.state is TcpState.CLOSED, 300)
    assert p.net.now - t0 == pytest.approx(127.0)
    assert cli.info()["retransmits"] == 6
    with pytest.raises(TimedOut):
        cli.connect_result()
    with pytest.raises(TimeoutError):
        cli.read()
    cli.close()
    p.assert_no_leaks()


def test_data_retransmission_limit_times_out() -> None:
    p = make_pair()
    _, cli, _ = p.connect()
    p.links[0].close()  # a -> b direction dies
    cli.write(b"lost")
    assert p.run(lambda: cli.state is TcpState.CLOSED, 3000)
    assert isinstance(cli.error, TimedOut)
    assert cli.info()["retransmits"] == 16  # a tail loss probe, then 15 timeouts
    assert p.a.stats()["tcp"]["loss-probes"] == 1


def test_simultaneous_open() -> None:
    p = make_pair(delay=0.01)
    x = p.ta.new_endpoint()
    y = p.tb.new_endpoint()
    x.bind(A, 5001)
    y.bind(B, 5002)
    with pytest.raises(ConnectStarted):
        x.connect(B, 5002)
    with pytest.raises(ConnectStarted):
        y.connect(A, 5001)
    assert p.run(lambda: x.state is TcpState.ESTABLISHED and y.state is TcpState.ESTABLISHED)
    x.write(b"ping")
    assert p.run(lambda: y.unread() == 4)
    assert y.read() == b"ping"
    # simultaneous close
    x.close()
    y.close()
    assert p.run(lambda: x.state is TcpState.CLOSED and y.state is TcpState.CLOSED, 200)
    p.assert_no_leaks()


def test_readiness_and_waiters(pair: Pair) -> None:
    lst, cli, srv = pair.connect()
    assert cli.readiness(EVENT_IN | EVENT_OUT) == EVENT_OUT
    got: list[int] = []
    srv.waiter.register(got.append, EVENT_IN)
    cli.write(b"abc")
    assert pair.run(lambda: bool(got))
    assert srv.readiness(EVENT_IN) == EVENT_IN
    assert srv.read(2) == b"ab" and srv.read(5) == b"c"
    with pytest.raises(WouldBlock):
        srv.read()
    info = srv.info()
    assert info["state"] == "ESTABLISHED" and info["bytes_received"] == 3
    assert pair.run(lambda: cli.info()["bytes_acked"] == 3)
    cli.abort()
    srv.abort()
    lst.close()
    pair.assert_no_leaks()


def test_ipv6_transfer() -> None:
    from aionetstack.link.pipe import pipe
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    net = VirtualNetwork(seed=2)
    a, b = net.stack(), net.stack()
    ea, eb = pipe(seed=2, delay=0.01)
    a.add_nic(ea, ["fd00::1/64"])
    b.add_nic(eb, ["fd00::2/64"])
    ta, tb = install_tcp(a), install_tcp(b)
    lst = tb.new_endpoint(6)
    lst.bind(None, 443)
    lst.listen()
    cli = ta.new_endpoint(6)
    with pytest.raises(ConnectStarted):
        cli.connect("fd00::2", 443)
    assert net.run(until=lambda: bool(lst.listen_queue and lst.listen_queue.accept_queue),
                   timeout=5)
    srv = lst.accept()
    assert cli.snd.mss == 1500 - 60 - 12
    p = Pair(net, a, b, ta, tb, (ea, eb))
    data = random.Random(3).randbytes(50_000)
    assert pump(p, cli, srv, data) == data


def test_icmp_protocol_unreachable_aborts_connect() -> None:
    from aionetstack.link.pipe import pipe
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    net = VirtualNetwork(seed=9)
    a, b = net.stack(), net.stack()  # b has no TCP: it answers with ICMP protocol unreachable
    ea, eb = pipe(seed=9)
    a.add_nic(ea, [A + "/24"])
    b.add_nic(eb, [B + "/24"])
    ta = install_tcp(a)
    cli = ta.new_endpoint()
    with pytest.raises(ConnectStarted):
        cli.connect(B, 80)
    assert net.run(until=lambda: cli.state is TcpState.CLOSED, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        cli.connect_result()


def test_impaired_transfer_is_deterministic() -> None:
    def once() -> tuple[object, ...]:
        p = make_pair(seed=21, delay=0.02, loss=0.05, reorder=0.05, duplicate=0.05)
        _, cli, srv = p.connect()
        data = random.Random(8).randbytes(200_000)
        assert pump(p, cli, srv, data) == data
        return (p.net.now, cli.info()["retransmits"], p.a.stats()["tcp"], p.b.stats()["tcp"])

    assert once() == once()


def test_unresolvable_neighbour_reports_host_unreachable() -> None:
    from aionetstack.errors import HostUnreachable

    p = make_pair(l2=True)
    cli = p.ta.new_endpoint()
    with pytest.raises(ConnectStarted):
        cli.connect("198.18.0.99", 80)  # nobody answers ARP for this address
    assert p.run(lambda: cli.state is TcpState.CLOSED, 300)
    with pytest.raises(HostUnreachable):
        cli.connect_result()


SCENARIOS = [
    dict(delay=0.001),
    dict(delay=0.02, loss=0.1, reorder=0.2, duplicate=0.05),
    dict(delay=0.05, loss=0.2, reorder=0.05, corrupt=0.01),
    dict(delay=0.001, loss=0.2, reorder=0.05, corrupt=0.01, jitter=0.005),
    dict(delay=0.02, loss=0.02, duplicate=0.05, jitter=0.005),
]


@pytest.mark.parametrize("small_buffers", [False, True])
@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("scenario", range(len(SCENARIOS)))
def test_bidirectional_transfer_matrix(scenario: int, wrap: bool, small_buffers: bool) -> None:
    p = make_pair(seed=100 + scenario, **SCENARIOS[scenario])  # type: ignore[arg-type]
    if small_buffers:
        p.ta.rcvbuf = p.tb.rcvbuf = 8000
        p.ta.sndbuf = p.tb.sndbuf = 5000
    if wrap:
        p.ta.isn_override, p.tb.isn_override = 2**32 - 500, 2**32 - 7
    lst, cli, srv = p.connect()
    up = random.Random(scenario).randbytes(150_000)
    down = random.Random(scenario + 1).randbytes(60_000)
    assert pump(p, cli, srv, up, timeout=3000) == up
    assert pump(p, srv, cli, down, timeout=3000) == down
    cli.close()
    srv.close()
    lst.close()
    assert p.run(lambda: cli.state is TcpState.CLOSED and srv.state is TcpState.CLOSED, 3000)
    p.net.run(200)
    p.assert_no_leaks()
    assert len(p.a.timers) == 0 and len(p.b.timers) == 0


def test_reentrant_waiter_callbacks_echo_and_close() -> None:
    """Callbacks that read, write and close from inside a notification must be safe."""
    p = make_pair(seed=5, delay=0.005, loss=0.05, reorder=0.05)
    lst, cli, srv = p.connect()

    def on_srv(events: int) -> None:
        try:
            data = srv.read()
        except (WouldBlock, OSError):
            return
        if data:
            srv.write(data)
        else:
            srv.close()

    srv.waiter.register(on_srv, EVENT_IN)
    msg = random.Random(4).randbytes(30_000)
    sent = 0
    echoed = bytearray()

    def step() -> bool:
        nonlocal sent
        if sent < len(msg):
            try:
                sent += cli.write(msg[sent:])
            except WouldBlock:
                pass
            if sent == len(msg):
                cli.shutdown_write()
        try:
            while chunk := cli.read():
                echoed.extend(chunk)
        except WouldBlock:
            return False
        return True

    assert p.run(step, 300)
    assert bytes(echoed) == msg
    lst.close()
    cli.close()
    assert p.run(lambda: srv.state is TcpState.CLOSED and cli.state in (
        TcpState.TIME_WAIT, TcpState.CLOSED), 100)


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_bidirectional_transfer(seed: int) -> None:
    rng = random.Random(seed)
    p = make_pair(seed=seed, delay=rng.choice([0.001, 0.02]), loss=rng.choice([0.05, 0.1]),
                  reorder=0.05, duplicate=0.02, l2=bool(seed % 2))
    if seed % 3 == 0:
        p.ta.rcvbuf = p.tb.rcvbuf = 8000
        p.ta.sndbuf = p.tb.sndbuf = 5000
    lst, cli, srv = p.connect()
    data = {cli: rng.randbytes(120_000), srv: rng.randbytes(90_000)}
    sent = {cli: 0, srv: 0}
    got: dict[object, bytearray] = {cli: bytearray(), srv: bytearray()}
    eof: set[object] = set()

    def step() -> bool:
        for ep in (cli, srv):
            d = data[ep]
            while sent[ep] < len(d):
                try:
                    sent[ep] += ep.write(d[sent[ep]:sent[ep] + rng.randrange(1, 20000)])
                except WouldBlock:
                    break
            if sent[ep] == len(d) and ep.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                ep.shutdown_write()
            try:
                while chunk := ep.read(rng.randrange(1, 30000)):
                    got[ep].extend(chunk)
                eof.add(ep)
            except WouldBlock:
                pass
        return len(eof) == 2

    assert p.run(step, 3000)
    assert bytes(got[srv]) == data[cli] and bytes(got[cli]) == data[srv]
    cli.close()
    srv.close()
    lst.close()
    assert p.run(lambda: cli.state is TcpState.CLOSED and srv.state is TcpState.CLOSED, 3000)
    p.assert_no_leaks()


@pytest.mark.parametrize("addr", ["127.0.0.1", "::1", A])
def test_loopback_connection_on_one_stack(addr: str) -> None:
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    net = VirtualNetwork(seed=3)
    s = net.stack()
    from aionetstack.link.pipe import pipe

    ea, _ = pipe(seed=3)
    s.add_nic(ea, [A + "/24"])
    tcp = install_tcp(s)
    fam = 6 if ":" in addr else 4
    lst = tcp.new_endpoint(fam)
    lst.bind(None, 7)
    lst.listen()
    cli = tcp.new_endpoint(fam)
    with pytest.raises(ConnectStarted):
        cli.connect(addr, 7)
    assert net.run(until=lambda: bool(lst.listen_queue and lst.listen_queue.accept_queue),
                   timeout=5)
    srv = lst.accept()
    msg = random.Random(1).randbytes(200_000)
    p = Pair(net, s, s, tcp, tcp, (ea, ea))
    assert pump(p, cli, srv, msg) == msg
    if addr != A:
        assert cli.snd.mss == (65495 if fam == 4 else 65476) - 12
    cli.close()
    srv.close()
    lst.close()
    assert net.run(until=lambda: srv.state is TcpState.CLOSED, timeout=10)


def test_bind_and_listen_errors(pair: Pair) -> None:
    from aionetstack.errors import (
        AddressNotAvailable,
        AlreadyBound,
        InvalidEndpointState,
        NotConnected,
        PortInUse,
    )

    t = pair.tb
    a = t.new_endpoint()
    a.bind(None, 80)
    with pytest.raises(AlreadyBound):
        a.bind(None, 81)
    b = t.new_endpoint()
    with pytest.raises(PortInUse):
        b.bind(B, 80)
    with pytest.raises(AddressNotAvailable):
        b.bind("203.0.113.1", 80)
    with pytest.raises(NotConnected):
        b.write(b"x")
    with pytest.raises(NotConnected):
        b.read()
    with pytest.raises(InvalidEndpointState):
        b.accept()
    a.listen()
    with pytest.raises(InvalidEndpointState):
        a.connect(A, 1)
    ephemeral = t.new_endpoint()
    ephemeral.listen()  # listen without bind picks an ephemeral port
    assert ephemeral.local is not None and 32768 <= ephemeral.local[1] <= 60999
    for ep in (a, b, ephemeral):
        ep.close()
    pair.assert_no_leaks()


def test_start_connect_and_connecting_follow_connect_without_exceptions() -> None:
    p = make_pair()
    lst = p.tb.new_endpoint()
    lst.bind(None, 80)
    lst.listen()
    cli = p.ta.new_endpoint()
    assert not cli.connecting()
    cli.start_connect(B, 80)  # returns: the SYN is out
    assert cli.state is TcpState.SYN_SENT and cli.connecting()
    with pytest.raises(WouldBlock):
        cli.connect_result()
    assert p.run(lambda: not cli.connecting())
    cli.connect_result()
    assert cli.state is TcpState.ESTABLISHED
    refused = p.ta.new_endpoint()
    refused.start_connect(B, 81)  # no listener: a reset comes back
    assert p.run(lambda: not refused.connecting())
    with pytest.raises(ConnectionRefused):
        refused.connect_result()
    cli.abort()
    lst.close()


def test_a_listener_of_a_subclass_accepts_children_of_its_class(pair: Pair) -> None:
    """A passive open makes the child with the listener's own class (``type(self)``), so an
    application's subclass of ``TcpEndpoint`` gets its own kind back from ``accept``, with
    what it adds (here an attribute and weak references, which the compiled class has not)."""

    class Tagged(TcpEndpoint):
        __slots__ = ("__weakref__", "tag")

    lst = Tagged(pair.tb, 4)
    pair.tb.endpoints.add(lst)
    lst.bind(None, 81)
    lst.listen(4)
    cli = pair.ta.new_endpoint()
    with pytest.raises(ConnectStarted):
        cli.connect(B, 81)
    assert pair.run(lambda: lst.listen_queue is not None and bool(lst.listen_queue.accept_queue))
    srv = lst.accept()
    assert type(srv) is Tagged and type(cli) is TcpEndpoint
    srv.tag = "mine"
    assert weakref.ref(srv)() is srv
    cli.write(b"hello")
    assert pair.run(lambda: srv.unread() == 5)
    assert srv.read() == b"hello"
    cli.close()
    srv.close()
    lst.close()
    assert pair.run(lambda: cli.state is TcpState.CLOSED and srv.state is TcpState.CLOSED, 200)
    pair.assert_no_leaks()


def test_connections_to_different_destinations_share_ephemeral_ports() -> None:
    """As on Linux, a connect's port is unique per 4-tuple, not per stack: with 4 ephemeral
    ports, 4 connections to each of 3 listeners are 12 connections; a fifth to one listener
    finds no free port; a port a connection holds cannot be bound."""
    from aionetstack.errors import AddressNotAvailable, PortInUse
    from aionetstack.link.pipe import pipe
    from aionetstack.testing import VirtualNetwork
    from aionetstack.transport.tcp import install_tcp

    net = VirtualNetwork(seed=5)
    a, b = net.stack(ephemeral_ports=(40000, 40003)), net.stack()
    ea, eb = pipe(seed=5)
    a.add_nic(ea, [A + "/24"])
    b.add_nic(eb, [B + "/24"])
    ta, tb = install_tcp(a), install_tcp(b)
    listeners = []
    for port in (80, 81, 82):
        lst = tb.new_endpoint()
        lst.bind(None, port)
        lst.listen(16)
        listeners.append(lst)
    clients = []
    for port in (80, 81, 82):
        for _ in range(4):
            c = ta.new_endpoint()
            c.start_connect(B, port)
            clients.append(c)
    assert net.run(until=lambda: all(c.state is TcpState.ESTABLISHED for c in clients),
                   timeout=10)
    used = [c.local for c in clients]
    assert len(set(used)) == 4  # the same 4 (address, port) pairs, each used three times
    assert {p for _, p in used} == {40000, 40001, 40002, 40003}
    assert len({(c.local, c.remote) for c in clients}) == 12
    extra = ta.new_endpoint()
    with pytest.raises(AddressNotAvailable):
        extra.start_connect(B, 80)
    bound = ta.new_endpoint()
    with pytest.raises(PortInUse):
        bound.bind(None, 40001)  # held by connections: not free for a bind
    for c in clients:
        c.abort()
    bound.bind(None, 40001)  # released with them
    bound.close()
    for lst in listeners:
        lst.close()
