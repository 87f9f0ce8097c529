"""The ICMP echo path of the sans-IO core, hot and with its caches emptied.

    python -m benchmarks.icmp_path [--hot N] [--cold N] [--evict MIB]

One IPv4 echo request is handed to a stack's NIC (``deliver_batch``, as an fd link does) on a
link that only counts what it is given; each call is timed with ``perf_counter``: the IP input,
ICMP, the route lookup and the IP output of the reply.  "Hot" runs the calls back to back;
"cold" first writes ``--evict`` MiB of other memory, so the path's code and data come from main
memory as after an idle spell (the kernel's pings to the stack are 2 ms apart).  Prints JSON with
the p50 of each, in microseconds.  No root, no network.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import time

from aionetstack.clock import ManualClock
from aionetstack.link.base import Frame, Link, LinkCaps, LinkReceiver, deliver_batch
from aionetstack.stack.stack import CoreStack
from benchmarks.common import inet_checksum


class _CountingL3(Link):
    """An IP-level link that counts the frames it is given and sends nothing."""

    def __init__(self) -> None:
        self.sent = 0

    @property
    def caps(self) -> LinkCaps:
        return LinkCaps(mtu=1500, l2=False)

    def attach(self, receiver: LinkReceiver, clock: object) -> None:
        pass

    def send(self, frame: Frame) -> None:
        self.sent += 1


def echo_request(src: str, dst: str, payload: int = 56) -> bytes:
    """An IPv4 ICMP echo request (``payload`` even), checksums filled in."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + bytes(payload)
    icmp = icmp[:2] + inet_checksum(icmp).to_bytes(2, "big") + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0x4000, 64, 1, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + inet_checksum(ip).to_bytes(2, "big") + ip[12:] + icmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hot", type=int, default=20000, help="back-to-back calls")
    ap.add_argument("--cold", type=int, default=300, help="calls after an eviction each")
    ap.add_argument("--evict", type=int, default=64, help="MiB written before a cold call")
    a = ap.parse_args()
    stack = CoreStack(clock=ManualClock(), rng=random.Random(1))
    link = _CountingL3()
    nic = stack.add_nic(link, ["198.18.0.2/24"])
    pkt = echo_request("198.18.0.1", "198.18.0.2")
    junk = bytearray(a.evict << 20)
    fill = [bytes([i]) * len(junk) for i in range(2)]
    out: dict[str, float] = {}
    pc = time.perf_counter
    for mode, n in (("hot", a.hot), ("cold", a.cold)):
        times = []
        for i in range(n):
            if mode == "cold":
                junk[:] = fill[i & 1]
            t = pc()
            deliver_batch(nic, [memoryview(pkt)])
            times.append(pc() - t)
        times.sort()
        out[f"{mode}_p50_us"] = times[len(times) // 2] * 1e6
    if link.sent != a.hot + a.cold:
        raise SystemExit(f"expected {a.hot + a.cold} replies, the link got {link.sent}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
