"""A client stack and a transparent "gateway" stack on an in-memory pipe, on virtual time.

The gateway's NIC has no address at all: it is promiscuous and may spoof, so it answers for any
destination the client routes to it (the client's default routes point at the pipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aionetstack.errors import ConnectStarted
from aionetstack.link.pipe import pipe
from aionetstack.stack.addr import to_bytes
from aionetstack.stack.nic import NIC
from aionetstack.stack.stack import CoreStack
from aionetstack.testing import VirtualNetwork
from aionetstack.transport.tcp import TcpEndpoint

CLIENT4, CLIENT6 = "198.18.0.1", "fd00:18::1"


@dataclass
class Net:
    net: VirtualNetwork
    cli: CoreStack
    gw: CoreStack
    gnic: NIC

    def run(self, until: object = None, timeout: float = 30.0) -> bool:
        if until is None:
            return self.net.run(timeout)
        return self.net.run(until=until, timeout=timeout)  # type: ignore[arg-type]

    def connect(self, dst: str, port: int) -> TcpEndpoint:
        ep = self.cli.tcp_endpoint(6 if ":" in dst else 4)
        with pytest.raises(ConnectStarted):
            ep.connect(dst, port)
        return ep


def make_net(*, transparent: bool = True, echo: bool = False, seed: int = 1) -> Net:
    net = VirtualNetwork(seed=seed)
    cli, gw = net.stack(), net.stack()
    ec, eg = pipe(seed=seed, delay=0.001)
    cnic = cli.add_nic(ec, [f"{CLIENT4}/24", f"{CLIENT6}/64"])
    cli.add_route("0.0.0.0/0", nic=cnic)
    cli.add_route("::/0", nic=cnic)
    gnic = gw.add_nic(eg, [])
    if transparent:
        gw.set_transparent(gnic, echo=echo)
    gw.add_route("0.0.0.0/0", nic=gnic)
    gw.add_route("::/0", nic=gnic)
    return Net(net, cli, gw, gnic)


def b(addr: str) -> bytes:
    return to_bytes(addr)
