"""``asyncio.Transport`` over a stack TCP endpoint.

The contract is CPython's ``_SelectorSocketTransport`` (asyncio/selector_events.py):

* ``connection_made`` is called through ``call_soon``, or at once (``start_now``) when the
  connection is handed over outside packet processing with nothing left to wait for (a
  completed connect, an accept); ``connection_lost`` exactly once, through ``call_soon``,
  with ``None`` for a clean close and the endpoint's error otherwise (``ConnectionResetError``,
  ``TimeoutError`` ...).
* ``write`` hands bytes to the endpoint's send buffer (the counterpart of the kernel's socket
  buffer, ``sndbuf``); what does not fit waits in the transport's own buffer.
  ``get_write_buffer_size()`` is that buffer alone, as CPython's is its own buffer and not the
  kernel's, and crossing the high/low water marks calls ``pause_writing``/``resume_writing``:
  ``drain()`` waits while the endpoint is full, so a writer keeps the whole send buffer (and
  so the congestion window) busy.  ``send_buffered()`` on the endpoint tells what is still
  unsent or unacknowledged.
* ``write_eof`` sends FIN once the buffer drains; ``write`` after it raises.  ``eof_received``
  returning true keeps the half-closed connection open, otherwise the transport closes.
* ``close`` flushes then closes gracefully (idempotent); ``abort`` sends RST and drops buffers.
* ``pause_reading`` stops taking bytes out of the endpoint, so its receive buffer fills and the
  advertised TCP window closes: the peer is flow-controlled, memory stays bounded.
* ``asyncio.BufferedProtocol`` is supported (``get_buffer``/``buffer_updated``).

Endpoint readiness arrives through its waiter queue; the transport reacts from a callback
deferred with ``Stack.defer`` (``call_soon``, or right after the stack's timers when they caused
it) so protocol code never runs inside the stack's packet processing.  Until ``connection_made``
has run, reactions always go through ``call_soon``, behind it.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from aionetstack.errors import WouldBlock
from aionetstack.stack.addr import to_str
from aionetstack.stack.waiter import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT
from aionetstack.transport.tcp.state import CAN_RECEIVE, TcpState

if TYPE_CHECKING:
    from aionetstack.asyncio.stack import Stack
    from aionetstack.transport.tcp.endpoint import TcpEndpoint

_READ_CHUNK = 256 * 1024
# states in which reading an empty, error-free endpoint before its FIN raises WouldBlock
_READ_WOULD_BLOCK = CAN_RECEIVE | {TcpState.SYN_SENT, TcpState.SYN_RECEIVED}


def format_addr(addr: tuple[bytes, int], family: int) -> tuple[Any, ...]:
    if family == 6:
        return (to_str(addr[0]), addr[1], 0, 0)
    return (to_str(addr[0]), addr[1])


class TcpTransport(asyncio.Transport):
    _start_tls_compatible = True  # loop.start_tls() / StreamWriter.start_tls() accept us

    # Initial values of the flags and counters: class attributes, written to the instance
    # only when they change (most never do on a short connection), not a dozen stores per
    # connection in ``__init__``.
    _buffer_size = 0
    _eof = False  # write_eof() called
    _eof_sent = False
    _closing = False
    _conn_lost = 0
    _lost_called = False
    _paused = False  # pause_reading()
    _read_eof = False  # peer's FIN delivered to the protocol
    _protocol_paused = False
    _high = 64 * 1024
    _low = 16 * 1024
    _scheduled = False
    _started = False  # connection_made has run: reactions may be deferred
    _events = 0

    def __init__(self, stack: Stack, endpoint: TcpEndpoint, protocol: asyncio.BaseProtocol,
                 loop: asyncio.AbstractEventLoop,
                 waiter: asyncio.Future[None] | None = None,
                 server: Any = None, *, start_soon: bool = True) -> None:
        # no super().__init__(): BaseTransport's only sets ``_extra``, which is set here
        self._stack = stack
        self._ep = endpoint
        self._loop = loop
        self._protocol: asyncio.BaseProtocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)  # _set_protocol_kind
        self._buffer: collections.deque[bytes | bytearray | memoryview] = collections.deque()
        self._server = server
        self._extra: dict[str, Any] = {"stack": stack, "endpoint": endpoint, "socket": None}
        # EVENT_OUT only while ``_buffer`` holds what the endpoint's send buffer did not take
        # (``write``/``_flush`` switch it): every ACK that frees send-buffer space notifies
        # EVENT_OUT, and a transport with nothing waiting has no use for it
        self._entry = endpoint.waiter.register(self._on_event,
                                               EVENT_IN | EVENT_ERR | EVENT_HUP)
        if server is not None:
            server._attach(self)
        if start_soon:
            loop.call_soon(self._start, waiter)

    def __repr__(self) -> str:
        st = "closing" if self._closing else "open"
        return f"<TcpTransport {st} {self._ep!r}>"

    def _set_protocol_kind(self, protocol: asyncio.BaseProtocol) -> None:
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def start_now(self) -> None:
        """Call ``connection_made`` now instead of through ``call_soon`` (``start_soon=False``):
        for a caller already outside the stack's packet processing, such as a connect that has
        just completed or the server's accept callback; saves an event-loop iteration.  As from
        a callback, an exception goes to the loop's exception handler.

        Reading starts a loop turn later, as CPython's selector transport starts reading only
        after ``connection_made``: a task that ``connection_made`` started (a stream server's
        handler) takes its first step before any data is delivered -- it may ``start_tls``
        although the peer's first bytes are already here."""
        self._started = True
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "Exception in connection_made", "exception": exc,
                "transport": self, "protocol": self._protocol})
        if (not self._buffer and not self._eof
                and not self._ep.readiness(EVENT_IN | EVENT_ERR | EVENT_HUP)):
            return  # nothing to read or flush yet: the endpoint's next event schedules it
        self._events |= EVENT_IN | EVENT_OUT
        if not self._scheduled:
            self._scheduled = True
            self._stack.defer(self._process)

    def _start(self, waiter: asyncio.Future[None] | None) -> None:
        self._started = True
        self._protocol.connection_made(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._events |= EVENT_IN | EVENT_OUT
        self._process()

    # -- readiness -------------------------------------------------------------------------
    def _on_event(self, events: int) -> None:
        self._events |= events
        if not self._scheduled:
            self._scheduled = True
            if self._started:
                self._stack.defer(self._process)
            else:
                self._loop.call_soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        events, self._events = self._events, 0
        if self._lost_called:
            return
        if events & EVENT_OUT or self._buffer or (self._eof and not self._eof_sent):
            self._flush()
        if not self._paused and not self._read_eof and not self._lost_called:
            self._read()
        self._maybe_resume_protocol()
        ep = self._ep
        if ep.error is not None and not self._lost_called and not self._conn_lost:
            self._fatal(ep.error)
            return
        if self._closing and not self._buffer and not self._conn_lost:
            self._finish_close()

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> None:
        ep = self._ep
        for _ in range(64):  # bounded per wake-up: other callbacks get their turn
            if self._paused or (self._closing and self._conn_lost):
                return
            rcv = ep.rcv
            if (not rcv.buffer.nbytes and not rcv.fin_received and ep.error is None
                    and ep.state in _READ_WOULD_BLOCK):
                return  # what ep.read() would say with WouldBlock, without raising it
            try:
                if self._buffered:
                    proto = self._protocol
                    assert isinstance(proto, asyncio.BufferedProtocol)
                    avail = ep.unread()
                    if avail == 0:
                        data = ep.read(_READ_CHUNK)  # raises WouldBlock, or b"" at EOF
                    else:
                        buf = proto.get_buffer(avail)
                        mv = memoryview(buf)
                        if not len(mv):
                            raise RuntimeError("get_buffer() returned an empty buffer")
                        n = ep.read_into(mv)  # > 0: there is unread data
                        proto.buffer_updated(n)
                        continue
                else:
                    data = ep.read_chunk(_READ_CHUNK)
            except WouldBlock:
                return
            except OSError as exc:
                self._fatal(exc)
                return
            if not data:
                self._on_eof()
                return
            proto = self._protocol
            if self._buffered:
                assert isinstance(proto, asyncio.BufferedProtocol)
                mv = memoryview(proto.get_buffer(len(data)))
                n = min(len(mv), len(data))
                mv[:n] = data[:n]
                proto.buffer_updated(n)
            else:
                assert isinstance(proto, asyncio.Protocol)
                proto.data_received(data)
        # the bound ran out with data left (a small get_buffer(), a big burst): come back for
        # the rest, after the other callbacks
        self._on_event(EVENT_IN)

    def _on_eof(self) -> None:
        self._read_eof = True
        proto = self._protocol
        assert isinstance(proto, asyncio.Protocol | asyncio.BufferedProtocol)
        keep_open = proto.eof_received()
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if self._closing:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return  # like CPython: a closing transport delivers nothing more
        self._paused = False
        self._on_event(EVENT_IN)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    # -- writing ---------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not "
                            f"{type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            self._conn_lost += 1
            return
        if self._ep.error is not None:  # failed before _process noticed: fail now, once
            self._fatal(self._ep.error)
            return
        if not self._buffer:
            try:
                n = self._ep.write(data)
            except WouldBlock:
                n = 0
            except OSError as exc:
                self._fatal(exc)
                return
            if n == len(data):
                self._maybe_pause_protocol()
                return
            data = memoryview(data)[n:] if n else data
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer (a bytearray, or a view of one)
        self._buffer.append(data)
        self._buffer_size += len(data)
        self._entry.mask |= EVENT_OUT
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        for d in list_of_data:
            self.write(d)

    def _flush(self) -> None:
        buf = self._buffer
        ep = self._ep
        while buf:
            data = buf[0]
            try:
                n = ep.write(data)
            except WouldBlock:
                n = 0
            except OSError as exc:
                self._fatal(exc)
                return
            self._buffer_size -= n
            if n == len(data):
                buf.popleft()
            else:
                buf[0] = memoryview(data)[n:]
                return
        self._entry.mask &= ~EVENT_OUT
        if self._eof and not self._eof_sent:
            self._eof_sent = True
            try:
                ep.shutdown_write()
            except OSError as exc:
                self._fatal(exc)
                return
            # Every byte is now the endpoint's and no more can be written: release a paused
            # writer as CPython does once its buffer reaches the kernel (after the FIN the
            # endpoint signals no EVENT_OUT for ACKs, so waiting for "<= low" could hang).
            if self._protocol_paused:
                self._protocol_paused = False
                self._flow_call("resume_writing")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._flush()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high:
            return
        self._protocol_paused = True
        self._flow_call("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self.get_write_buffer_size() <= self._low:
            self._protocol_paused = False
            self._flow_call("resume_writing")

    def _flow_call(self, method: str) -> None:
        """Call ``protocol.pause_writing``/``resume_writing``; errors go to the loop."""
        try:
            getattr(self._protocol, method)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{method}() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    # -- closing ---------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._paused = True
        if not self._buffer:
            self._finish_close()
        else:
            self._on_event(EVENT_OUT)

    def _finish_close(self) -> None:
        self._conn_lost += 1
        try:
            self._ep.close()
        except OSError:
            pass
        self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal(self, exc: BaseException) -> None:
        # the endpoint's own error is the cause (a NotConnected from a call that raced it is not)
        self._force_close(self._ep.error if self._ep.error is not None else exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._closing = True
        self._paused = True
        self._conn_lost += 1
        if exc is None:
            self._ep.abort()
        else:
            self._ep.close()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        self._ep.waiter.unregister(self._entry)
        try:
            self._protocol.connection_lost(exc if isinstance(exc, Exception) or exc is None
                                           else None)
        finally:
            if self._server is not None:
                self._server._detach(self)
                self._server = None

    # -- misc ------------------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        ep = self._ep
        if name == "sockname":
            return format_addr(ep.local, ep.family) if ep.local else default
        if name == "peername":
            return format_addr(ep.remote, ep.family) if ep.remote else default
        if name == "tcp_info":
            return ep.info()
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._set_protocol_kind(protocol)


def make_ssl_protocol(loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol,
                      context: Any, waiter: asyncio.Future[None] | None, *, server_side: bool,
                      server_hostname: str | None, handshake_timeout: float | None,
                      shutdown_timeout: float | None) -> Any:
    """The standard library's TLS protocol layer (what ``loop.create_connection`` uses)."""
    from asyncio import sslproto

    factory: Any = sslproto.SSLProtocol
    return factory(loop, app_protocol, context, waiter, server_side, server_hostname,
                   ssl_handshake_timeout=handshake_timeout,
                   ssl_shutdown_timeout=shutdown_timeout)
