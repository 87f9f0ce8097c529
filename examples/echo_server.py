"""An echo server on one stack and a client on another, joined in memory.

    python examples/echo_server.py

The server is ordinary asyncio streams code (``start_server``/``open_connection``), run on
userspace stacks instead of the kernel.  Swap ``link.pipe()`` for ``link.Tun("tun0")`` and the
same server answers real clients.
"""

from __future__ import annotations

import asyncio

from aionetstack import Stack, link


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    print(f"server: {peer[0]}:{peer[1]} done")


async def main() -> bytes:
    a_end, b_end = link.pipe(l2=True, delay=0.001, seed=1)
    async with Stack() as server_stack, Stack() as client_stack:
        server_stack.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        client_stack.add_nic(a_end, ["198.18.0.1/24", "fd00::1/64"])
        server = await server_stack.start_server(handle, None, 7)
        reader, writer = await client_stack.open_connection("fd00::2", 7)
        writer.write(b"hello over a userspace TCP/IP stack\n")
        writer.write_eof()
        reply = await reader.read()
        print(f"client: {reply.decode().strip()!r}")
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply


if __name__ == "__main__":
    asyncio.run(main())
