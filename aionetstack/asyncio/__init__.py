"""The asyncio adapter: drives a ``CoreStack`` from an event loop."""

from aionetstack.asyncio.datagram import DatagramTransport
from aionetstack.asyncio.stack import Stack

__all__ = ["DatagramTransport", "Stack"]
