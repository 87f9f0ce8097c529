"""The sans-IO stack: NICs, addresses, routes, demux, ports, timers and statistics.

``CoreStack`` never blocks and never reads the system clock: time comes from the injected
``clock``, randomness from ``rng``.  Its inputs are frames from links (``NIC.link_deliver``),
timer expiry (``poll``) and user calls on endpoints; its outputs are frames handed to links,
waiter-queue notifications, and the next deadline (``next_deadline``).  The asyncio ``Stack``
subclasses it and drives it from an event loop; ``embed`` drives it by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from mypy_extensions import mypyc_attr

from aionetstack.clock import Clock, RandomSource
from aionetstack.errors import (
    InvalidArgument,
    NoRoute,
    StackClosed,
)
from aionetstack.link.base import Link
from aionetstack.link.loopback import LoopbackLink
from aionetstack.network.arp import ArpProtocol
from aionetstack.network.forward import Forwarder
from aionetstack.network.icmp import IcmpEchoEndpoint, IcmpProtocol
from aionetstack.network.ipv4 import IPv4Protocol
from aionetstack.network.ipv6 import IPv6Protocol
from aionetstack.network.ndp import NdpProtocol
from aionetstack.network.packet import IcmpError, PacketInfo
from aionetstack.stack.addr import (
    AddressLike,
    is_link_local6,
    parse_interface,
    parse_network,
    prefix_mask,
    to_bytes,
    to_str,
)
from aionetstack.stack.limits import Limits
from aionetstack.stack.nic import NIC, NicAddress
from aionetstack.stack.ports import PortManager
from aionetstack.stack.route import Route, RouteEntry, RouteTable
from aionetstack.stack.routing import find_route, send_ip, update_pmtu
from aionetstack.stack.stats import Stats
from aionetstack.stack.timers import Timers
from aionetstack.wire.ipv6 import link_local_from_mac

if TYPE_CHECKING:
    from aionetstack.transport.tcp.protocol import TcpProtocol


class TransportProtocol(Protocol):
    """What the network layer hands transport segments to (UDP, TCP)."""

    def deliver(self, pkt: PacketInfo, segment: memoryview) -> None: ...

    def icmp_error(self, err: IcmpError) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # asyncio's Stack, and applications' own
class CoreStack:
    """A TCP/IP stack as a pure state machine.  See the module docstring."""

    def __init__(self, *, clock: Clock, rng: RandomSource, forwarding: bool = False,
                 default_ttl: int = 64, icmp_rate: float = 1000.0, icmp_burst: int = 50,
                 ephemeral_ports: tuple[int, int] = (32768, 60999),
                 loopback: bool = True, limits: Limits | None = None) -> None:
        self._clock = clock
        #: the stack's clock (seconds), the callable itself rather than a method that calls
        #: it: TCP reads it several times per segment
        self.now: Clock = clock
        self.limits = limits if limits is not None else Limits()
        self.rng = rng
        self.forwarding = forwarding
        self.default_ttl = default_ttl
        self.timers = Timers()
        self.stats_ = Stats()
        self.routes = RouteTable()
        self.ports = PortManager(rng, *ephemeral_ports)
        self.nics: dict[int, NIC] = {}
        self._next_nic_id = 1
        self._local: dict[bytes, NIC] = {}  # every local unicast address -> its NIC
        self.multicast_groups: set[bytes] = set()
        self.pmtu: dict[bytes, tuple[int, float]] = {}
        self.pmtu_expiry = 600.0
        self.closed = False
        self.transports: dict[int, TransportProtocol] = {}
        self.unreachable_listeners: list[Callable[[bytes], None]] = []
        self.arp = ArpProtocol(self)
        self.ndp = NdpProtocol(self)
        self.ipv4 = IPv4Protocol(self)
        self.ipv6 = IPv6Protocol(self)
        self.icmp = IcmpProtocol(self, rate=icmp_rate, burst=icmp_burst)
        self.forwarder = Forwarder(self)
        from aionetstack.transport.udp import UdpProtocol  # avoid an import cycle

        self.udp = UdpProtocol(self)
        self.transports[17] = self.udp
        from aionetstack.transport.tcp import install_tcp

        self.tcp: TcpProtocol = install_tcp(self)
        self.loopback: NIC | None = None
        if loopback:
            self.loopback = self.add_nic(LoopbackLink(), ["127.0.0.1/8", "::1/128"], name="lo",
                                         _loopback=True)

    # -- time ----------------------------------------------------------------------------
    def poll(self, now: float | None = None) -> float | None:
        """Run every timer due by ``now`` (default: the clock); return the next deadline."""
        self.timers.run_due(self._clock() if now is None else now)
        return self.timers.next_deadline()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # -- NICs and addresses ----------------------------------------------------------------
    def add_nic(self, link: Link, addresses: Iterable[str] = (), *, name: str | None = None,
                mtu: int | None = None, link_local: bool = True,
                _loopback: bool = False) -> NIC:
        """Attach ``link`` as a new NIC with ``addresses`` ("198.18.0.1/24", "fd00::1/64")."""
        if self.closed:
            raise StackClosed("the stack is closed")
        if isinstance(addresses, str):
            addresses = [addresses]
        nic_id = self._next_nic_id
        self._next_nic_id += 1
        nic = NIC(self, nic_id, name or f"{'lo' if _loopback else 'nic'}{nic_id}", link, mtu,
                  loopback=_loopback)
        if nic.mtu < 68:
            raise InvalidArgument(f"MTU {nic.mtu} is below the IPv4 minimum of 68")
        self.nics[nic_id] = nic
        link.attach(nic, lambda: self.now())  # (late-bound: an asyncio Stack takes its loop's)
        for spec in addresses:
            self.add_address(nic, spec)
        if nic.l2 and link_local and nic.mtu >= 1280:
            ll = link_local_from_mac(nic.mac)
            if not nic.has_address(ll):
                self.add_address(nic, f"{to_str(ll)}/64")
        return nic

    def _nic(self, nic: NIC | int | str | None) -> NIC | None:
        if nic is None or isinstance(nic, NIC):
            return nic
        for n in self.nics.values():
            if n.id == nic or n.name == nic:
                return n
        raise InvalidArgument(f"no such NIC: {nic!r}")

    def add_address(self, nic: NIC | int | str, spec: str) -> None:
        n = self._nic(nic)
        assert n is not None
        addr, prefixlen = parse_interface(spec)
        if len(addr) == 16 and n.mtu < 1280:
            raise InvalidArgument(f"IPv6 needs an MTU of at least 1280 (NIC {n.name}: {n.mtu})")
        if addr in self._local:
            raise InvalidArgument(f"address {to_str(addr)} is already assigned")
        n.addresses.append(NicAddress(addr, prefixlen))
        self._local[addr] = n
        full = 32 if len(addr) == 4 else 128
        if not n.loopback and prefixlen < full:
            net_int = int.from_bytes(addr, "big") & prefix_mask(len(addr), prefixlen)
            self.routes.add(RouteEntry(net_int.to_bytes(len(addr), "big"), prefixlen, n.id,
                                       source=addr, metric=256 if is_link_local6(addr) else 0))
        if len(addr) == 16 and not n.loopback:
            self.multicast_groups.add(self.ndp.solicited_node(addr))

    def remove_address(self, nic: NIC | int | str, spec: str) -> None:
        n = self._nic(nic)
        assert n is not None
        addr = to_bytes(spec.split("/")[0])
        n.addresses = [a for a in n.addresses if a.address != addr]
        self._local.pop(addr, None)
        self.routes.remove(lambda e: e.source == addr)

    def is_local(self, addr: bytes) -> bool:
        return addr in self._local

    def local_addresses(self) -> list[str]:
        return [to_str(a) for a in self._local]

    def add_route(self, destination: str, *, gateway: AddressLike | None = None,
                  nic: NIC | int | str | None = None, metric: int = 0,
                  mtu: int | None = None) -> None:
        """Add a route: ``add_route("0.0.0.0/0", gateway="198.18.0.254")``.

        Without ``nic`` the gateway must be reachable through an existing connected route.
        """
        if destination == "default":
            destination = "0.0.0.0/0"
        elif destination == "default6":
            destination = "::/0"
        net, prefixlen = parse_network(destination)
        gw = to_bytes(gateway) if gateway is not None else None
        if gw is not None and len(gw) != len(net):
            raise InvalidArgument("the gateway's family differs from the destination's")
        n = self._nic(nic)
        if n is None:
            if gw is None:
                raise InvalidArgument("a route needs a gateway or a NIC")
            entry = self.routes.lookup(gw)
            if entry is None or entry.gateway is not None:
                raise NoRoute(f"gateway {to_str(gw)} is not on a connected network")
            n = self.nics[entry.nic_id]
        self.routes.add(RouteEntry(net, prefixlen, n.id, gateway=gw, metric=metric, mtu=mtu))

    def add_neighbour(self, address: AddressLike, mac: bytes | str,
                      nic: NIC | int | str) -> None:
        from aionetstack.wire.ethernet import mac_aton

        n = self._nic(nic)
        assert n is not None
        ip = to_bytes(address)
        m = mac_aton(mac) if isinstance(mac, str) else mac
        cache = n.neigh4 if len(ip) == 4 else n.neigh6
        if cache is None:
            raise InvalidArgument(f"NIC {n.name} is not an L2 NIC")
        cache.add_static(ip, m)

    # -- routing ---------------------------------------------------------------------------
    def find_route(self, dst: bytes, src: bytes | None = None,
                   nic: NIC | int | str | None = None) -> Route:
        """Resolve the path to ``dst``.  Raises NoRoute / AddressNotAvailable.

        The compiled transports, ICMP and forwarding call ``stack.routing.find_route``
        directly, so overriding this method in a subclass does not change their routes."""
        return find_route(self, dst, src, nic)

    def set_transparent(self, nic: NIC | int | str, *, promiscuous: bool = True,
                        spoofing: bool = True, echo: bool = False) -> None:
        """Transparent mode for ``nic`` (what the forwarders need, as gVisor's
        ``SetPromiscuousMode``/``SetSpoofing``): accept packets addressed to *any* IP
        (``promiscuous``), send from any source address through it (``spoofing``), and answer
        ICMP echo requests to any address (``echo``).  Replies to the flows' sources still need
        routes, e.g. ``add_route("0.0.0.0/0", nic=nic)``.  A promiscuous NIC delivers instead of
        forwarding.  On an L2 NIC, ARP/NDP still answer only for the NIC's own addresses, so
        the peers must send to its MAC (via a gateway address it owns); a TUN needs nothing."""
        n = self._nic(nic)
        assert n is not None
        if n.loopback:
            raise InvalidArgument("the loopback NIC cannot be transparent")
        n.promiscuous = promiscuous
        n.spoofing = spoofing
        n.echo_any = echo and promiscuous

    def update_pmtu(self, dst: bytes, mtu: int) -> None:
        """Path MTU discovery (RFC 1191 / RFC 8201): remember a smaller MTU for ``dst``."""
        update_pmtu(self, dst, mtu)

    def send_ip(self, route: Route, buf: bytearray, l4_len: int, protocol: int, *,
                ttl: int | None = None, tos: int = 0, df: bool = False, gso: int = 0) -> None:
        """Send the transport segment at ``buf[route.headroom:]`` along ``route``
        (``stack.routing.send_ip``, which the compiled transports and ICMP call directly: an
        override of this method does not see their packets)."""
        send_ip(self, route, buf, l4_len, protocol, ttl=ttl, tos=tos, df=df, gso=gso)

    # -- errors from below -------------------------------------------------------------------
    def on_neighbour_unreachable(self, ip: bytes) -> None:
        for listener in list(self.unreachable_listeners):
            listener(ip)

    # -- endpoints ---------------------------------------------------------------------------
    def udp_endpoint(self, family: int = 4) -> Any:
        """A new, unbound UDP endpoint (``aionetstack.transport.udp.UdpEndpoint``)."""
        return self.udp.new_endpoint(family)

    def tcp_endpoint(self, family: int = 4) -> Any:
        """A new, unbound TCP endpoint (``aionetstack.transport.tcp.TcpEndpoint``)."""
        return self.tcp.new_endpoint(family)

    def icmp_echo_endpoint(self, family: int = 4) -> IcmpEchoEndpoint:
        return self.icmp.new_echo_endpoint(family)

    # -- introspection -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Nested counters: per protocol, then per NIC link statistics."""
        snap: dict[str, Any] = self.stats_.snapshot()
        frag = snap["fragment"]
        for v in (4, 6):  # the reassemblers' memory cap biting (Limits.reassembly_bytes)
            evicted = (self.ipv4 if v == 4 else self.ipv6).reassembler.stats().get("evicted", 0)
            if evicted:
                frag[f"evicted.ipv{v}"] = evicted
        snap["nics"] = {n.name: n.link.stats() for n in self.nics.values()}
        return snap

    def describe(self) -> dict[str, Any]:
        return {
            "nics": [n.describe() for n in self.nics.values()],
            "routes": [e.describe() for e in self.routes],
        }

    def close(self) -> None:
        if self.closed:
            return
        for fwd in (self.tcp.forwarder, self.udp.forwarder):
            if fwd is not None:
                fwd.close()  # pending requests refused, flows ended: no waiter left hanging
        self.tcp.close_all()
        self.udp.close_all()
        self.icmp.close_all()
        for n in self.nics.values():
            n.close()
        self.closed = True
