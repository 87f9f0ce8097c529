"""httpx fetching across a userspace network: an HTTP server on one stack, httpx on another.

    python examples/http_client.py
"""

from __future__ import annotations

import asyncio

import h11
import httpx

from aionetstack import Stack, link
from aionetstack.compat.httpcore import httpx_transport


async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server (h11 does the parsing) that names the path it was asked for."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Request):
            body = f"you asked for {event.target.decode()}\n".encode()
            writer.write(conn.send(h11.Response(status_code=200, headers=[
                ("content-length", str(len(body))), ("content-type", "text/plain")])) or b"")
            writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        elif isinstance(event, h11.EndOfMessage) and conn.our_state is h11.DONE:
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            break
    writer.close()


async def main() -> list[str]:
    a_end, b_end = link.pipe(seed=1)
    async with Stack() as client_stack, Stack() as server_stack:
        client_stack.add_nic(a_end, ["198.18.0.1/24"])
        server_stack.add_nic(b_end, ["198.18.0.2/24"])
        server = await server_stack.start_server(http_server, "198.18.0.2", 80)
        bodies = []
        async with httpx.AsyncClient(transport=httpx_transport(client_stack)) as client:
            for path in ("/", "/hello"):  # both requests reuse one keep-alive connection
                r = await client.get(f"http://198.18.0.2{path}")
                print(r.status_code, r.text.strip())
                bodies.append(r.text)
        server.close()
        await server.wait_closed()
        return bodies


if __name__ == "__main__":
    asyncio.run(main())
