"""ICMPv4 (RFC 792, RFC 1122 §3.2.2) and ICMPv6 (RFC 4443) for the stack.

* Echo requests are answered (unicast always; IPv4 broadcast echo is ignored as Linux does);
  on a promiscuous NIC, requests to addresses that are not the stack's only with ``echo_any``.
* Echo replies go to the ``IcmpEchoEndpoint`` owning their identifier (a Linux "ping socket").
* Errors received are matched to the endpoint that sent the quoted packet and reported as an
  ``IcmpError``; fragmentation-needed / packet-too-big lower the path MTU (RFC 1191, RFC 8201).
* Errors generated follow RFC 1122 §3.2.2 / RFC 4443 §2.4(e): never about an ICMP error, a
  broadcast or multicast destination, a non-initial fragment or a non-unicast source; and they
  are rate-limited by a token bucket (RFC 4443 §2.4(f)).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from aionetstack.errors import (
    AddressNotAvailable,
    HostUnreachable,
    InvalidArgument,
    NetstackError,
    NoRoute,
    StackClosed,
    WouldBlock,
)
from aionetstack.network.packet import UNICAST, IcmpError, PacketInfo
from aionetstack.stack.addr import family_of
from aionetstack.stack.routing import find_route, send_ip, update_pmtu
from aionetstack.stack.waiter import EVENT_ERR, EVENT_IN, EVENT_OUT, WaiterQueue
from aionetstack.wire import icmpv4 as I4
from aionetstack.wire import icmpv6 as I6
from aionetstack.wire.checksum import PROTO_ICMP, PROTO_ICMPV6
from aionetstack.wire.checksum import checksum as _checksum
from aionetstack.wire.checksum import verify as _verify
from aionetstack.wire.errors import MalformedPacket

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC
    from aionetstack.stack.stack import CoreStack

_V4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_V4_KIND = {0: "net-unreachable", 1: "host-unreachable", 2: "proto-unreachable",
            3: "port-unreachable", 4: "frag-needed", 5: "source-route-failed",
            6: "net-unreachable", 7: "host-unreachable", 9: "admin-prohibited",
            10: "admin-prohibited", 11: "net-unreachable", 12: "host-unreachable",
            13: "admin-prohibited"}
_V6_UNREACH_KIND = {0: "net-unreachable", 1: "admin-prohibited", 2: "host-unreachable",
                    3: "host-unreachable", 4: "port-unreachable", 5: "admin-prohibited",
                    6: "admin-prohibited"}


# kind -> (ICMPv4 code, ICMPv6 code) of a destination unreachable
_UNREACH_CODES = {"port-unreachable": (3, 4), "admin-prohibited": (13, 1),
                  "host-unreachable": (1, 3)}


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class IcmpEchoEndpoint:
    """Send echo requests and receive their replies (like a Linux ICMP "ping socket")."""

    def __init__(self, proto: IcmpProtocol, family: int, ident: int) -> None:
        self._proto = proto
        self.family = family
        self.ident = ident
        self.waiter = WaiterQueue()
        self.replies: deque[tuple[bytes, int, bytes, float]] = deque(maxlen=1024)
        self.errors: deque[tuple[bytes, NetstackError]] = deque(maxlen=64)
        self.destinations: set[bytes] = set()
        self.closed = False

    def send(self, dst: bytes, seq: int, payload: bytes = b"", ttl: int | None = None) -> None:
        if self.closed:
            raise StackClosed("endpoint closed")
        if family_of(dst) != self.family:
            raise InvalidArgument("address family mismatch")
        stack = self._proto.stack
        route = find_route(stack, dst)
        n = 8 + len(payload)
        buf = route.new_packet(n)
        rest = (self.ident << 16) | (seq & 0xFFFF)
        if self.family == 4:
            I4.pack_icmpv4(buf, route.headroom, I4.ECHO_REQUEST, 0, rest, payload)
            send_ip(stack, route, buf, n, PROTO_ICMP, ttl=ttl)
            stack.stats_.icmpv4["echo-request-sent"] += 1
        else:
            I6.pack_icmpv6(buf, route.headroom, route.local, dst, I6.ECHO_REQUEST, 0, rest,
                           payload)
            send_ip(stack, route, buf, n, PROTO_ICMPV6, ttl=ttl)
            stack.stats_.icmpv6["echo-request-sent"] += 1
        self.destinations.add(dst)

    def recv(self) -> tuple[bytes, int, bytes, float]:
        """(source, sequence, payload, arrival time); raises the next queued error first."""
        if self.errors:
            raise self.errors.popleft()[1]
        if not self.replies:
            raise WouldBlock()
        return self.replies.popleft()

    def readiness(self, mask: int) -> int:
        r = EVENT_OUT
        if self.replies:
            r |= EVENT_IN
        if self.errors:
            r |= EVENT_ERR
        return r & mask

    def _error(self, dst: bytes, exc: NetstackError) -> None:
        self.errors.append((dst, exc))
        self.waiter.notify(EVENT_ERR)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._proto.echo.pop((self.family, self.ident), None)
            self.waiter.notify(EVENT_ERR)


class IcmpProtocol:
    def __init__(self, stack: CoreStack, rate: float = 1000.0, burst: int = 50) -> None:
        self.stack = stack
        self.s4 = stack.stats_.icmpv4
        self.s6 = stack.stats_.icmpv6
        self.bucket = TokenBucket(rate, burst)
        self.echo: dict[tuple[int, int], IcmpEchoEndpoint] = {}
        self.echo_reply_enabled = True
        stack.unreachable_listeners.append(self._neighbour_unreachable)

    # -- echo endpoints ----------------------------------------------------------------------
    def new_echo_endpoint(self, family: int) -> IcmpEchoEndpoint:
        for _ in range(64):
            ident = self.stack.rng.getrandbits(16)
            if (family, ident) not in self.echo:
                ep = IcmpEchoEndpoint(self, family, ident)
                self.echo[(family, ident)] = ep
                return ep
        raise AddressNotAvailable("no free ICMP identifier")

    def _neighbour_unreachable(self, ip: bytes) -> None:
        for ep in list(self.echo.values()):
            if ip in ep.destinations:
                ep._error(ip, HostUnreachable("no answer to address resolution for the "
                                              "next hop of this destination"))
        # next hops that are gateways: report to endpoints whose route uses them
        for ep in list(self.echo.values()):
            for dst in list(ep.destinations):
                if dst != ip:
                    try:
                        if find_route(self.stack, dst).next_hop == ip:
                            ep._error(dst, HostUnreachable("gateway did not answer ARP/NDP"))
                    except NetstackError:
                        pass

    def close_all(self) -> None:
        for ep in list(self.echo.values()):
            ep.close()

    # -- ICMPv4 ingress ------------------------------------------------------------------------
    def deliver4(self, pkt: PacketInfo, payload: memoryview) -> None:
        st = self.s4
        st["received"] += 1
        try:
            msg = I4.parse_icmpv4(payload, verify_checksum=not pkt.trusted)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        t = msg.type
        if t == I4.ECHO_REQUEST:
            if pkt.cast != UNICAST or not self.echo_reply_enabled:
                st.drop("echo-not-unicast")
                return
            if not self._echo_allowed(pkt):
                st.drop("echo-not-local")
                return
            self._reply(pkt, 4, msg.rest, msg.payload)
        elif t == I4.ECHO_REPLY:
            ep = self.echo.get((4, msg.ident))
            if ep is None:
                st.drop("no-endpoint")
                return
            ep.replies.append((pkt.src, msg.sequence, bytes(msg.payload), self.stack.now()))
            ep.waiter.notify(EVENT_IN)
        elif t in _V4_ERROR_TYPES:
            st[f"error-received.{t}"] += 1
            inner = msg.payload
            if len(inner) < 28 or inner[0] >> 4 != 4:
                st.malformed("bad-quote")
                return
            ihl = (inner[0] & 0x0F) * 4
            if ihl < 20 or len(inner) < ihl + 8:
                st.malformed("bad-quote")
                return
            src = bytes(inner[12:16])
            dst = bytes(inner[16:20])
            proto = inner[9]
            if t == 3:
                kind = _V4_KIND.get(msg.code, "host-unreachable")
            elif t == 11:
                kind = "time-exceeded"
            elif t == 12:
                kind = "param-problem"
            else:
                return  # source quench (deprecated, RFC 6633): ignored
            mtu = 0
            if kind == "frag-needed":
                mtu = msg.next_hop_mtu or _plateau(int.from_bytes(inner[2:4], "big"))
                if mtu >= 68 and src in self.stack._local:  # only about packets we sent
                    update_pmtu(self.stack, dst, mtu)
            self._dispatch(IcmpError(4, t, msg.code, kind, src, dst, proto, inner[ihl:], mtu))
        else:
            st.drop("unhandled-type")

    def echo_request4(self, nic: NIC, src: bytes, dst: bytes, msg: memoryview,
                      trusted: bool = False) -> None:
        """The fast path of ``deliver4`` for an ICMPv4 echo request to a unicast address
        (``msg`` is the whole ICMP message, at least 8 bytes, type 8): same checks, counters and
        reply as the general path, but the reply is copied from the request and written to the
        link before this returns, with no parsed-message or packet-info objects on the way."""
        st = self.s4
        st["received"] += 1
        if not (trusted or nic.rx_trusted) and not _verify(msg):
            st.malformed("bad-checksum")
            return
        if not self.echo_reply_enabled:
            st.drop("echo-not-unicast")
            return
        stack = self.stack
        if dst not in stack._local and not nic.echo_any:
            st.drop("echo-not-local")
            return
        try:
            route = find_route(stack, src, dst, None if nic.loopback else nic)
        except NetstackError:
            st.drop("no-route")
            return
        n = len(msg)
        off = route.headroom
        buf = bytearray(off + n)
        buf[off:] = msg
        # type 0 (echo reply), code 0, checksum recomputed; identifier, sequence, data kept
        buf[off] = buf[off + 1] = buf[off + 2] = buf[off + 3] = 0
        csum = _checksum(memoryview(buf)[off:])
        buf[off + 2] = csum >> 8
        buf[off + 3] = csum & 0xFF
        stack.ipv4.send(route, buf, n, PROTO_ICMP)
        st["echo-reply-sent"] += 1

    def echo_reply4(self, nic: NIC, src: bytes, msg: memoryview, trusted: bool = False
                    ) -> None:
        """The fast path of ``deliver4`` for an ICMPv4 echo reply (``msg``: the whole message,
        at least 8 bytes, type 0): straight to the endpoint owning its identifier."""
        st = self.s4
        st["received"] += 1
        if not (trusted or nic.rx_trusted) and not _verify(msg):
            st.malformed("bad-checksum")
            return
        ep = self.echo.get((4, (msg[4] << 8) | msg[5]))
        if ep is None:
            st.drop("no-endpoint")
            return
        ep.replies.append((src, (msg[6] << 8) | msg[7], bytes(msg[8:]), self.stack.now()))
        ep.waiter.notify(EVENT_IN)

    # -- ICMPv6 ingress ------------------------------------------------------------------------
    def deliver6(self, pkt: PacketInfo, payload: memoryview) -> None:
        st = self.s6
        st["received"] += 1
        try:
            msg = I6.parse_icmpv6(payload, pkt.src, pkt.dst,
                                  verify_checksum=not pkt.trusted)
        except MalformedPacket as exc:
            st.malformed(exc.reason)
            return
        t = msg.type
        if t == I6.ECHO_REQUEST:
            if not self.echo_reply_enabled:
                return
            if not self._echo_allowed(pkt):
                st.drop("echo-not-local")
                return
            self._reply(pkt, 6, msg.rest, msg.payload)
        elif t == I6.ECHO_REPLY:
            ep = self.echo.get((6, msg.ident))
            if ep is None:
                st.drop("no-endpoint")
                return
            ep.replies.append((pkt.src, msg.sequence, bytes(msg.payload), self.stack.now()))
            ep.waiter.notify(EVENT_IN)
        elif t < 128:
            st[f"error-received.{t}"] += 1
            inner = msg.payload
            if len(inner) < 48 or inner[0] >> 4 != 6:
                st.malformed("bad-quote")
                return
            src = bytes(inner[8:24])
            dst = bytes(inner[24:40])
            proto = inner[6]
            mtu = 0
            if t == I6.DEST_UNREACH:
                kind = _V6_UNREACH_KIND.get(msg.code, "host-unreachable")
            elif t == I6.PACKET_TOO_BIG:
                kind = "frag-needed"
                mtu = msg.rest
                if src in self.stack._local:  # only about packets we sent
                    update_pmtu(self.stack, dst, mtu)
            elif t == I6.TIME_EXCEEDED:
                kind = "time-exceeded"
            elif t == I6.PARAM_PROBLEM:
                kind = "param-problem" if msg.code != 1 else "proto-unreachable"
            else:
                return
            self._dispatch(IcmpError(6, t, msg.code, kind, src, dst, proto, inner[40:], mtu))
        elif 133 <= t <= 137:
            self.stack.ndp.deliver(pkt, msg)
        else:
            st.drop("unhandled-type")

    def _dispatch(self, err: IcmpError) -> None:
        stack = self.stack
        if err.src not in stack._local:
            (self.s4 if err.family == 4 else self.s6).drop("quote-not-ours")
            return
        if err.protocol in (PROTO_ICMP, PROTO_ICMPV6):
            ident = (err.l4[4] << 8) | err.l4[5]
            ep = self.echo.get((err.family, ident))
            if ep is not None and err.kind != "frag-needed":
                ep._error(err.dst, err.exception())
            return
        t = stack.transports.get(err.protocol)
        if t is not None:
            t.icmp_error(err)

    def _echo_allowed(self, pkt: PacketInfo) -> bool:
        """An echo request to an address that is not ours (a promiscuous NIC) is answered only
        when the NIC says so (``NIC.echo_any``), from that address."""
        return (pkt.cast != UNICAST or pkt.dst in self.stack._local or pkt.nic.echo_any)

    def _reply(self, pkt: PacketInfo, family: int, rest: int, payload: memoryview) -> None:
        stack = self.stack
        src = pkt.dst if pkt.cast == UNICAST else None
        try:
            route = find_route(stack, pkt.src, src, pkt.nic if not pkt.nic.loopback else None)
        except NetstackError:
            (self.s4 if family == 4 else self.s6).drop("no-route")
            return
        n = 8 + len(payload)
        buf = route.new_packet(n)
        if family == 4:
            I4.pack_icmpv4(buf, route.headroom, I4.ECHO_REPLY, 0, rest, payload)
            send_ip(stack, route, buf, n, PROTO_ICMP)
            self.s4["echo-reply-sent"] += 1
        else:
            I6.pack_icmpv6(buf, route.headroom, route.local, pkt.src, I6.ECHO_REPLY, 0, rest,
                           payload)
            send_ip(stack, route, buf, n, PROTO_ICMPV6)
            self.s6["echo-reply-sent"] += 1

    # -- error generation ------------------------------------------------------------------------
    def send_unreachable(self, pkt: PacketInfo, kind: str) -> bool:
        """Destination unreachable about ``pkt``: ``kind`` is "port-unreachable",
        "admin-prohibited" or "host-unreachable" (RFC 792 / RFC 4443 §3.1 codes)."""
        codes = _UNREACH_CODES.get(kind)
        if codes is None:
            raise InvalidArgument(f"unknown unreachable kind {kind!r}")
        if pkt.family == 4:
            return self.send_error(pkt, I4.DEST_UNREACH, codes[0])
        return self.send_error(pkt, I6.DEST_UNREACH, codes[1])

    def send_error(self, pkt: PacketInfo, type_: int, code: int, rest: int = 0, *,
                   allow_multicast: bool = False) -> bool:
        """Send an ICMP error about ``pkt`` if the rules allow; True when sent."""
        stack = self.stack
        st = self.s4 if pkt.family == 4 else self.s6
        packet = pkt.packet
        src = pkt.src
        if pkt.cast != UNICAST and not allow_multicast:
            st["error-suppressed.not-unicast"] += 1
            return False
        if not any(src) or src[0] == 0xFF or (pkt.family == 4 and (
                src[0] >= 224 or src == b"\xff\xff\xff\xff")):
            st["error-suppressed.bad-source"] += 1
            return False
        if pkt.family == 4:
            if len(packet) >= 20:
                frag = ((packet[6] & 0x1F) << 8) | packet[7]
                if frag:
                    st["error-suppressed.fragment"] += 1
                    return False
                ihl = (packet[0] & 0x0F) * 4
                if packet[9] == PROTO_ICMP and len(packet) > ihl and (
                        packet[ihl] in _V4_ERROR_TYPES):
                    st["error-suppressed.about-error"] += 1
                    return False
        elif _icmpv6_error_type(packet):
            st["error-suppressed.about-error"] += 1
            return False
        if not self.bucket.take(stack.now()):
            st["error-rate-limited"] += 1
            return False
        # transparent mode: the error comes from the address the packet was sent to
        local = pkt.dst if pkt.dst in stack._local or (
            pkt.nic.promiscuous and pkt.nic.spoofing) else None
        try:
            route = find_route(stack, src, local)
        except (NoRoute, AddressNotAvailable, StackClosed):
            st.drop("no-route")
            return False
        if pkt.family == 4:
            quote = packet[: 576 - 28]
            n = 8 + len(quote)
            buf = route.new_packet(n)
            I4.pack_icmpv4(buf, route.headroom, type_, code, rest, quote)
            send_ip(stack, route, buf, n, PROTO_ICMP)
        else:
            quote = packet[: 1280 - 48]
            n = 8 + len(quote)
            buf = route.new_packet(n)
            I6.pack_icmpv6(buf, route.headroom, route.local, src, type_, code, rest, quote)
            send_ip(stack, route, buf, n, PROTO_ICMPV6)
        st[f"error-sent.{type_}"] += 1
        return True


def _icmpv6_error_type(packet: memoryview) -> bool:
    """True when the IPv6 ``packet`` carries an ICMPv6 error, behind any extension headers."""
    n = len(packet)
    if n < 40:
        return False
    nh = packet[6]
    off = 40
    for _ in range(17):
        if nh in (0, 43, 60):  # hop-by-hop, routing, destination options
            if off + 2 > n:
                return False
            nh, off = packet[off], off + ((packet[off + 1] + 1) << 3)
        elif nh == 44:  # fragment: only the first fragment holds the ICMPv6 header
            if off + 8 > n or ((packet[off + 2] << 8) | packet[off + 3]) & 0xFFF8:
                return False
            nh, off = packet[off], off + 8
        else:
            break
    return nh == PROTO_ICMPV6 and off < n and packet[off] < 128


def _plateau(total_length: int) -> int:
    """RFC 1191 §5 plateau table: the next plateau below a packet that did not fit."""
    for p in (32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68):
        if p < total_length:
            return p
    return 68
