"""``asyncio.DatagramTransport`` over a stack UDP endpoint.

Follows CPython's ``_SelectorDatagramTransport``: ``connection_made`` through ``call_soon``,
``sendto`` errors (OSError) go to ``protocol.error_received`` instead of raising, a connected
transport rejects a different destination with ``ValueError``, ``connection_lost`` exactly once.
Received datagrams are handed to ``datagram_received`` from a loop callback, never from inside
the stack's packet processing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aionetstack.errors import WouldBlock
from aionetstack.stack.addr import to_bytes, to_str
from aionetstack.stack.waiter import EVENT_ERR, EVENT_IN
from aionetstack.transport.udp import UdpEndpoint

if TYPE_CHECKING:
    from aionetstack.asyncio.stack import Stack


def _fmt(addr: tuple[bytes, int], family: int) -> tuple[Any, ...]:
    if family == 6:
        return (to_str(addr[0]), addr[1], 0, 0)
    return (to_str(addr[0]), addr[1])


class DatagramTransport(asyncio.DatagramTransport):
    def __init__(self, stack: Stack, endpoint: UdpEndpoint, protocol: asyncio.DatagramProtocol,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._stack = stack
        self._ep = endpoint
        self._protocol = protocol
        self._loop = loop
        self._closing = False
        self._lost = False
        self._drain_scheduled = False
        self._entry = endpoint.waiter.register(self._on_event, EVENT_IN | EVENT_ERR)
        self._extra: dict[str, Any] = {"stack": stack, "endpoint": endpoint, "socket": None}
        loop.call_soon(self._start)

    def _start(self) -> None:
        self._protocol.connection_made(self)
        self._drain()

    # -- incoming --------------------------------------------------------------------------
    def _on_event(self, _events: int) -> None:
        if not self._drain_scheduled and not self._lost:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        ep = self._ep
        fam = ep.family
        while not self._closing:  # nothing is delivered after close(), as in CPython
            try:
                data, src = ep.recvfrom()
            except WouldBlock:
                return
            except OSError as exc:
                if ep.closed:  # closed underneath us (the stack closed): report it, once
                    self._closing = True
                    ep.waiter.unregister(self._entry)
                    self._loop.call_soon(self._call_connection_lost, exc)
                    return
                self._protocol.error_received(exc)
                continue
            self._protocol.datagram_received(data, _fmt(src, fam))

    # -- outgoing --------------------------------------------------------------------------
    def sendto(self, data: bytes | bytearray | memoryview,  # type: ignore[override]
               addr: tuple[Any, ...] | None = None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not "
                            f"{type(data).__name__!r}")
        ep = self._ep
        if addr is not None and ep.remote is not None:
            if to_bytes(addr[0]) != ep.remote[0] or addr[1] != ep.remote[1]:
                raise ValueError(f"Invalid address: must be None or {_fmt(ep.remote, ep.family)}")
            addr = None
        if self._closing:
            raise RuntimeError("Cannot call sendto() on a closing transport")
        try:
            ep.sendto(data, None if addr is None else (addr[0], addr[1]))
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        ep = self._ep
        if name == "sockname":
            return _fmt(ep.local, ep.family) if ep.local else default
        if name == "peername":
            return _fmt(ep.remote, ep.family) if ep.remote else default
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._ep.waiter.unregister(self._entry)
        self._ep.close()
        self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self.close()

    def _call_connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._protocol.connection_lost(exc)
