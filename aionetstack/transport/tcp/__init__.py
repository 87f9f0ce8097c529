"""TCP (RFC 9293) for aionetstack: endpoints, demux and the per-connection engine.

``install_tcp(stack)`` creates the stack's ``TcpProtocol`` (``stack.tcp``) and registers it for
IP protocol 6; ``stack.tcp.new_endpoint(family)`` returns an unbound ``TcpEndpoint``.  Per-stack
defaults live on ``TcpProtocol`` (``rcvbuf``, ``sndbuf``, ``min_rto``, ``syn_retries``,
``data_retries``, ``msl``, ``delack``, ``syncookies``, ``congestion_control``, ``isn_override``
for tests).  Module map:

* ``state``      -- the RFC 9293 state enum and its legal transitions
* ``endpoint``   -- user API and the segment-arrival state machine (RFC 9293 §3.10)
* ``sender``     -- send buffer, segmentation, ACK processing, NewReno and SACK recovery
                    (RFC 5681, 6582, 3042, 6675)
* ``receiver``   -- reassembly, SACK blocks and the advertised window (RFC 9293 §3.8.6, 2018)
* ``rtt``        -- RTO computation (RFC 6298)
* ``congestion`` -- the congestion-control interface, Reno (RFC 5681) and CUBIC (RFC 9438)
* ``listen``     -- LISTEN, SYN queue, accept queue, SYN cookies (RFC 9293 §3.10.7.2, 4987)
* ``timewait``   -- compact TIME-WAIT records for closed endpoints (RFC 9293 §3.10.7.4, 6191)
* ``isn``        -- initial sequence numbers (RFC 6528) and SYN cookies
* ``protocol``   -- demux, resets for unknown connections, ``install_tcp``
* ``forwarder``  -- ``TcpForwarder``: connections to any address/port (transparent mode)
"""

from aionetstack.transport.tcp.endpoint import TcpEndpoint
from aionetstack.transport.tcp.protocol import TcpProtocol, install_tcp
from aionetstack.transport.tcp.state import TcpState

__all__ = ["TcpEndpoint", "TcpProtocol", "TcpState", "install_tcp"]
