"""TCP (RFC 9293) for aionetstack: endpoints, demux and the per-connection engine.

``install_tcp(stack)`` creates the stack's ``TcpProtocol`` and registers it for IP protocol 6;
``stack.tcp.new_endpoint(family)`` returns an unbound ``TcpEndpoint``.  Module map:

* ``state``      -- the RFC 9293 state enum and its legal transitions
* ``endpoint``   -- user API and the segment-arrival state machine (RFC 9293 §3.10)
* ``sender``     -- send buffer, segmentation, ACK processing, fast retransmit (RFC 5681/6582)
* ``receiver``   -- reassembly and the advertised window (RFC 9293 §3.8.6)
* ``rtt``        -- RTO computation (RFC 6298)
* ``congestion`` -- the congestion-control interface and Reno (RFC 5681)
* ``listen``     -- LISTEN, SYN queue and accept queue (RFC 9293 §3.10.7.2)
* ``isn``        -- initial sequence numbers (RFC 6528)
* ``protocol``   -- demux, resets for unknown connections, ``install_tcp``
"""

from aionetstack.transport.tcp.endpoint import TcpEndpoint
from aionetstack.transport.tcp.protocol import TcpProtocol, install_tcp
from aionetstack.transport.tcp.state import TcpState

__all__ = ["TcpEndpoint", "TcpProtocol", "TcpState", "install_tcp"]
