"""Packets in, data out, with plain Python I/O and no asyncio.

    python examples/embed_packets.py

Two embedded stacks exchange IP packets through a loop the program writes itself (here: two
lists standing in for a VPN's encrypt/decrypt path).  One side runs an uppercase-echo service;
the other connects, sends a line and prints the answer.  Time is a manual clock, so the whole
exchange is deterministic.
"""

from __future__ import annotations

from aionetstack.clock import ManualClock
from aionetstack.embed import Embedded, Flow


def main() -> bytes:
    clock = ManualClock()
    server = Embedded(["198.18.0.2/24"], clock=clock, seed=1)
    client = Embedded(["198.18.0.1/24"], clock=clock, seed=2)

    def on_flow(flow: Flow) -> None:
        flow.on_data(lambda data: flow.send(data.upper())).on_end(flow.end)

    server.listen(7, on_flow)
    answer = bytearray()
    done: list[bool] = []
    flow = client.connect("198.18.0.2", 7)
    flow.on_data(answer.extend).on_close(lambda exc: done.append(True))
    flow.send(b"packets in, data out\n")
    flow.end()

    buf = bytearray(65536)  # a caller-provided buffer for outbound packets
    while not done:
        moved = False
        for src, dst in ((client, server), (server, client)):
            while n := src.write_into(buf):
                dst.feed(memoryview(buf)[:n])  # "the wire"
                moved = True
        deadlines = [d for d in (client.poll(), server.poll()) if d is not None]
        if not moved and deadlines:
            clock.set(max(clock.now, min(deadlines)))
    print(answer.decode().strip())
    return bytes(answer)


if __name__ == "__main__":
    main()
