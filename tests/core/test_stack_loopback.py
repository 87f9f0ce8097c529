"""Traffic to the stack's own addresses goes through ``lo`` and never touches a real link."""

from __future__ import annotations

import pytest
from core_helpers import PEER4, ip, wired_stack

from aionetstack import errors
from aionetstack.link.pipe import PipeEnd
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork

OWN = ["198.18.0.1", "fd00::1", "127.0.0.1", "::1"]


def setup() -> tuple[VirtualNetwork, CoreStack, PipeEnd]:
    net = VirtualNetwork(seed=51)
    s, nic, _wire = wired_stack(net)
    s.add_route("0.0.0.0/0", gateway=PEER4)
    assert isinstance(nic.link, PipeEnd)
    return net, s, nic.link


@pytest.mark.parametrize("addr", OWN)
def test_ping_own_address_uses_lo(addr: str) -> None:
    net, s, pipe_end = setup()
    before = pipe_end.stats()
    family = 6 if ":" in addr else 4
    route = s.find_route(ip(addr))
    assert route.nic is s.loopback
    assert (route.local, route.next_hop) == (ip(addr), ip(addr))
    ep = s.icmp_echo_endpoint(family)
    ep.send(ip(addr), 1, b"me")
    assert net.run(until=lambda: bool(ep.replies), timeout=1)
    assert ep.recv()[:3] == (ip(addr), 1, b"me")
    assert pipe_end.stats() == before  # nothing sent, nothing received on the pipe
    assert s.stats()["nics"]["lo"]["tx_frames"] == 2  # request and reply
    icmp = "icmpv4" if family == 4 else "icmpv6"
    assert s.stats()[icmp]["echo-reply-sent"] == 1


@pytest.mark.parametrize("addr", OWN)
def test_udp_to_own_address_uses_lo(addr: str) -> None:
    net, s, pipe_end = setup()
    before = pipe_end.stats()
    family = 6 if ":" in addr else 4
    server = s.udp_endpoint(family)
    server.bind(None, 5000)
    client = s.udp_endpoint(family)
    client.sendto(b"self", (addr, 5000))
    net.run(duration=0.1)
    assert server.recvfrom() == (b"self", (ip(addr), client.local[1]))
    # a large datagram fits the loopback MTU whole
    big = bytes(range(256)) * 200
    client.sendto(big, (addr, 5000))
    net.run(duration=0.1)
    assert server.recvfrom()[0] == big
    assert s.stats()["fragment"] == {}
    assert pipe_end.stats() == before


def test_connected_udp_to_closed_local_port_is_refused() -> None:
    net, s, pipe_end = setup()
    before = pipe_end.stats()
    ep = s.udp_endpoint(4)
    ep.connect("127.0.0.1", 9)
    ep.send(b"x")
    assert net.run(until=lambda: ep.error is not None, timeout=1)
    with pytest.raises(ConnectionRefusedError):
        ep.recvfrom()
    assert pipe_end.stats() == before


def test_loopback_destination_never_leaves_the_host() -> None:
    """RFC 1122 §3.2.1.3(g): 127/8 and ::1 must not appear outside a host, even with a default
    route."""
    net, s, pipe_end = setup()
    s.add_route("::/0", gateway="fd00::2")
    before = pipe_end.stats()
    for dst in ("127.0.0.2", "127.1.2.3"):
        with pytest.raises(errors.NoRoute):
            s.find_route(ip(dst))
    ep = s.udp_endpoint(4)
    with pytest.raises(errors.NoRoute):
        ep.sendto(b"x", ("127.0.0.2", 9))
    s6 = s.udp_endpoint(6)
    s6.sendto(b"x", ("::1", 9))  # ::1 is ours: through lo
    net.run(duration=1.0)
    assert pipe_end.stats() == before
