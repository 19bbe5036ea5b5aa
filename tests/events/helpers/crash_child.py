"""Child process for the commit-boundary tests: stops itself at the N-th store commit step.

Usage: python crash_child.py DB_PATH STEP N
STEP is "before_commit" or "after_commit". Publishes five events (one transaction each)
to an at-least-once subscriber "plain" and an exactly-once subscriber "sums", then acks
each delivery ("sums" with an effect adding the payload's n). Prints "published <id>",
"acking <sub> <id>" and "acked <sub> <id>" lines, flushed, so the parent knows what
returned before the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from lion_nb.patterns import (
    DeliveryMode, Event, EventAck, EventBroker, EventBrokerConfig, SqliteEventStore,
)


def say(*words: str) -> None:
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def add(n: int):
    def effect(state: dict) -> None:
        state["sum"] = state.get("sum", 0) + n
        state["count"] = state.get("count", 0) + 1
    return effect


async def main(db: str, step: str, n: int) -> None:
    store = SqliteEventStore(db)
    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        if name == step:
            seen += 1
            if seen == n:
                os.kill(os.getpid(), signal.SIGKILL)

    store.step_hook = hook
    broker = EventBroker(EventBrokerConfig()).with_event_store(store)
    plain_rx, plain_ack = await broker.subscribe("job", "plain")
    sums_rx, sums_ack = await broker.subscribe("job", "sums", mode=DeliveryMode.EXACTLY_ONCE)
    for i in range(1, 6):
        say("published", await broker.publish(Event("job", {"n": i})))
    for _ in range(5):
        d = await plain_rx.recv()
        say("acking", "plain", d.id)
        await plain_ack.send(EventAck.success(d, "plain"))
        say("acked", "plain", d.id)
        d = await sums_rx.recv()
        say("acking", "sums", d.id)
        await sums_ack.send(EventAck.success(d, "sums", effects=add(d.payload["n"])))
        say("acked", "sums", d.id)
    say("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
