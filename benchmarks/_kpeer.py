"""A kernel-socket peer for the namespace cases, run as its own process (blocking sockets).

    python -m benchmarks._kpeer sink   HOST PORT [--rcvbuf N] [--cc NAME]
    python -m benchmarks._kpeer source HOST PORT SECONDS [--sndbuf N] [--cc NAME]
    python -m benchmarks._kpeer echo   HOST PORT [--cc NAME]
    python -m benchmarks._kpeer nooffload DEV [DEV ...]

``sink`` and ``echo`` print ``READY`` once listening.  ``sink`` accepts one connection, reads
until EOF and prints ``RESULT {"bytes": .., "secs": ..}`` (from accept to EOF); ``source``
connects, sends for SECONDS and prints the same.  ``echo`` serves connections (single-threaded,
selectors) until killed.  ``nooffload`` turns TSO, GSO and GRO off on network devices (the legacy
SIOCETHTOOL commands, so no ethtool binary is needed).  Usually started with ``ip netns exec NS``.

Every socket uses the congestion control ``--cc`` names, by default ``KERNEL_CC``: CUBIC, the
stack's default, so that the kernel baselines run the same algorithm as the stack rather than the
machine's default (``bbr`` on these VMs, whose pacing and loss-blindness change bulk throughput
by up to 1.7x and goodput under loss by about 35x).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import selectors
import socket
import struct
import sys
import time

KERNEL_CC = "cubic"


def set_cc(s: socket.socket, cc: str) -> None:
    """TCP_CONGESTION on ``s`` (accepted sockets inherit a listener's); a clear error when the
    kernel lacks the algorithm."""
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    except OSError as exc:
        raise SystemExit(f"congestion control {cc!r} not available: {exc} (see "
                         "/proc/sys/net/ipv4/tcp_available_congestion_control)") from exc


def _listen(host: str, port: int, rcvbuf: int | None = None,
            cc: str = KERNEL_CC) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    set_cc(s, cc)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((host, port))
    s.listen(1024)
    print("READY", flush=True)
    return s


def sink(host: str, port: int, rcvbuf: int | None, cc: str = KERNEL_CC) -> None:
    ls = _listen(host, port, rcvbuf, cc)
    c, _ = ls.accept()
    t0 = time.perf_counter()
    buf = bytearray(1 << 20)
    got = 0
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        got += n
    secs = time.perf_counter() - t0
    c.close()
    print("RESULT " + json.dumps({"bytes": got, "secs": secs}), flush=True)


def source(host: str, port: int, seconds: float, sndbuf: int | None,
           cc: str = KERNEL_CC) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    set_cc(s, cc)
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.connect((host, port))
    chunk = bytes(1 << 18)
    t0 = time.perf_counter()
    end = t0 + seconds
    sent = 0
    while time.perf_counter() < end:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
    print("RESULT " + json.dumps({"bytes": sent, "secs": time.perf_counter() - t0}), flush=True)


def echo(host: str, port: int, cc: str = KERNEL_CC) -> None:
    """A single-threaded, non-blocking echo server (selectors); runs until killed."""
    ls = _listen(host, port, cc=cc)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is ls:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)  # small echoes: the send buffer always has room
                    continue
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()


SIOCETHTOOL = 0x8946
ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO = 0x1F, 0x24, 0x2C
ETHTOOL_GTSO, ETHTOOL_GGSO, ETHTOOL_GGRO = 0x1E, 0x23, 0x2B


def _ethtool(sock: socket.socket, dev: str, cmd: int, value: int = 0) -> int:
    data = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifr = struct.pack("16sP", dev.encode(), ctypes.addressof(data)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return int(struct.unpack("II", data.raw[:8])[1])


def nooffload(devs: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for dev in devs:
            for cmd in (ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO):
                _ethtool(s, dev, cmd, 0)
            left = [_ethtool(s, dev, g) for g in (ETHTOOL_GTSO, ETHTOOL_GGSO, ETHTOOL_GGRO)]
            if any(left):
                raise SystemExit(f"{dev}: offloads still on (tso, gso, gro) = {left}")
    print("RESULT " + json.dumps({"devices": devs}), flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "nooffload":
        nooffload(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["sink", "source", "echo"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("seconds", type=float, nargs="?", default=1.0)
    ap.add_argument("--rcvbuf", type=int, default=None)
    ap.add_argument("--sndbuf", type=int, default=None)
    ap.add_argument("--cc", default=KERNEL_CC, help="TCP_CONGESTION (default %(default)s)")
    a = ap.parse_args()
    if a.mode == "sink":
        sink(a.host, a.port, a.rcvbuf, a.cc)
    elif a.mode == "source":
        source(a.host, a.port, a.seconds, a.sndbuf, a.cc)
    else:
        echo(a.host, a.port, a.cc)


if __name__ == "__main__":
    main()
