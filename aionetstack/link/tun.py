"""TUN (L3) and TAP (L2) devices over ``/dev/net/tun``.

``Tun(name)`` attaches to an existing device (persistent, or created by another process);
``Tun.create(name, peer_address=..., netns=...)`` creates one, optionally inside a network
namespace, and configures the kernel side (addresses, MTU, up) through pyroute2 netlink.
The fd is opened in the target namespace, so the device is born there; the fd works from any
namespace afterwards.  Devices created here are not persistent: closing the link removes them.

Offloads (IFF_VNET_HDR, TUNSETOFFLOAD) are not negotiated yet: ``offload`` is accepted for the
public signature, and ``caps`` honestly reports no checksum/segmentation offload.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aionetstack.errors import InvalidArgument, NetstackError, NotSupported
from aionetstack.link.base import LinkCaps
from aionetstack.link.fd import FdLink

T = TypeVar("T")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFNAMSIZ = 16


class DeviceError(NetstackError):
    """The TUN/TAP device could not be opened or configured."""


@contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    if netns is None:
        yield
        return
    from pyroute2 import netns as nsmod

    nsmod.pushns(netns)
    try:
        yield
    finally:
        nsmod.popns()


def _open_tun(name: str, flags: int, netns: str | None) -> int:
    if len(name.encode()) >= IFNAMSIZ or not name:
        raise InvalidArgument(f"bad interface name {name!r} (1-15 bytes)")
    if not os.path.exists("/dev/net/tun"):
        raise DeviceError("/dev/net/tun does not exist (no TUN/TAP support on this machine)")
    with _in_netns(netns):
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            raise DeviceError("permission denied opening /dev/net/tun (run as root or "
                              "give the process CAP_NET_ADMIN)") from None
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError as exc:
            os.close(fd)
            if exc.errno == 16:  # EBUSY
                raise DeviceError(f"device {name} is busy (attached elsewhere)") from None
            if exc.errno == 1:  # EPERM
                raise DeviceError(f"not permitted to attach {name} (needs CAP_NET_ADMIN)"
                                  ) from None
            raise DeviceError(f"cannot attach {name}: {exc.strerror}") from None
    return fd


def run_netlink(fn: Callable[[], T]) -> T:
    """Run a pyroute2 call.  pyroute2 >= 0.9 drives its own asyncio loop internally, so from
    inside a running loop the call is made on a worker thread (and waited for)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=work, name="aionetstack-netlink")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def configure_kernel_side(name: str, *, addresses: Iterable[str] = (), mtu: int | None = None,
                          netns: str | None = None, up: bool = True) -> None:
    """Give the kernel's end of device ``name`` addresses, an MTU and bring it up (pyroute2)."""
    run_netlink(lambda: _configure(name, list(addresses), mtu, netns, up))


def _configure(name: str, addresses: list[str], mtu: int | None, netns: str | None,
               up: bool) -> None:
    from pyroute2 import IPRoute, NetNS

    ipr: Any = NetNS(netns) if netns else IPRoute()
    try:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise DeviceError(f"no device named {name}")
        index = idx[0]
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        for spec in addresses:
            addr, _, plen = spec.partition("/")
            v6 = ":" in addr
            extra: dict[str, Any] = {"flags": 0x02} if v6 else {}  # IFA_F_NODAD: usable now
            ipr.addr("add", index=index, address=addr,
                     prefixlen=int(plen) if plen else (128 if v6 else 32), **extra)
        if up:
            ipr.link("set", index=index, state="up")
    finally:
        ipr.close()


class _TunTapBase(FdLink):
    _kind_flag = IFF_TUN
    _l2 = False

    def __init__(self, name: str, *, offload: bool = True, queues: int = 1, mtu: int = 1500,
                 netns: str | None = None, mac: bytes | None = None, batch: int = 64) -> None:
        if queues < 1:
            raise InvalidArgument("queues must be >= 1")
        flags = self._kind_flag | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)
        fd = _open_tun(name, flags, netns)
        self.device = name
        self.netns = netns
        self.offload_requested = offload
        if self._l2 and mac is None:
            mac = bytes([0x02]) + os.urandom(5)
        caps = LinkCaps(mtu=mtu, l2=self._l2, mac=mac)
        super().__init__(fd, caps, name=name, batch=batch)

    @classmethod
    def create(cls, name: str, *, peer_address: str | Iterable[str] = (), mtu: int = 1500,
               netns: str | None = None, **options: Any) -> Any:
        """Create the device (in ``netns`` if given) and configure the kernel side."""
        link = cls(name, mtu=mtu, netns=netns, **options)
        try:
            configure_kernel_side(name, addresses=[peer_address] if isinstance(
                peer_address, str) else list(peer_address), mtu=mtu, netns=netns)
        except Exception:
            link.close()
            raise
        return link


class Tun(_TunTapBase):
    """An L3 TUN device: the stack exchanges bare IPv4/IPv6 packets with the kernel."""

    _kind_flag = IFF_TUN
    _l2 = False


class Tap(_TunTapBase):
    """An L2 TAP device: Ethernet frames; the stack resolves the kernel with ARP/NDP."""

    _kind_flag = IFF_TAP
    _l2 = True


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotSupported("this needs root (CAP_NET_ADMIN) to create devices")
