"""A producer or consumer process for the cross-process tests (run by path, never imported).

    child.py produce URL NAME COUNT FIRST       publish events load.item ids ev-FIRST..
    child.py consume URL NAME MEMBER OUTFILE    group "workers": write the id, then ack

A consumer writes each event id to OUTFILE (flushed) *before* acking it, so a
kill between the two shows up as a duplicate, never as a loss.
"""

from __future__ import annotations

import asyncio
import os
import sys

from lion_nb.patterns import Event, EventBroker, EventBrokerConfig, NatsEventStore


async def produce(url: str, name: str, count: int, first: int) -> None:
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(url, name=name))
    async with broker:
        for i in range(first, first + count):
            await broker.publish(Event("load.item", i, id=f"ev-{i}"))
    print("published", count, flush=True)


async def consume(url: str, name: str, member: str, out: str) -> None:
    config = EventBrokerConfig(ack_timeout=1.0, max_deliveries=1000)
    broker = EventBroker(config).with_event_store(NatsEventStore(url, name=name))
    async with broker:
        rx, ack = await broker.subscribe("load.item", member, group="workers")
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        print("ready", flush=True)
        async for delivery in rx:
            os.write(fd, f"{delivery.id}\n".encode())
            await ack.success(delivery)


def main(argv: list[str]) -> None:
    role, url, name = argv[:3]
    if role == "produce":
        asyncio.run(produce(url, name, int(argv[3]), int(argv[4])))
    else:
        asyncio.run(consume(url, name, argv[3], argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
