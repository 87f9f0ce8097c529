"""What the layers above call on the stack for every packet: route lookup, IP output, path MTU.

Functions of the stack rather than only its methods: the stack is usually asyncio's ``Stack``, an
interpreted subclass of the compiled ``CoreStack``, and mypyc makes every method call on such
an instance a Python-level lookup ("glue").  The compiled transports and ICMP call these
directly; ``CoreStack``'s methods of the same names call them too.  (Their own module, so that
``network/icmp.py``, which ``stack.py`` imports, can import them without a cycle.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.errors import AddressNotAvailable, NoRoute, StackClosed
from aionetstack.stack.addr import LOOPBACK6, is_link_local6, same_prefix, to_str
from aionetstack.stack.nic import NIC
from aionetstack.stack.route import Route, RouteEntry

if TYPE_CHECKING:
    from aionetstack.stack.stack import CoreStack


def send_ip(stack: CoreStack, route: Route, buf: bytearray, l4_len: int, protocol: int, *,
            ttl: int | None = None, tos: int = 0, df: bool = False, gso: int = 0) -> None:
    """Send the transport segment at ``buf[route.headroom:]`` along ``route``.

    ``gso`` > 0 marks a TCP super-segment larger than the route MTU (up to 64 KiB) that the
    NIC's link cuts into ``gso``-byte payloads (``Link.send_gso``)."""
    if route.family == 4:
        stack.ipv4.send(route, buf, l4_len, protocol, ttl=ttl, tos=tos, df=df, gso=gso)
    else:
        stack.ipv6.send(route, buf, l4_len, protocol, hop_limit=ttl, traffic_class=tos, gso=gso)


def find_route(stack: CoreStack, dst: bytes, src: bytes | None = None,
               nic: NIC | int | str | None = None) -> Route:
    """Resolve the path to ``dst``.  Raises NoRoute / AddressNotAvailable."""
    if stack.closed:
        raise StackClosed("the stack is closed")
    v4 = len(dst) == 4
    family = 4 if v4 else 6
    spoof = False
    if src is not None:
        if not any(src):
            src = None
        else:
            spoof = src not in stack._local
    out = nic if nic is None or isinstance(nic, NIC) else stack._nic(nic)
    local_nic = stack._local.get(dst)
    if local_nic is not None and stack.loopback is not None and (
            out is None or out is local_nic or out is stack.loopback):
        return Route(family, src or dst, dst, dst, stack.loopback, stack.loopback.mtu)
    if spoof and not _may_spoof(stack, src, dst):
        raise AddressNotAvailable(f"{to_str(src or dst)} is not a local address")
    d0 = dst[0]
    # RFC 1122 §3.2.1.3(g): a loopback address is never on a wire, whatever the routes say
    if (d0 == 127) if v4 else dst == LOOPBACK6:
        raise NoRoute(f"loopback address {to_str(dst)} is not assigned to this stack")
    if ((d0 & 0xF0) == 0xE0 or dst == b"\xff\xff\xff\xff") if v4 else d0 == 0xFF:
        if spoof:
            raise AddressNotAvailable(f"{to_str(src or dst)} is not a local address")
        n = out or (stack.nics.get(stack._local[src].id) if src else None)
        if n is None:
            entry = stack.routes.lookup(dst)
            if entry is None:
                n = next((x for x in stack.nics.values() if not x.loopback
                          and any(a.family == family for a in x.addresses)), None)
            else:
                n = stack.nics[entry.nic_id]
        if n is None:
            raise NoRoute(f"no interface for {to_str(dst)}")
        local = src or n.primary(family)
        if local is None:
            raise AddressNotAvailable(f"NIC {n.name} has no IPv{family} address")
        return Route(family, local, dst, dst, n, n.mtu)
    if out is None and not v4 and is_link_local6(dst):
        # a link-local destination needs a scope; take the first L2 NIC with a link-local
        out = next((x for x in stack.nics.values() if not x.loopback and any(
            is_link_local6(a.address) for a in x.addresses)), None)
        if out is None:
            raise NoRoute(f"no link for {to_str(dst)}")
        entry = RouteEntry(dst, 128, out.id)
    else:
        entry = stack.routes.lookup(dst, out.id if out else None)
    if entry is None:
        raise NoRoute(f"no route to {to_str(dst)}")
    n = stack.nics[entry.nic_id]
    if spoof and not n.spoofing:
        raise AddressNotAvailable(f"{to_str(src or dst)} is not a local address and NIC "
                                  f"{n.name} does not allow spoofing")
    local = src
    if local is None and entry.source is not None and same_prefix(
            entry.source, dst, entry.prefixlen):
        local = entry.source
    if local is None:
        local = n.primary(family, dst) or _any_local(stack, family)
    if local is None:
        raise AddressNotAvailable(f"no IPv{family} source address for {to_str(dst)}")
    mtu = entry.mtu or n.mtu
    p = stack.pmtu.get(dst)
    if p is not None:
        if p[1] > stack.now():
            mtu = min(mtu, p[0])
        else:
            del stack.pmtu[dst]
    return Route(family, local, dst, entry.gateway or dst, n, mtu)


def _may_spoof(stack: CoreStack, src: bytes | None, dst: bytes) -> bool:
    return src is not None and len(src) == len(dst) and any(
        n.spoofing for n in stack.nics.values())


def _any_local(stack: CoreStack, family: int) -> bytes | None:
    for addr, n in stack._local.items():
        if len(addr) == (4 if family == 4 else 16) and not n.loopback:
            return addr
    return None


def update_pmtu(stack: CoreStack, dst: bytes, mtu: int) -> None:
    """Path MTU discovery (RFC 1191 / RFC 8201): remember a smaller MTU for ``dst``."""
    floor = 68 if len(dst) == 4 else 1280
    mtu = max(mtu, floor)
    cur = stack.pmtu.get(dst)
    if cur is None or mtu < cur[0]:
        if len(stack.pmtu) > 4096:
            stack.pmtu.clear()
        stack.pmtu[dst] = (mtu, stack.now() + stack.pmtu_expiry)
