"""Links: what carries a NIC's frames.

``pipe()`` builds a pair of connected in-memory ends with seeded impairments (loss, delay, jitter,
reordering, duplication, corruption, rate limiting); ``pcap(inner, path)`` wraps any link and
records its traffic to a pcap file.  Device links: ``Tun``/``Tap`` (``/dev/net/tun``, with
virtio_net_hdr offloads and multi-queue), ``Packet`` (AF_PACKET on an existing interface),
``UdpTunnel`` (frames in UDP datagrams) and ``fd(fd)`` (any datagram or seqpacket fd).  Note
that the attribute ``aionetstack.link.fd`` is that function; import the class with
``from aionetstack.link.fd import FdLink``.  ``Link``, ``LinkCaps`` and ``LinkReceiver`` are the
contract between a link and the stack (see ``aionetstack.link.base``).
"""

from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver
from aionetstack.link.fd import FdLink
from aionetstack.link.fd import fd as fd
from aionetstack.link.packet import Packet
from aionetstack.link.pcap import PcapLink, pcap
from aionetstack.link.pipe import PipeEnd, pipe
from aionetstack.link.tun import Tap, Tun
from aionetstack.link.udptunnel import UdpTunnel

__all__ = [
    "FdLink",
    "Frame",
    "Link",
    "LinkCaps",
    "LinkReceiver",
    "Packet",
    "PcapLink",
    "PipeEnd",
    "Tap",
    "Tun",
    "UdpTunnel",
    "fd",
    "pcap",
    "pipe",
]
