"""A transparent proxy on a TUN device: every TCP connection and UDP flow routed into the device
is relayed to its real destination through this host's own sockets.

    sudo python examples/proxy_server.py --create       # tun0, kernel side 198.18.0.1/24
    sudo ip route add 198.19.0.0/16 dev tun0             # send some destinations through it
    curl http://198.19.0.2/                              # now goes via the proxy

The stack has no address of its own: its NIC is transparent (promiscuous + spoofing), so it
answers for whatever destination each flow was sent to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aionetstack import Stack, link
from aionetstack.asyncio.forward import DatagramFlow, ForwardedConnection, ForwardedDatagrams
from aionetstack.errors import ClosedForReceive


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()  # pass the half-close on


async def on_tcp(conn: ForwardedConnection) -> None:
    try:  # connect upstream first: a refused destination gets a RST, as if it answered itself
        up_reader, up_writer = await asyncio.open_connection(*conn.local)
    except OSError:
        conn.reject()
        return
    reader, writer = await conn.accept()
    print(f"tcp {conn.remote} -> {conn.local}", flush=True)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    writer.close()
    up_writer.close()


class Back(asyncio.DatagramProtocol):
    def __init__(self, flow: DatagramFlow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):  # (the flow may have ended)
            self.flow.send(data, source=(addr[0], addr[1]))  # from where the reply came


async def on_udp(req: ForwardedDatagrams) -> None:
    flow = req.accept()  # every datagram of this client port, to any destination
    loop = asyncio.get_running_loop()
    host = "::" if ":" in req.local[0] else "0.0.0.0"
    sock, _ = await loop.create_datagram_endpoint(lambda: Back(flow), local_addr=(host, 0))
    print(f"udp {req.remote} -> {req.local}", flush=True)
    with contextlib.suppress(ClosedForReceive):  # ends after 60 s without traffic
        while True:
            data, dst = await flow.recv()
            sock.sendto(data, dst)
    sock.close()


async def main(args: argparse.Namespace) -> None:
    if args.create:
        dev = link.Tun.create(args.name, peer_address=["198.18.0.1/24", "fd00::1/64"],
                              netns=args.netns)
    else:
        dev = link.Tun(args.name)
    async with Stack() as stack:
        nic = stack.add_nic(dev)
        stack.add_route("0.0.0.0/0", nic=nic)  # replies go back into the device
        stack.add_route("::/0", nic=nic)
        stack.tcp_forwarder(on_tcp, nic=nic)
        stack.udp_forwarder(on_udp, nic=nic, idle_timeout=60)
        print(f"proxying everything routed into {args.name}", flush=True)
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="tun0")
    p.add_argument("--create", action="store_true")
    p.add_argument("--netns", help="with --create: put the device's kernel side in this netns")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: forever)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(p.parse_args()))
