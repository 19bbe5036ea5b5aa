"""Child process for the SIGKILL test: publish a batch, then consume and ack until killed.

Usage: python sigkill_child.py DB_PATH N_EVENTS
Prints "published <id>" per event once the batch is committed, "acking <id>"
just before each ack and "acked <id>" once the ack is durable.
"""

from __future__ import annotations

import asyncio
import sys

from lion_nb.patterns import Event, EventAck, EventBroker, EventBrokerConfig, SqliteEventStore


def say(*words: str) -> None:
    """One line to the parent, flushed at once so a kill cannot hide it."""
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


async def main(db: str, n: int) -> None:
    broker = EventBroker(EventBrokerConfig()).with_event_store(SqliteEventStore(db))
    rx, ack_tx = await broker.subscribe("job.run", "worker", None)
    ids = await broker.publish_many([Event("job.run", {"n": i}) for i in range(n)])
    for event_id in ids:
        say("published", event_id)
    async for delivery in rx:
        say("acking", delivery.id)
        await ack_tx.send(EventAck.success(delivery, "worker"))
        say("acked", delivery.id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
