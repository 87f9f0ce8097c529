"""Test an asyncio datagram protocol under loss, reordering and delay, all in memory.

    python examples/lossy_network.py

Two stacks are joined by an in-memory Ethernet link that drops 10% of frames, reorders 5%,
corrupts 1% and delays each by 20 ms.  A client sends numbered requests to an echo server and
retries on timeout; the run reports how many attempts each request needed.
"""

from __future__ import annotations

import asyncio

from aionetstack import Stack, link


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.transport.sendto(data, addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.replies.put_nowait(data)


async def main(requests: int = 50) -> dict[int, int]:
    a_end, b_end = link.pipe(l2=True, loss=0.1, reorder=0.05, corrupt=0.01, delay=0.02, seed=7)
    async with Stack() as server, Stack() as client:
        server.add_nic(b_end, ["198.18.0.2/24", "fd00::2/64"])
        client.add_nic(a_end, ["198.18.0.1/24", "fd00::1/64"])
        await server.create_datagram_endpoint(Echo, local_addr=("fd00::2", 7))
        tr, proto = await client.create_datagram_endpoint(Client, remote_addr=("fd00::2", 7))
        assert isinstance(proto, Client)
        attempts: dict[int, int] = {}
        for i in range(requests):
            msg = f"request {i}".encode()
            for attempt in range(1, 20):
                tr.sendto(msg)
                try:
                    while (await asyncio.wait_for(proto.replies.get(), 0.1)) != msg:
                        pass  # a late reply to an earlier request
                except TimeoutError:
                    continue
                attempts[i] = attempt
                break
        tr.close()
        stats = client.stats()
    retried = sum(1 for n in attempts.values() if n > 1)
    print(f"{len(attempts)}/{requests} requests answered, {retried} needed a retry")
    malformed = sum(c.get("malformed", 0) for c in stats.values() if isinstance(c, dict))
    print(f"client dropped {malformed} corrupted frames (checksums caught them)")
    return attempts


if __name__ == "__main__":
    asyncio.run(main())
