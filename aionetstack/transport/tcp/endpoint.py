"""A TCP connection endpoint: the user API.

``TcpEndpoint`` is assembled from parts, each a module: ``core`` (connection state, segment
output, state changes), ``timeouts`` (timers, ICMP errors), ``input`` (segment arrival) and
``api`` (the user API).  This module only adds what the compiled parts cannot have.

User API (non-blocking, gVisor-shaped): ``bind``, ``listen``, ``accept`` (raises WouldBlock),
``connect`` (raises ConnectStarted; completion is ``EVENT_OUT`` on ``waiter``, then
``connect_result()``; ``start_connect`` and ``connecting`` do the same without exceptions),
``write`` (accepts what fits; queued in SYN-SENT and sent after the handshake), ``read`` /
``read_into`` (WouldBlock when empty, ``b""`` / 0 at EOF),
``shutdown_write``, ``close`` (graceful; a RST instead when unread data is pending, RFC 9293
§3.10.4 / RFC 2525 §2.17), ``abort`` (RST), ``readiness``, ``info``.  Options: ``nodelay``,
``keepalive`` (+ ``keepidle``/``keepintvl``/``keepcnt``), ``user_timeout``, ``linger`` (0:
``close`` resets like ``abort``), ``set_buffer_sizes``.

Segment arrival follows RFC 9293 §3.10.7:

* SYN-SENT (§3.10.7.3): an ACK outside ``(ISS, SND.NXT]`` is answered with a reset; a RST is only
  accepted with an acceptable ACK (-> ConnectionRefused); SYN+ACK completes the handshake (any
  text on it is kept); a bare SYN is a simultaneous open (-> SYN-RECEIVED, send SYN-ACK).
* Otherwise (§3.10.7.4): PAWS (RFC 7323 §5); the acceptability test; RST processing with
  RFC 5961 §3 (only an exact ``SEG.SEQ == RCV.NXT`` resets, any other in-window RST draws a
  challenge ACK); a SYN in a synchronized state draws a challenge ACK (RFC 5961 §4; challenge
  ACKs are rate-limited, §7); ACK processing, where an ACK of unsent data is answered with an
  ACK and dropped (RFC 5961 §5); text (the ``Receiver``); FIN.

Options negotiated on the handshake: MSS (from the route MTU: ``mtu - 40`` for IPv4, ``- 60`` for
IPv6; 536/1220 when the peer sends none), window scale and timestamps (RFC 7323), SACK
(RFC 2018: blocks reported on ACKs, most recent first; the sender's scoreboard drives RFC 6675
recovery).  ACKs are delayed (every second full-sized segment, else after ``delack`` seconds)
but sent at once for out-of-order data, hole fills and FINs (RFC 9293 §3.8.6.3, RFC 5681 §4.2).
RTT samples come from echoed timestamps, except echoes older than our latest retransmission
(ambiguous, Karn's rule extended to timestamps).  ICMP: hard errors abort a connection attempt,
soft ones are kept and reported if the connection times out, fragmentation-needed lowers the
MSS (RFC 1122 §4.2.3.9, RFC 1191, RFC 5927 sequence check).

Timers: ``_rto_timer`` (SYN/data retransmission and zero-window probes), ``_delack_timer``,
``_linger_timer`` (TIME-WAIT 2*MSL, and the FIN-WAIT-2 timeout of a closed endpoint),
``_ka_timer`` (keep-alive, off by default, RFC 9293 §3.8.4); the last two are made on first
use.  Reaching CLOSED cancels them all,
removes the endpoint from the demux tables and releases its port.  TIME-WAIT after the user has
closed the endpoint is handed to a compact ``TimeWait`` record (``timewait``), which keeps the
port and answers for the 4-tuple until 2*MSL is over; the endpoint reads TIME-WAIT until then.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from aionetstack.transport.tcp.api import EndpointApi
from aionetstack.transport.tcp.core import local_mss

__all__ = ["TcpEndpoint", "local_mss"]


@mypyc_attr(allow_interpreted_subclasses=True)  # applications may subclass it
class TcpEndpoint(EndpointApi):
    """One TCP socket.  See the module docstring.

    Everything it does is in its compiled parts (``api``, ``input``, ``timeouts``, ``core``).
    It is compiled too, and takes no weak references: an instance of an interpreted subclass
    of a compiled class calls every method, its own included, through a Python-level lookup
    (mypyc's "glue"), which cost the per-segment path about a tenth of its time when this
    class was interpreted.  A subclass an application defines in Python may add
    ``__weakref__`` or ``__dict__``.
    """

    __slots__ = ()
