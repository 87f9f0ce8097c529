"""TCP demultiplexing and stateless replies (RFC 9293 §3.10.7.1, §3.9.1).

``TcpProtocol`` is what the network layer hands TCP segments to (``stack.transports[6]``):

1. parse (``wire.tcp.parse_tcp``), verify the checksum unless the NIC is trusted, drop
   non-unicast destinations, port 0 and SYN+FIN / SYN+RST (never valid: ``dropped.bad-flags``;
   a segment with none of SYN/ACK/RST is ``bad-flags`` too when it reaches a connection or a
   listener, while a closed port answers it with a reset as step 4 says);
2. look up the connection by its 4-tuple ``(local addr, local port, remote addr, remote port)``;
3. else a listener bound to the exact local address, then one bound to the wildcard (a SYN
   with a sequence number, or a timestamp, beyond a TIME-WAIT connection's ends that TIME-WAIT
   and goes to the listener, RFC 1122 §4.2.2.13, RFC 6191);
4. else a SYN goes to the stack's ``TcpForwarder`` if it has one for that NIC (transparent
   mode, ``forwarder.py``);
5. else answer with a reset (RFC 9293 §3.10.7.1): never for a RST; for a segment with ACK
   ``<SEQ=SEG.ACK><CTL=RST>``; otherwise ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>``.

It also owns the per-stack defaults (buffer sizes, retry limits, MSL, timers), the ISN
generator (RFC 6528; ``isn_override`` lets tests pin the ISN, e.g. just below 2**32) and
``memory``, the bytes buffered by all connections that ``stack.limits.max_buffer_bytes`` and
``max_ooo_bytes`` bound (``aionetstack.stack.limits.TcpMemory``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetstack.errors import NetstackError
from aionetstack.network.packet import UNICAST, IcmpError, PacketInfo
from aionetstack.stack.limits import TcpMemory
from aionetstack.stack.routing import find_route, send_ip
from aionetstack.transport.tcp.endpoint import TcpEndpoint
from aionetstack.transport.tcp.isn import IsnGenerator, SynCookies
from aionetstack.transport.tcp.listen import listen_input
from aionetstack.transport.tcp.state import TcpState
from aionetstack.transport.tcp.timewait import TimeWaitTable, reopens_time_wait
from aionetstack.wire.checksum import PROTO_TCP
from aionetstack.wire.errors import MalformedPacket
from aionetstack.wire.seqnum import seq_add
from aionetstack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, pack_tcp, parse_tcp, tcp_checksum_ok

if TYPE_CHECKING:
    from aionetstack.stack.stack import CoreStack
    from aionetstack.transport.tcp.forwarder import TcpForwarder

ConnKey = tuple[bytes, int, bytes, int]
ListenKey = tuple[bytes | None, int, int]


class TcpProtocol:
    def __init__(self, stack: CoreStack) -> None:
        self.stack = stack
        self.stats = stack.stats_.tcp
        self.connections: dict[ConnKey, TcpEndpoint] = {}
        self.listeners: dict[ListenKey, TcpEndpoint] = {}
        self.endpoints: set[TcpEndpoint] = set()
        # user-closed connections in TIME-WAIT, without their endpoints (``timewait``)
        self.time_wait = TimeWaitTable(self)
        self.forwarder: TcpForwarder | None = None  # step 4: unmatched SYNs (forwarder.py)
        self.isn = IsnGenerator(stack.rng)
        self.isn_override: int | None = None
        self.cookies = SynCookies(stack.rng)
        self.syncookies = True
        self.memory = TcpMemory(stack)  # bytes buffered by all connections (stack.limits)
        # defaults (Linux-like)
        self.rcvbuf = 262144
        self.sndbuf = 262144
        self.syn_retries = 6
        self.synack_retries = 5
        self.data_retries = 15
        self.msl = 30.0
        self.fin_timeout = 60.0
        self.min_rto = 0.2
        self.max_rto = 120.0
        self.initial_rto = 1.0
        self.delack = 0.04
        self.congestion_control = "cubic"  # RFC 9438; "reno" or any registered name
        stack.unreachable_listeners.append(self._neighbour_unreachable)
        self.challenge_ack_limit = 1000  # per second, per stack (RFC 5961 §7, like Linux)
        self._challenge_window = (0.0, 0)

    def new_endpoint(self, family: int = 4) -> TcpEndpoint:
        ep = TcpEndpoint(self, family)
        self.endpoints.add(ep)
        return ep

    def new_isn(self, local: bytes, lport: int, remote: bytes, rport: int) -> int:
        if self.isn_override is not None:
            return self.isn_override
        return self.isn.isn(local, lport, remote, rport, self.stack.now())

    def challenge_ack_allowed(self) -> bool:
        """RFC 5961 §7: rate-limit challenge ACKs (a fixed one-second window)."""
        now = self.stack.now()
        start, count = self._challenge_window
        if now - start >= 1.0:
            start, count = now, 0
        if count >= self.challenge_ack_limit:
            self.stats.drop("challenge-ack-limit")
            return False
        self._challenge_window = (start, count + 1)
        return True

    def __len__(self) -> int:
        return len(self.endpoints)

    # -- input -------------------------------------------------------------------------------
    def deliver(self, pkt: PacketInfo, segment: memoryview) -> None:
        st = self.stats
        st["received"] += 1
        if pkt.cast != UNICAST:
            st.drop("not-unicast")
            return
        try:
            h = parse_tcp(segment)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        if not pkt.trusted and not tcp_checksum_ok(pkt.src, pkt.dst, segment):
            st.malformed("bad-checksum")
            return
        if h.sport == 0 or h.dport == 0:
            st.drop("port-zero")
            return
        f = h.flags
        if f & SYN and f & (FIN | RST):
            st.drop("bad-flags")  # never valid in any state: a scan or an attack, not a peer
            return
        # none of SYN/ACK/RST: never valid for a connection or a listener (RFC 9293 §3.10.7.2,
        # §3.10.7.4 "if the ACK bit is off, drop"); a closed port still answers with a reset
        no_control = not f & (SYN | ACK | RST)
        key = (pkt.dst, h.dport, pkt.src, h.sport)
        ep = self.connections.get(key)
        if ep is not None:
            if no_control:
                st.drop("bad-flags")
                return
            if not (ep._state is TcpState.TIME_WAIT and h.flags & (SYN | ACK | RST) == SYN
                    and reopens_time_wait(ep.ts_recent if ep.ts_enabled else None,
                                          ep.rcv.rcv_nxt, h)):
                ep.segment_arrived(h)
                return
            ep.recycle()
        else:
            tw = self.time_wait.records.get(key)
            if tw is not None:
                if no_control:
                    st.drop("bad-flags")
                    return
                if not (h.flags & (SYN | ACK | RST) == SYN
                        and reopens_time_wait(tw.ts_recent, tw.rcv_nxt, h)):
                    self.time_wait.segment_arrived(tw, h)
                    return
                self.time_wait.end(tw)
        lst = self.listeners.get((pkt.dst, h.dport, pkt.family)) or self.listeners.get(
            (None, h.dport, pkt.family))
        if lst is not None and lst._state is TcpState.LISTEN:
            if no_control:
                st.drop("bad-flags")
                return
            listen_input(lst, pkt, h)
            return
        fwd = self.forwarder
        if fwd is not None and f & (SYN | ACK | RST) == SYN and fwd.wants(pkt):
            fwd.syn_arrived(pkt, h, segment)
            return
        st.drop("no-endpoint")
        self.send_reset(pkt, h)

    def send_reset(self, pkt: PacketInfo, h: TcpHeader) -> None:
        """RFC 9293 §3.10.7.1: reset a segment that belongs to no connection."""
        if h.flags & RST:
            return
        if h.flags & ACK:
            seq, ack, flags = h.ack, 0, RST
        else:
            seq, ack, flags = 0, seq_add(h.seq, h.seg_len), RST | ACK
        try:
            route = find_route(self.stack, pkt.src, pkt.dst)
        except NetstackError:
            return
        buf = route.new_packet(20)
        pack_tcp(buf, route.headroom, src=route.local, dst=route.remote, sport=h.dport,
                 dport=h.sport, seq=seq, ack=ack, flags=flags, window=0,
                 checksum=not route.nic.tx_offload)
        try:
            send_ip(self.stack, route, buf, 20, PROTO_TCP)
        except NetstackError:
            return
        self.stats["resets-sent"] += 1

    def icmp_error(self, err: IcmpError) -> None:
        """Hard errors abort a connection attempt; others are ignored (RFC 1122 §4.2.3.9)."""
        sport, dport = err.ports
        key = (err.src, sport, err.dst, dport)
        ep = self.connections.get(key)
        if ep is None:
            if key in self.time_wait and len(err.l4) >= 8:
                # as the endpoint would: nothing is in flight in TIME-WAIT (RFC 5927 §4.1)
                self.stats["icmp-error"] += 1
                self.stats.drop("icmp-stale-seq")
                return
            self.stats["icmp-error-ignored"] += 1
            return
        self.stats["icmp-error"] += 1
        ep.icmp_error(err)

    def _neighbour_unreachable(self, ip: bytes) -> None:
        """ARP/NDP gave up on a next hop: a soft error for the connections that use it."""
        from aionetstack.errors import HostUnreachable

        for ep in list(self.connections.values()):
            if ep.route is not None and ep.route.next_hop == ip:
                ep.soft_error = HostUnreachable("the next hop did not answer address resolution")

    def close_all(self) -> None:
        for ep in list(self.endpoints):
            ep.abort()
        self.time_wait.close_all()


def install_tcp(stack: CoreStack) -> TcpProtocol:
    """Create the stack's TCP and register it for protocol 6 (``stack.tcp``); idempotent."""
    existing = stack.transports.get(PROTO_TCP)
    if isinstance(existing, TcpProtocol):
        return existing
    proto = TcpProtocol(stack)
    stack.transports[PROTO_TCP] = proto
    attr = "tcp"  # CoreStack gains a typed ``tcp`` attribute when the lead wires TCP in
    setattr(stack, attr, proto)
    return proto
