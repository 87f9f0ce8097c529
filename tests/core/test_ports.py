"""Port reservations and ephemeral port selection (RFC 6056)."""

from __future__ import annotations

import errno
import itertools
import random

import pytest
from core_helpers import ip

from aionetstack import errors, link
from aionetstack.stack.ports import PortManager
from aionetstack.testing import VirtualNetwork

UDP, TCP = 17, 6
R1 = (ip("192.0.2.1"), 53)
R2 = (ip("192.0.2.2"), 443)
SPAN = 60999 - 32768 + 1


def pm(seed: int = 1, first: int = 32768, last: int = 60999) -> PortManager:
    return PortManager(random.Random(seed), first, last)


def test_explicit_reservations_and_conflicts() -> None:
    p = pm()
    a = p.reserve(UDP, 4, None, 5000)
    assert a.port == 5000
    with pytest.raises(errors.PortInUse):
        p.reserve(UDP, 4, None, 5000)
    with pytest.raises(errors.PortInUse):
        p.reserve(UDP, 4, ip("10.0.0.1"), 5000)  # the wildcard covers it
    p.reserve(TCP, 4, None, 5000)  # another protocol
    p.reserve(UDP, 6, None, 5000)  # another family
    p.reserve(UDP, 4, None, 5001)
    assert len(p) == 4
    p.release(a)
    p.release(a)  # idempotent
    b = p.reserve(UDP, 4, ip("10.0.0.1"), 5000)
    p.reserve(UDP, 4, ip("10.0.0.2"), 5000)  # distinct addresses do not overlap
    with pytest.raises(errors.PortInUse):
        p.reserve(UDP, 4, None, 5000)
    p.release(b)
    with pytest.raises(errors.InvalidArgument):
        p.reserve(UDP, 4, None, 65536)
    with pytest.raises(errors.InvalidArgument):
        PortManager(random.Random(), 50000, 40000)


def test_reuse_needs_both_sides() -> None:
    p = pm()
    p.reserve(UDP, 4, None, 6000, reuse=True)
    p.reserve(UDP, 4, None, 6000, reuse=True)
    p.reserve(UDP, 4, ip("10.0.0.1"), 6000, reuse=True)
    with pytest.raises(errors.PortInUse):
        p.reserve(UDP, 4, ip("10.0.0.1"), 6000, reuse=False)
    q = pm()
    q.reserve(UDP, 4, None, 6000, reuse=False)
    with pytest.raises(errors.PortInUse):
        q.reserve(UDP, 4, None, 6000, reuse=True)


def test_ephemeral_without_remote_is_random() -> None:
    """RFC 6056 Algorithm 1 when there is no remote to hash."""
    ports = [pm(seed).reserve(UDP, 4, None, 0).port for seed in range(20)]
    assert all(32768 <= x <= 60999 for x in ports)
    assert len(set(ports)) == 20
    p = pm(7)
    seq = [p.reserve(UDP, 4, None, 0).port for _ in range(100)]
    assert len(set(seq)) == 100
    diffs = {(b - a) % SPAN for a, b in itertools.pairwise(seq)}
    assert len(diffs) > 50  # not a counter
    assert [pm(7).reserve(UDP, 4, None, 0).port for _ in range(1)] == seq[:1]  # reproducible


def test_ephemeral_with_remote_is_hash_plus_counter() -> None:
    """RFC 6056 Algorithm 3: port = first + (F(local, remote, secret) + counter) mod span."""
    a, b = pm(3), pm(3)  # same secret
    pa = a.reserve(UDP, 4, None, 0, remote=R1).port
    b.reserve(UDP, 4, None, 0, remote=R2)  # one more use of the global counter ...
    pb = b.reserve(UDP, 4, None, 0, remote=R1).port
    assert (pb - pa) % SPAN == 1  # ... is the only difference for the same remote
    # successive connections to one remote walk forward from the hash
    again = a.reserve(UDP, 4, None, 0, remote=R1).port
    assert (again - pa) % SPAN == 1
    # a different secret gives an unrelated port for the same remote
    others = {pm(seed).reserve(UDP, 4, None, 0, remote=R1).port for seed in range(10, 20)}
    assert len(others) == 10
    # different remotes start at unrelated places
    starts = {pm(3).reserve(UDP, 4, None, 0, remote=(ip(f"192.0.2.{i}"), 53)).port
              for i in range(1, 11)}
    assert len(starts) == 10


