"""``CoreStack.stats()`` / ``describe()``: plain nested dicts that serialise as JSON."""

from __future__ import annotations

import json
from typing import Any

from aionetstack import link
from aionetstack.stack.stats import PROTOCOLS
from aionetstack.testing import VirtualNetwork


def _walk(d: dict[str, Any], path: str = "") -> None:
    assert type(d) is dict, f"{path} is {type(d).__name__}, not a plain dict"
    for k, v in d.items():
        assert type(k) is str
        if isinstance(v, dict):
            _walk(v, f"{path}.{k}")
        else:
            assert type(v) is int, f"{path}.{k} = {v!r}"


def test_stats_are_plain_json() -> None:
    net = VirtualNetwork(seed=61)
    a, b = net.stack(), net.stack()
    ea, eb = link.pipe(l2=True, seed=61, loss=0.2)
    a.add_nic(ea, ["198.18.0.1/24", "fd00::1/64"])
    b.add_nic(eb, ["198.18.0.2/24", "fd00::2/64"])
    ep = a.icmp_echo_endpoint(4)
    for i in range(10):
        ep.send(bytes([198, 18, 0, 2]), i)
    u = a.udp_endpoint(6)
    u.sendto(b"x" * 3000, ("fd00::2", 9))
    net.run(duration=10)
    st = a.stats()
    _walk(st)
    assert set(st) == set(PROTOCOLS) | {"nics"}
    assert set(st["nics"]) == {"lo", "nic2"}
    text = json.dumps(st)
    assert json.loads(text) == st
    assert st["icmpv4"]["echo-request-sent"] == 10
    assert st["nics"]["nic2"]["dropped_loss"] > 0
    # a snapshot, not a live view
    st["udp"]["sent"] = 999
    assert a.stats()["udp"]["sent"] == 1
    # the drop accounting invariant: dropped == sum of dropped.<reason>, same for malformed
    for s in (a, b):
        for proto, counters in s.stats().items():
            if proto == "nics":
                continue
            for total in ("dropped", "malformed"):
                parts = sum(v for k, v in counters.items() if k.startswith(total + "."))
                assert counters.get(total, 0) == parts, (proto, counters)
    d = a.describe()
    assert json.loads(json.dumps(d)) == d
    assert [n["name"] for n in d["nics"]] == ["lo", "nic2"]
    assert {"destination": "198.18.0.0/24", "gateway": None, "nic": 2, "metric": 0} in d["routes"]
