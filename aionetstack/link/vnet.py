"""virtio_net_hdr offloads: the metadata the kernel exchanges with TUN/TAP and packet sockets.

Theory of operation
-------------------
With ``IFF_VNET_HDR`` on a TUN/TAP fd (or ``PACKET_VNET_HDR`` on an AF_PACKET socket) every frame
read or written is preceded by a ``struct virtio_net_hdr`` (virtio spec §5.1.6, Linux
``include/uapi/linux/virtio_net.h``)::

    u8  flags        NEEDS_CSUM (1): the transport checksum is partial; DATA_VALID (2): verified
    u8  gso_type     NONE 0, TCPV4 1, UDP 3 (UFO), TCPV6 4, UDP_L4 5 (USO); | ECN 0x80
    u16 hdr_len      length of all headers (link + IP + transport) in a GSO frame
    u16 gso_size     payload bytes per segment (the MSS for TCP, the datagram size for UDP_L4)
    u16 csum_start   offset (from the frame start) where checksumming starts: the L4 header
    u16 csum_offset  where, from csum_start, the checksum is stored (TCP 16, UDP 6)

We use the 10-byte header (``TUNSETVNETHDRSZ`` 10, no ``num_buffers``), in host byte order (legacy
virtio; ``TUNSETVNETLE`` is not used, so this is native order on every host we care about).

*Partial checksums.*  ``NEEDS_CSUM`` means: the checksum field holds the (non-complemented)
pseudo-header sum; whoever finishes the job sums ``frame[csum_start:]`` and stores the complement
at ``csum_start + csum_offset`` (that is exactly what ``complete_checksum`` does).  Outbound,
``VnetCodec.tx_header`` writes the pseudo-header sum itself and sets ``NEEDS_CSUM``, so the stack
may leave TCP/UDP checksums empty (``LinkCaps.tx_checksum_offload``) and any value the stack did
put there is simply overwritten.

``DATA_VALID`` (or no flag at all) means the checksum is complete; a link that reports
``rx_checksum_trusted`` (TUN/TAP with offloads: every frame comes from the local kernel) passes
everything on as is, partial checksums included; an untrusted link (a packet socket on a real
wire) completes partial checksums so that the stack's verification sees whole ones.

*Segmentation.*  A GSO frame is one IP packet up to 64 KiB whose payload the kernel cuts into
``gso_size`` pieces (fixing lengths, IDs, sequence numbers, flags and checksums).  Inbound TCP
super-segments are handed to the stack whole (the TCP engine takes any segment size); inbound USO
(UDP_L4) super-datagrams are split here (``segment``), because each piece is a datagram of its
own.  Outbound, ``VnetCodec.tx_header(frame, gso_size=n)`` describes a large TCP or UDP packet to
the kernel; when the device refused TSO/USO, the link falls back to ``segment`` in software.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from aionetstack.errors import InvalidArgument
from aionetstack.wire.checksum import (
    PROTO_TCP,
    PROTO_UDP,
    checksum,
    finish,
    ones_sum,
    piece_sums,
    pseudo_header_sum,
)
from aionetstack.wire.errors import MalformedPacket

_from_bytes = int.from_bytes

Frame = bytes | bytearray | memoryview

VIRTIO_NET_HDR_LEN: Final = 10  # struct virtio_net_hdr (without num_buffers)
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_UDP: Final = 3
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_UDP_L4: Final = 5
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80

ETH_HLEN: Final = 14
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
TCP_CSUM_OFFSET: Final = 16
UDP_CSUM_OFFSET: Final = 6
TCP_FLAG_FIN: Final = 0x01
TCP_FLAG_PSH: Final = 0x08
TCP_FLAG_CWR: Final = 0x80
# IPv6 extension headers walked to find the transport header (RFC 8200 §4): hop-by-hop,
# routing, destination options.  A fragment header (44) ends the walk: no offload for fragments.
_IPV6_EXT: Final = frozenset({0, 43, 60})

_HDR = struct.Struct("=BBHHHH")
_PACK_SEQ = struct.Struct("!I").pack_into
_PACK_U16 = struct.Struct("!H")
_PACK_LEN_ID = struct.Struct("!HH")  # IPv4 total length, identification
NO_OFFLOAD: Final = bytes(VIRTIO_NET_HDR_LEN)


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return _HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                         self.csum_start, self.csum_offset)

    @classmethod
    def unpack(cls, buf: Frame) -> VnetHeader:
        if len(buf) < VIRTIO_NET_HDR_LEN:
            raise MalformedPacket("truncated", f"virtio_net_hdr of {len(buf)} bytes")
        return cls(*_HDR.unpack_from(buf))


@dataclass(frozen=True, slots=True)
class L4Info:
    """Where the transport header of an (unfragmented) IP packet is."""

    version: int
    protocol: int
    l4: int  # offset of the transport header in the frame
    end: int  # offset one past the IP packet's last byte
    src: bytes
    dst: bytes


def locate_l4(frame: Frame, l3: int) -> L4Info | None:
    """Find the transport header of the IP packet at ``frame[l3:]``; None for fragments,
    unknown versions and truncated packets."""
    n = len(frame)
    if n < l3 + 20:
        return None
    v = frame[l3] >> 4
    if v == 4:
        ihl = (frame[l3] & 0x0F) * 4
        total = (frame[l3 + 2] << 8) | frame[l3 + 3]
        frag = ((frame[l3 + 6] << 8) | frame[l3 + 7]) & 0x3FFF  # MF + offset
        if ihl < 20 or frag or total < ihl or l3 + total > n:
            return None
        return L4Info(4, frame[l3 + 9], l3 + ihl, l3 + total, bytes(frame[l3 + 12:l3 + 16]),
                      bytes(frame[l3 + 16:l3 + 20]))
    if v == 6:
        if n < l3 + 40:
            return None
        end = l3 + 40 + ((frame[l3 + 4] << 8) | frame[l3 + 5])
        if end > n:
            return None
        nh = frame[l3 + 6]
        off = l3 + 40
        while nh in _IPV6_EXT:
            if off + 8 > end:
                return None
            nh, off = frame[off], off + (frame[off + 1] + 1) * 8
        return L4Info(6, nh, off, end, bytes(frame[l3 + 8:l3 + 24]),
                      bytes(frame[l3 + 24:l3 + 40]))
    return None


def l3_offset_of(frame: Frame, l2: bool) -> int | None:
    """0 on an L3 link; 14 for Ethernet frames carrying IPv4/IPv6; None for anything else."""
    if not l2:
        return 0
    if len(frame) < ETH_HLEN:
        return None
    et = (frame[12] << 8) | frame[13]
    return ETH_HLEN if et in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else None


def complete_checksum(frame: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a NEEDS_CSUM checksum in place: the field holds the pseudo-header sum."""
    at = csum_start + csum_offset
    if at + 2 > len(frame):
        raise MalformedPacket("bad-csum-offset", f"checksum at {at} beyond {len(frame)}")
    value = ~ones_sum(frame[csum_start:]) & 0xFFFF
    frame[at] = value >> 8
    frame[at + 1] = value & 0xFF


