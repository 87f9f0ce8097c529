"""Links: what carries a NIC's frames.

``pipe()`` builds a pair of connected in-memory ends with seeded impairments (loss, delay, jitter,
reordering, duplication, corruption, rate limiting); ``pcap(inner, path)`` wraps any link and
records its traffic to a pcap file.  ``Link``, ``LinkCaps`` and ``LinkReceiver`` are the contract
between a link and the stack (see ``aionetstack.link.base``).
"""

from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver
from aionetstack.link.fd import FdLink
from aionetstack.link.pcap import PcapLink, pcap
from aionetstack.link.pipe import PipeEnd, pipe
from aionetstack.link.tun import Tap, Tun

__all__ = [
    "FdLink",
    "Frame",
    "Link",
    "LinkCaps",
    "LinkReceiver",
    "PcapLink",
    "PipeEnd",
    "Tap",
    "Tun",
    "pcap",
    "pipe",
]
