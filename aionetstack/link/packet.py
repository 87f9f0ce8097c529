"""An AF_PACKET link: the stack as one more host on an existing Ethernet segment.

Theory of operation
-------------------
``Packet(ifname)`` opens an ``AF_PACKET``/``SOCK_RAW`` socket for ``ETH_P_ALL`` bound to an
existing interface (one end of a veth pair, a bridge port, a real NIC) and exchanges whole
Ethernet frames through it (packet(7)).  By default the stack takes a random locally
administered MAC and the interface is put in promiscuous mode (``PACKET_ADD_MEMBERSHIP`` with
``PACKET_MR_PROMISC``, undone automatically when the socket closes), so frames addressed to the
stack's MAC reach us; the NIC's MAC filter drops the rest.  The kernel's own IP configuration of
the interface is unaffected: to the kernel, the stack is a different host on the wire.
(``use_interface_mac=True`` shares the interface's MAC instead; then the kernel also answers
frames meant for the stack, e.g. with TCP resets, unless it is told to ignore them.)

Frames the kernel transmits on the interface are looped back to packet sockets with
``sll_pkttype == PACKET_OUTGOING``; we ask the kernel not to (``PACKET_IGNORE_OUTGOING``, Linux
4.20) and also drop any that still arrive (``recvfrom`` reports the pkttype).  Our own frames are
never looped back to the socket that sent them.

Offloads (``offload=True``): ``PACKET_VNET_HDR`` puts a ``virtio_net_hdr`` before every frame (see
``aionetstack.link.vnet``).  Inbound that tells us which frames carry a partial checksum (a frame
from a local veth peer is often ``CHECKSUM_PARTIAL``: without the header it would look corrupt):
those are completed in software, and everything else is verified by the stack as usual (frames
from a real wire are not trusted).  GSO super-frames from the peer are delivered whole (TCP) or
split (UDP).  Outbound the kernel finishes partial checksums (``tx_checksum_offload``) and
segments TSO/USO frames passed to ``send_gso``.

Without offloads (``offload=False``) the socket asks for ``PACKET_AUXDATA`` instead: its
``tp_status`` has ``TP_STATUS_CSUMNOTREADY`` on frames whose checksum is partial, and those are
completed in software (the checksum field holds the pseudo-header sum) before delivery.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, Final

from aionetstack.errors import InvalidArgument
from aionetstack.link.base import LinkCaps
from aionetstack.link.fd import VnetFdLink
from aionetstack.link.tun import DeviceError, _in_netns, run_netlink
from aionetstack.link.vnet import (
    TCP_CSUM_OFFSET,
    UDP_CSUM_OFFSET,
    VnetCodec,
    complete_checksum,
    l3_offset_of,
    locate_l4,
)
from aionetstack.wire.checksum import PROTO_TCP, PROTO_UDP

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_MR_PROMISC: Final = 1
PACKET_VNET_HDR: Final = 15
PACKET_IGNORE_OUTGOING: Final = 23
PACKET_AUXDATA: Final = 8
PACKET_OUTGOING: Final = 4
TP_STATUS_CSUMNOTREADY: Final = 0x08
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size)


def _interface_info(ifname: str, netns: str | None) -> tuple[int, int, bytes]:
    """(ifindex, mtu, mac) of ``ifname`` through pyroute2."""

    def work() -> tuple[int, int, bytes]:
        from pyroute2 import IPRoute, NetNS

        ipr: Any = NetNS(netns) if netns else IPRoute()
        try:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise DeviceError(f"no interface named {ifname}")
            msg = ipr.get_links(idx[0])[0]
            mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
            return idx[0], int(msg.get_attr("IFLA_MTU")), bytes.fromhex(mac.replace(":", ""))
        finally:
            ipr.close()

    return run_netlink(work)


def _complete(data: bytes) -> bytes:
    """Finish the partial TCP/UDP checksum of an Ethernet frame (TP_STATUS_CSUMNOTREADY)."""
    l3 = l3_offset_of(data, True)
    info = None if l3 is None else locate_l4(data, l3)
    if info is None or info.protocol not in (PROTO_TCP, PROTO_UDP):
        return data
    buf = bytearray(data)
    try:
        complete_checksum(buf, info.l4, TCP_CSUM_OFFSET if info.protocol == PROTO_TCP
                          else UDP_CSUM_OFFSET)
    except ValueError:  # truncated: let the stack count it as malformed
        return data
    return bytes(buf)


class Packet(VnetFdLink):
    """An L2 link over an AF_PACKET socket bound to interface ``ifname``."""

    _l2 = True

    def __init__(self, ifname: str, *, netns: str | None = None, mac: bytes | None = None,
                 use_interface_mac: bool = False, promisc: bool = True, offload: bool = True,
                 mtu: int | None = None, batch: int = 64) -> None:
        if mac is not None and len(mac) != 6:
            raise InvalidArgument("mac must be 6 bytes")
        index, if_mtu, if_mac = _interface_info(ifname, netns)
        if use_interface_mac:
            mac = if_mac
        elif mac is None:
            mac = bytes([0x02]) + os.urandom(5)
        with _in_netns(netns):
            try:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            except PermissionError:
                raise DeviceError("AF_PACKET sockets need CAP_NET_RAW") from None
        try:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # before Linux 4.20: filtered by pkttype in _read
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR if offload else PACKET_AUXDATA, 1)
            sock.bind((ifname, ETH_P_ALL))
            if promisc:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
        except OSError as exc:
            sock.close()
            raise DeviceError(f"cannot bind a packet socket to {ifname}: {exc.strerror}"
                              ) from None
        self._sock = sock
        self.interface = ifname
        self.ifindex = index
        self.netns = netns
        self._vnet = VnetCodec(l2=True, csum=True, tso=True, uso=True,
                               complete_rx=True) if offload else None
        caps = LinkCaps(mtu=mtu or if_mtu, l2=True, mac=mac, tx_checksum_offload=offload,
                        rx_checksum_trusted=False, gso_max_size=65535 if offload else 0)
        super().__init__(sock.fileno(), caps, name=ifname, owns_fd=False, batch=batch,
                         read_size=65536 + 128)
        if not offload:
            self._stats["rx_csum_completed"] = 0

    def _read(self, fd: int, size: int) -> bytes | None:
        if self._vnet is not None:
            data, addr = self._sock.recvfrom(size)
            return None if addr[2] == PACKET_OUTGOING else data
        data, ancdata, _flags, addr = self._sock.recvmsg(size, _CMSG_SPACE)
        if addr[2] == PACKET_OUTGOING:
            return None
        for level, kind, value in ancdata:
            if (level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= _AUXDATA.size
                    and _AUXDATA.unpack_from(value)[0] & TP_STATUS_CSUMNOTREADY):
                self._stats["rx_csum_completed"] += 1
                return _complete(data)
        return data

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock.close()