def test_ephemeral_skips_ports_in_use_and_is_free_veto() -> None:
    p = pm(4, 40000, 40009)
    taken = {p.reserve(UDP, 4, None, 0, remote=R1).port for _ in range(5)}
    assert len(taken) == 5
    vetoed: list[int] = []

    def is_free(port: int) -> bool:
        vetoed.append(port)
        return port % 2 == 0

    r = p.reserve(UDP, 4, None, 0, remote=R1, is_free=is_free)
    assert r.port % 2 == 0 and r.port not in taken
    assert all(port not in taken for port in vetoed)


def test_exhaustion_raises_address_not_available() -> None:
    p = pm(5, 40000, 40003)
    got = {p.reserve(UDP, 4, None, 0).port for _ in range(4)}
    assert got == {40000, 40001, 40002, 40003}
    with pytest.raises(errors.AddressNotAvailable):
        p.reserve(UDP, 4, None, 0)
    with pytest.raises(errors.AddressNotAvailable):
        p.reserve(UDP, 4, None, 0, remote=R1)
    assert p.reserve(TCP, 4, None, 0).port in got  # per protocol
    assert p.reserve(UDP, 6, None, 0).port in got  # per family


def test_stack_ephemeral_range_exhaustion() -> None:
    net = VirtualNetwork(seed=8)
    s = net.stack(ephemeral_ports=(40000, 40003))
    s.add_nic(link.pipe(seed=8)[0], ["198.18.0.1/24"])
    eps = [s.udp_endpoint(4) for _ in range(4)]
    ports = {ep.bind(None, 0)[1] for ep in eps}
    assert ports == {40000, 40001, 40002, 40003}
    extra = s.udp_endpoint(4)
    with pytest.raises(errors.AddressNotAvailable) as exc_info:
        extra.bind(None, 0)
    assert exc_info.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(errors.AddressNotAvailable):
        extra.connect("198.18.0.2", 53)
    with pytest.raises(errors.AddressNotAvailable):
        extra.sendto(b"x", ("198.18.0.2", 53))  # the implicit bind fails the same way
    eps[2].close()
    assert extra.bind(None, 0)[1] in ports
    # an explicit port outside the range is still fine
    explicit = s.udp_endpoint(4)
    assert explicit.bind(None, 5353)[1] == 5353


def test_ephemeral_ports_follow_rfc_6056_algorithm_3() -> None:
    """port = first + (F(local, remote, secret) + counter) mod span: per destination the offset is
    fixed, so two connects to one destination that are k connects apart get ports k apart,
    whatever other destinations came in between; other destinations start elsewhere."""
    p = PortManager(random.Random(5))
    span = p.last - p.first + 1
    dests = [(ip("10.0.0.2"), 80), (ip("10.0.0.3"), 80), (ip("10.0.0.2"), 443)]
    seen: dict[tuple[bytes, int], tuple[int, int]] = {}
    starts = set()
    for i in range(40):
        d = dests[(i * 7) % 3] if i % 5 else dests[0]
        r = p.reserve(TCP, 4, None, 0, remote=d)
        if d in seen:
            j, port = seen[d]
            assert (r.port - port) % span == i - j
        else:
            starts.add((r.port - i) % span)
        seen[d] = (i, r.port)
        p.release(r)
    assert len(starts) == 3


def test_shared_reservations_coexist_but_conflict_with_binds() -> None:
    """A connect's ephemeral port (``shared``) may be held by several connections (their
    4-tuples differ: the caller's ``is_free`` says so); it still conflicts with a bind."""
    p = pm(6, 40000, 40001)
    conns = [p.reserve(TCP, 4, None, 0, remote=(ip(f"192.0.2.{i}"), 80), shared=True)
             for i in range(1, 7)]
    assert {r.port for r in conns} == {40000, 40001}
    with pytest.raises(errors.PortInUse):
        p.reserve(TCP, 4, None, 40000)
    with pytest.raises(errors.PortInUse):
        p.reserve(TCP, 4, ip("10.0.0.1"), 40001, reuse=True)  # only one side asked for reuse
    # an unshared ephemeral reservation (a bind to port 0) finds both ports taken
    with pytest.raises(errors.AddressNotAvailable):
        p.reserve(TCP, 4, None, 0)
    # a listener's port is not shared with connections
    q = pm(6, 40000, 40000)
    q.reserve(TCP, 4, None, 40000)
    with pytest.raises(errors.AddressNotAvailable):
        q.reserve(TCP, 4, None, 0, remote=R1, shared=True)
    for r in conns:
        p.release(r)
    assert len(p) == 0
