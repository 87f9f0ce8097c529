"""A link carried over the OS network in UDP datagrams: the overlay / VPN case.

Theory of operation
-------------------
Each frame (a bare IP packet, or an Ethernet frame with ``l2=True``) travels as the payload of
exactly one UDP datagram between ``local`` and ``remote`` over an ordinary kernel UDP socket, so
two stacks in different processes or on different hosts share a virtual wire (the way the
ZeroTier SDK or a WireGuard-style overlay carries its inner traffic; there is no encryption or
authentication here).  The socket is ``connect``-ed to the remote endpoint: writes need no
address and the kernel discards datagrams from anyone else.  ``remote=None`` leaves it
unconnected until ``connect(remote)``, which is how two ends on ephemeral ports are joined.

Frames go out with the inner transport checksums filled (the far end may be any stack), and
inbound frames are verified by the stack.  ``mtu`` (default 1400) is the inner MTU: keep the
inner packet plus 28/48 bytes of UDP/IP (plus 14 in L2 mode) under the path MTU of the underlay,
or the kernel fragments the carrier datagrams.  An ICMP error for a datagram (nobody listening
yet at ``remote``) surfaces as ``ECONNREFUSED`` on the next read or write and only bumps an error
counter: the tunnel keeps running, so either end may start first.
"""

from __future__ import annotations

import errno
import os
import socket

from aionetstack.link.base import LinkCaps
from aionetstack.link.fd import FdLink, TxItem

Address = tuple[str, int]


class UdpTunnel(FdLink):
    """Frames over UDP between ``local`` and ``remote`` (host, port) endpoints."""

    def __init__(self, local: Address = ("0.0.0.0", 0), remote: Address | None = None, *,
                 l2: bool = False, mtu: int = 1400, mac: bytes | None = None,
                 batch: int = 64) -> None:
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(local)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.local_address: Address = sock.getsockname()[:2]
        self.remote_address: Address | None = None
        if l2 and mac is None:
            mac = bytes([0x02]) + os.urandom(5)
        caps = LinkCaps(mtu=mtu, l2=l2, mac=mac if l2 else None)
        super().__init__(sock.fileno(), caps, name=f"udp:{self.local_address[1]}",
                         owns_fd=False, batch=batch, read_size=65536)
        self._stats["tx_not_connected"] = 0
        if remote is not None:
            self.connect(remote)

    def connect(self, remote: Address) -> None:
        """Set (or change) the far end of the tunnel."""
        self._sock.connect(remote)
        self.remote_address = remote

    def _write(self, item: TxItem) -> None:
        try:
            super()._write(item)
        except OSError as exc:
            if exc.errno == errno.EDESTADDRREQ:
                self._stats["tx_not_connected"] += 1
                return
            if exc.errno == errno.ECONNREFUSED:  # a stale ICMP error from an earlier datagram
                super()._write(item)
                return
            raise

    def _read(self, fd: int, size: int) -> bytes | None:
        try:
            return self._sock.recv(size)
        except ConnectionRefusedError:
            self._stats["rx_errors"] += 1
            return None

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock.close()
