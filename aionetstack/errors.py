"""Typed errors, modelled on gVisor's ``tcpip.Error`` set.

Every error is a subclass of the builtin ``OSError`` subclass an application already catches for
the same condition (``ConnectionRefusedError``, ``TimeoutError``, ``BlockingIOError`` ...), carries
the matching ``errno``, and also derives from ``NetstackError`` so code can catch "anything the
stack raised" in one clause.
"""

from __future__ import annotations

import errno as _errno
import os as _os


class NetstackError(OSError):
    """Base class of every error aionetstack raises for a network condition or API misuse."""

    errno_code: int = _errno.EIO

    def __init__(self, message: str | None = None) -> None:
        code = type(self).errno_code
        super().__init__(code, message or _os.strerror(code))


class WouldBlock(NetstackError, BlockingIOError):
    """The operation cannot complete now (empty receive queue, full send buffer)."""

    errno_code = _errno.EAGAIN


class ConnectStarted(NetstackError, BlockingIOError):
    """``connect`` has started; completion is signalled through the endpoint's waiter queue."""

    errno_code = _errno.EINPROGRESS


class AlreadyConnecting(NetstackError):
    errno_code = _errno.EALREADY


class AlreadyConnected(NetstackError):
    errno_code = _errno.EISCONN


class NotConnected(NetstackError):
    errno_code = _errno.ENOTCONN


class AlreadyBound(NetstackError):
    errno_code = _errno.EINVAL


class InvalidEndpointState(NetstackError):
    errno_code = _errno.EINVAL


class InvalidArgument(NetstackError, ValueError):
    """A bad argument: an unparsable address, a port out of range, a bad option value."""

    errno_code = _errno.EINVAL


class InvalidOption(NetstackError):
    errno_code = _errno.ENOPROTOOPT


class NotSupported(NetstackError):
    errno_code = _errno.EOPNOTSUPP


class PortInUse(NetstackError):
    errno_code = _errno.EADDRINUSE


class AddressNotAvailable(NetstackError):
    """The local address is not one of the stack's addresses, or no ephemeral port is free."""

    errno_code = _errno.EADDRNOTAVAIL


class NoRoute(NetstackError):
    """No route to the destination network (ENETUNREACH)."""

    errno_code = _errno.ENETUNREACH


class HostUnreachable(NetstackError):
    """The neighbour did not answer ARP/NDP, or an ICMP host-unreachable arrived."""

    errno_code = _errno.EHOSTUNREACH


class NetworkUnreachable(NoRoute):
    """An ICMP network-unreachable arrived."""


class ConnectionRefused(NetstackError, ConnectionRefusedError):
    errno_code = _errno.ECONNREFUSED


class ConnectionReset(NetstackError, ConnectionResetError):
    errno_code = _errno.ECONNRESET


class ConnectionAborted(NetstackError, ConnectionAbortedError):
    errno_code = _errno.ECONNABORTED


class TimedOut(NetstackError, TimeoutError):
    errno_code = _errno.ETIMEDOUT


class ClosedForSend(NetstackError, BrokenPipeError):
    errno_code = _errno.EPIPE


class ClosedForReceive(NetstackError):
    errno_code = _errno.ESHUTDOWN


class MessageTooLong(NetstackError):
    errno_code = _errno.EMSGSIZE


class DestinationRequired(NetstackError):
    errno_code = _errno.EDESTADDRREQ


class BroadcastDisabled(NetstackError, PermissionError):
    """Sending to a broadcast address without the broadcast option (SO_BROADCAST)."""

    errno_code = _errno.EACCES


class NoBufferSpace(NetstackError):
    errno_code = _errno.ENOBUFS


class ProtocolError(NetstackError):
    errno_code = _errno.EPROTO


class StackClosed(NetstackError):
    """The stack (or the endpoint's NIC) has been closed."""

    errno_code = _errno.ESHUTDOWN


__all__ = [
    "AddressNotAvailable",
    "AlreadyBound",
    "AlreadyConnected",
    "AlreadyConnecting",
    "BroadcastDisabled",
    "ClosedForReceive",
    "ClosedForSend",
    "ConnectStarted",
    "ConnectionAborted",
    "ConnectionRefused",
    "ConnectionReset",
    "DestinationRequired",
    "HostUnreachable",
    "InvalidArgument",
    "InvalidEndpointState",
    "InvalidOption",
    "MessageTooLong",
    "NetstackError",
    "NetworkUnreachable",
    "NoBufferSpace",
    "NoRoute",
    "NotConnected",
    "NotSupported",
    "PortInUse",
    "ProtocolError",
    "StackClosed",
    "TimedOut",
    "WouldBlock",
]
