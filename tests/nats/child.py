"""A producer or consumer process for the cross-process tests (run by path, never imported).

    child.py produce URL NAME COUNT FIRST       publish events load.item ids ev-FIRST..
    child.py consume URL NAME MEMBER OUTFILE    group "workers": write the id, then ack
    child.py publish URL NAME TOPIC JSON        publish one event
    child.py count URL NAME MEMBER              exactly-once group "counters": n += 1 per event
    child.py crash URL NAME MEMBER WHERE        take one event, then die (os._exit) right
                                                "before" or "after" committing its effect

A consumer writes each event id to OUTFILE (flushed) *before* acking it, so a
kill between the two shows up as a duplicate, never as a loss.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from lion_nb.patterns import (
    DeliveryMode, Event, EventBroker, EventBrokerConfig, NatsEventStore,
)


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


async def publish_one(url: str, name: str, topic: str, payload: str) -> None:
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(url, name=name))
    async with broker:
        await broker.publish(Event(topic, json.loads(payload)))


async def count(url: str, name: str, member: str) -> None:
    config = EventBrokerConfig(ack_timeout=1.0, max_deliveries=1000,
                               delivery_mode=DeliveryMode.EXACTLY_ONCE)
    broker = EventBroker(config).with_event_store(NatsEventStore(url, name=name))

    def bump(state: dict) -> None:
        state["n"] = state.get("n", 0) + 1

    async with broker:
        rx, ack = await broker.subscribe("load.item", member, group="counters")
        print("ready", flush=True)
        async for delivery in rx:
            await ack.success(delivery, effects=bump)


async def crash(url: str, name: str, member: str, where: str) -> None:
    config = EventBrokerConfig(ack_timeout=1.0, max_deliveries=1000,
                               delivery_mode=DeliveryMode.EXACTLY_ONCE)
    broker = EventBroker(config).with_event_store(NatsEventStore(url, name=name))

    def bump(state: dict) -> None:
        state["n"] = state.get("n", 0) + 1

    await broker.__aenter__()
    rx, ack = await broker.subscribe("load.item", member, group="counters")
    print("ready", flush=True)
    delivery = await rx.recv()
    if where == "after":
        assert await broker.apply_effect(member, delivery, bump)
    print("dying", delivery.id, flush=True)
    os._exit(9)   # no ack, no close: a crash at this commit boundary


def main(argv: list[str]) -> None:
    role, url, name = argv[:3]
    if role == "crash":
        asyncio.run(crash(url, name, argv[3], argv[4]))
    elif role == "count":
        asyncio.run(count(url, name, argv[3]))
    elif role == "publish":
        asyncio.run(publish_one(url, name, argv[3], argv[4]))
    elif role == "produce":
        asyncio.run(produce(url, name, int(argv[3]), int(argv[4])))
    else:
        asyncio.run(consume(url, name, argv[3], argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