def _put16(buf: bytearray | memoryview, at: int, value: int) -> None:
    buf[at] = (value >> 8) & 0xFF
    buf[at + 1] = value & 0xFF


def _fill_l4_checksum(seg: bytearray, info: L4Info, l4_len: int) -> None:
    at = info.l4 + (TCP_CSUM_OFFSET if info.protocol == PROTO_TCP else UDP_CSUM_OFFSET)
    _put16(seg, at, 0)
    c = checksum(memoryview(seg)[info.l4:info.l4 + l4_len],
                 pseudo_header_sum(info.src, info.dst, info.protocol, l4_len))
    if c == 0 and info.protocol == PROTO_UDP:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _put16(seg, at, c)


def segment(frame: Frame, l3: int, gso_size: int, fill_checksums: bool = True
            ) -> list[bytearray]:
    """Software GSO: cut the TCP or UDP packet at ``frame[l3:]`` into packets carrying at most
    ``gso_size`` payload bytes each, with complete, valid headers and checksums
    (``fill_checksums=False``: TCP checksums are left for a link with checksum offload).

    TCP pieces get consecutive sequence numbers; FIN and PSH stay on the last piece and CWR on
    the first (as the kernel's ``tcp_gso_segment``).  UDP pieces (USO) are datagrams of their
    own, each with its own length.  IPv4 pieces get consecutive IDs and fresh header checksums.
    """
    if gso_size <= 0:
        raise InvalidArgument("gso_size must be positive")
    info = locate_l4(frame, l3)
    if info is None or info.protocol not in (PROTO_TCP, PROTO_UDP):
        raise InvalidArgument("segmentation needs an unfragmented TCP or UDP packet")
    if info.protocol == PROTO_TCP:
        if info.l4 + 20 > info.end:
            raise MalformedPacket("truncated", "TCP header")
        hlen = info.l4 + (frame[info.l4 + 12] >> 4) * 4
    else:
        hlen = info.l4 + 8
    if hlen > info.end:
        raise MalformedPacket("truncated", "transport header")
    if info.protocol == PROTO_TCP:
        return _segment_tcp(frame, l3, info, hlen, gso_size, fill_checksums)
    headers = bytes(frame[:hlen])
    payload = memoryview(frame)[hlen:info.end]
    count = max(1, -(-len(payload) // gso_size))
    out: list[bytearray] = []
    tcp = info.protocol == PROTO_TCP
    seq = int.from_bytes(headers[info.l4 + 4:info.l4 + 8], "big") if tcp else 0
    tcp_flags = headers[info.l4 + 13] if tcp else 0
    ident = int.from_bytes(headers[l3 + 4:l3 + 6], "big") if info.version == 4 else 0
    for k in range(count):
        piece = payload[k * gso_size:(k + 1) * gso_size]
        seg = bytearray(headers)
        seg += piece
        l4_len = hlen - info.l4 + len(piece)
        if info.version == 4:
            ihl = info.l4 - l3
            _put16(seg, l3 + 2, ihl + l4_len)
            _put16(seg, l3 + 4, (ident + k) & 0xFFFF)
            _put16(seg, l3 + 10, 0)
            _put16(seg, l3 + 10, checksum(memoryview(seg)[l3:l3 + ihl]))
        else:
            _put16(seg, l3 + 4, info.l4 - l3 - 40 + l4_len)
        if tcp:
            seg[info.l4 + 4:info.l4 + 8] = ((seq + k * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
            f = tcp_flags
            if k != count - 1:
                f &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH)
            if k:
                f &= ~TCP_FLAG_CWR
            seg[info.l4 + 13] = f
        else:
            _put16(seg, info.l4 + 4, l4_len)
        _fill_l4_checksum(seg, info, l4_len)
        out.append(seg)
    return out


def _segment_tcp(frame: Frame, l3: int, info: L4Info, hlen: int, gso_size: int,
                 fill_checksums: bool) -> list[bytearray]:
    """``segment`` for TCP, the hot path of software GSO: the header sums are computed once and
    only the fields that change per piece (lengths, IPv4 ID, sequence number, flags) are added
    to them, so each piece costs one pass over its payload for the checksum."""
    headers = bytearray(frame[:hlen])
    l4 = info.l4
    v4 = info.version == 4
    ihl = l4 - l3
    ident = (headers[l3 + 4] << 8) | headers[l3 + 5] if v4 else 0
    seq = int.from_bytes(headers[l4 + 4:l4 + 8], "big")
    tcp_flags = headers[l4 + 13]
    # zero what varies, then sum what does not: the IPv4 header without length, ID and
    # checksum; the TCP header without sequence number, flags and checksum
    if v4:
        headers[l3 + 2:l3 + 6] = b"\0\0\0\0"
        headers[l3 + 10:l3 + 12] = b"\0\0"
        ip_base = ones_sum(memoryview(headers)[l3:l4])
    else:
        ip_base = 0
    headers[l4 + 4:l4 + 8] = b"\0\0\0\0"
    headers[l4 + 13] = 0
    headers[l4 + 16:l4 + 18] = b"\0\0"
    tcp_base = (ones_sum(memoryview(headers)[l4:hlen])
                + pseudo_header_sum(info.src, info.dst, PROTO_TCP, 0))
    payload = memoryview(frame)[hlen:info.end]
    total = len(payload)
    count = max(1, -(-total // gso_size))
    out: list[bytearray] = []
    sums = piece_sums(payload, gso_size) if fill_checksums else []
    # the flags of the first, middle and last pieces (as the kernel's tcp_gso_segment)
    first = tcp_flags & ~(TCP_FLAG_FIN | TCP_FLAG_PSH)
    middle = first & ~TCP_FLAG_CWR
    last = tcp_flags & ~TCP_FLAG_CWR if count > 1 else tcp_flags
    pack_ip = _PACK_LEN_ID.pack_into
    pack_ipsum = _PACK_U16.pack_into
    pack_seq = _PACK_SEQ
    for k in range(count):
        start = k * gso_size
        seg = headers + payload[start:start + gso_size]
        l4_len = len(seg) - l4
        f = middle if 0 < k < count - 1 else (first if k < count - 1 else last)
        s = (seq + start) & 0xFFFFFFFF
        if v4:
            tot = ihl + l4_len
            i = (ident + k) & 0xFFFF
            pack_ip(seg, l3 + 2, tot, i)
            p = (ip_base + tot + i) % 0xFFFF  # finish(): a zero sum of non-zero words is 0
            pack_ipsum(seg, l3 + 10, ~p & 0xFFFF if p else 0)
        else:
            pack_ipsum(seg, l3 + 4, l4_len)
        pack_seq(seg, l4 + 4, s)
        seg[l4 + 13] = f
        if fill_checksums:
            pack_ipsum(seg, l4 + 16,
                       finish(tcp_base + l4_len + (s >> 16) + (s & 0xFFFF) + f + sums[k]))
        out.append(seg)
    return out


class VnetCodec:
    """Encode and decode the virtio_net_hdr of one device.

    ``l2``: frames are Ethernet (TAP, packet socket); ``csum``/``tso``/``uso``: what the device
    accepted through TUNSETOFFLOAD (outbound offloads we may ask for); ``complete_rx``: finish
    partial inbound checksums in software (needed when the link does not report
    ``rx_checksum_trusted``).
    """

    __slots__ = ("complete_rx", "csum", "l2", "stats", "tso", "uso")

    def __init__(self, *, l2: bool, csum: bool, tso: bool, uso: bool,
                 complete_rx: bool) -> None:
        self.l2 = l2
        self.csum = csum
        self.tso = tso
        self.uso = uso
        self.complete_rx = complete_rx
        self.stats = {"rx_partial_csum": 0, "rx_gso": 0, "rx_uso_split": 0, "tx_partial_csum": 0,
                      "tx_gso": 0, "tx_sw_segmented": 0}

    # -- outbound ----------------------------------------------------------------------------
    def can_gso(self, frame: Frame) -> bool | None:
        """Whether the device segments this frame itself (None: not a TCP/UDP packet)."""
        if (not self.l2 and len(frame) >= 40 and frame[0] == 0x45 and frame[9] == PROTO_TCP
                and not (frame[6] & 0x3F or frame[7])):
            return self.tso  # IPv4 without options, not a fragment, TCP: the usual case
        l3 = l3_offset_of(frame, self.l2)
        info = None if l3 is None else locate_l4(frame, l3)
        if info is None or info.protocol not in (PROTO_TCP, PROTO_UDP):
            return None
        return self.tso if info.protocol == PROTO_TCP else self.uso

    def tx_header(self, frame: bytearray | memoryview, gso_size: int = 0,
                  mtu: int = 0) -> bytes:
        """The header to write before ``frame``; patches the checksum field for NEEDS_CSUM.

        With ``gso_size`` the packet is described as a GSO frame (the caller checked
        ``can_gso``).  Without it, a TCP packet longer than ``mtu`` is sent as a TSO frame with
        ``gso_size`` derived from the MTU.
        """
        if not self.csum:
            return NO_OFFLOAD
        if not self.l2 and frame[0] == 0x45 and frame[9] == PROTO_TCP:
            hdr = self._tx_tcp4(frame, gso_size, mtu)
            if hdr is not None:
                return hdr
        return self._tx_header(frame, gso_size, mtu)

    def _tx_tcp4(self, frame: bytearray | memoryview, gso_size: int, mtu: int) -> bytes | None:
        """``tx_header`` for the stack's own data path: an IPv4 packet without options carrying
        TCP, on an L3 link (None: not such a packet, use the general path)."""
        n = len(frame)
        if n < 40 or (frame[2] << 8 | frame[3]) != n or frame[6] & 0x3F or frame[7]:
            return None
        thl = (frame[32] >> 4) * 4
        if thl < 20 or 20 + thl > n:
            return None
        # the addresses as one 64-bit number are congruent to their sum (mod 0xffff)
        s = (_from_bytes(frame[12:20], "big") + PROTO_TCP + n - 20) % 0xFFFF
        frame[36] = s >> 8
        frame[37] = s & 0xFF
        st = self.stats
        st["tx_partial_csum"] += 1
        if not gso_size and mtu and self.tso and n > mtu:
            gso_size = mtu - 20 - thl
        if gso_size and n - 20 - thl > gso_size:
            st["tx_gso"] += 1
            return _HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 | (
                VIRTIO_NET_HDR_GSO_ECN if frame[33] & TCP_FLAG_CWR else 0), 20 + thl, gso_size,
                20, TCP_CSUM_OFFSET)
        return _HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 20,
                         TCP_CSUM_OFFSET)

    def _tx_header(self, frame: bytearray | memoryview, gso_size: int, mtu: int) -> bytes:
        """``tx_header`` for any frame."""
        l3 = l3_offset_of(frame, self.l2)
        if l3 is None:
            return NO_OFFLOAD
        info = locate_l4(frame, l3)
        if info is None:
            return NO_OFFLOAD
        proto = info.protocol
        if proto == PROTO_TCP:
            coff = TCP_CSUM_OFFSET
            if info.l4 + 20 > info.end:
                return NO_OFFLOAD
            thl = (frame[info.l4 + 12] >> 4) * 4
        elif proto == PROTO_UDP:
            coff = UDP_CSUM_OFFSET
            thl = 8
            if info.l4 + 8 > info.end:
                return NO_OFFLOAD
        else:
            return NO_OFFLOAD
        l4_len = info.end - info.l4
        at = info.l4 + coff
        _put16(frame, at, pseudo_header_sum(info.src, info.dst, proto, l4_len))
        self.stats["tx_partial_csum"] += 1
        gso_type = VIRTIO_NET_HDR_GSO_NONE
        if not gso_size and mtu and proto == PROTO_TCP and self.tso and info.end - l3 > mtu:
            gso_size = mtu - (info.l4 - l3) - thl
        payload = l4_len - thl
        if gso_size and payload > gso_size:
            if proto == PROTO_TCP:
                gso_type = (VIRTIO_NET_HDR_GSO_TCPV4 if info.version == 4
                            else VIRTIO_NET_HDR_GSO_TCPV6)
                if frame[info.l4 + 13] & TCP_FLAG_CWR:
                    gso_type |= VIRTIO_NET_HDR_GSO_ECN
            else:
                gso_type = VIRTIO_NET_HDR_GSO_UDP_L4
            self.stats["tx_gso"] += 1
        else:
            gso_size = 0
        return _HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type,
                         info.l4 + thl if gso_size else 0, gso_size, info.l4, coff)

    # -- inbound -----------------------------------------------------------------------------
    def rx(self, data: bytes) -> list[memoryview]:
        """Strip the header of one read; return the frame(s) to deliver."""
        if len(data) < VIRTIO_NET_HDR_LEN:
            raise MalformedPacket("truncated", f"read of {len(data)} bytes")
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _HDR.unpack_from(data)
        gso_type &= ~VIRTIO_NET_HDR_GSO_ECN
        st = self.stats
        # USO: one super-datagram standing for many datagrams.  (UFO, GSO_UDP, is one datagram
        # to be IP-fragmented: it is delivered whole, like a TCP super-segment.)
        if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4:
            frame = memoryview(data)[VIRTIO_NET_HDR_LEN:]
            l3 = l3_offset_of(frame, self.l2)
            if l3 is not None and gso_size:
                st["rx_uso_split"] += 1
                return [memoryview(s) for s in segment(frame, l3, gso_size)]
        if gso_type != VIRTIO_NET_HDR_GSO_NONE:
            st["rx_gso"] += 1
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            st["rx_partial_csum"] += 1
            if self.complete_rx:
                buf = bytearray(memoryview(data)[VIRTIO_NET_HDR_LEN:])
                complete_checksum(buf, csum_start, csum_offset)
                return [memoryview(buf)]
        return [memoryview(data)[VIRTIO_NET_HDR_LEN:]]


def deliver_frames(codec: VnetCodec | None, out: list[memoryview], data: bytes,
                   stats: dict[str, int]) -> None:
    """Append the frames of one read from a device to ``out``: as is, or through ``codec`` (vnet
    header stripped, USO super-datagrams split).  A header the codec rejects counts as an rx
    error."""
    if codec is None:
        out.append(memoryview(data))
        return
    try:
        frames = codec.rx(data)
    except ValueError:
        stats["rx_errors"] += 1
        return
    out.extend(frames)
