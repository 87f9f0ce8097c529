"""An echo server on a TUN device: the kernel (or anything routed to the device) connects to it.

    sudo python examples/tun_echo.py --create     # tun0, kernel side 198.18.0.1/24
    # then, from the kernel: nc 198.18.0.2 7
    sudo python examples/tun_echo.py --netns demo --create   # the same inside a namespace

The stack owns 198.18.0.2/24 and fd00::2/64 on the device; the kernel side gets .1 / ::1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aionetstack import Stack, link


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main(args: argparse.Namespace) -> None:
    if args.create:
        dev = link.Tun.create(args.name, peer_address=["198.18.0.1/24", "fd00::1/64"],
                              netns=args.netns)
    else:
        dev = link.Tun(args.name)
    async with Stack() as stack:
        stack.add_nic(dev, ["198.18.0.2/24", "fd00::2/64"])
        server = await stack.start_server(handle, None, args.port)
        print(f"echo on 198.18.0.2:{args.port} and [fd00::2]:{args.port} via {args.name}",
              flush=True)
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="tun0")
    p.add_argument("--create", action="store_true")
    p.add_argument("--netns")
    p.add_argument("--port", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: forever)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(p.parse_args()))
