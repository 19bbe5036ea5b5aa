"""A store that owns delivery, as a message server does: the EventStore contract, in-process.

It plays the server's part (routing by pattern, ack wait, max deliver, nak with delay,
de-duplication by id) with the event loop's real timers, so the broker can be tested
against a delivery-owning store without one. A real server's store (NATS JetStream)
passes the same tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lion_nb.errors import EventError
from lion_nb.patterns.events import (
    ACKED, DEAD, PENDING, ConsumerRecord, ConsumerSink, Event, EventStore, StoreSnapshot,
    TopicPattern,
)

__all__ = ["ServerStore"]


class _Consumer:
    def __init__(self, record: ConsumerRecord) -> None:
        self.record = record
        self.pattern = TopicPattern(record.pattern)
        self.sink: ConsumerSink | None = None
        self.open: dict[str, list[Any]] = {}     # event id -> [event, attempts, timer]


class ServerStore(EventStore):
    """Routes, times out, redelivers and dead-letters itself (``owns_delivery = True``)."""

    immediate = True
    owns_delivery = True

    def __init__(self) -> None:
        self.log: dict[int, Event] = {}
        self.ids: set[str] = set()
        self.consumers: dict[str, _Consumer] = {}
        self.verdicts: list[tuple[str, str, int, float | None, str | None]] = []

    def write(self, appends: Any = (), updates: Any = (), effects: Any = ()) -> Any:
        assert not updates, "a delivery-owning store is never sent delivery updates"
        if effects:
            raise EventError("this store cannot commit effects with its delivery state")
        offsets: list[int | None] = []
        for event, consumers in appends:
            assert not consumers, "the store routes, not the broker"
            if event.id in self.ids:
                offsets.append(None)
                continue
            offset = len(self.log) + 1
            self.log[offset] = event
            self.ids.add(event.id)
            offsets.append(offset)
            for c in self.consumers.values():
                if c.pattern.matches(event.topic):
                    c.open[event.id] = [event, 0, None]
                    if c.sink is not None:
                        asyncio.get_running_loop().call_soon(self._push, c, event.id)
        return offsets, []

    def _push(self, c: _Consumer, event_id: str) -> None:
        entry = c.open.get(event_id)
        if entry is None or c.sink is None:
            return
        entry[1] += 1
        if entry[2] is not None:
            entry[2].cancel()
        entry[2] = asyncio.get_running_loop().call_later(
            c.record.options["ack_timeout"], self._ack_wait_over, c, event_id, entry[1])
        c.sink.deliver(c.record.name, entry[0], entry[1])

    def _ack_wait_over(self, c: _Consumer, event_id: str, attempt: int) -> None:
        entry = c.open.get(event_id)
        if entry is None or entry[1] != attempt:
            return
        if attempt >= c.record.options["max_deliveries"]:
            del c.open[event_id]
            if c.sink is not None:
                c.sink.dead_lettered(c.record.name, entry[0], attempt, "ack wait exceeded")
            return
        self._push(c, event_id)

    def settle(self, consumer: str, event: Event, outcome: int, attempts: int,
               delay: float | None = None, error: str | None = None) -> None:
        self.verdicts.append((consumer, event.id, outcome, delay, error))
        c = self.consumers[consumer]
        entry = c.open.get(event.id)
        if entry is None:
            return
        if entry[2] is not None:
            entry[2].cancel()
        if outcome in (ACKED, DEAD):
            del c.open[event.id]
        else:
            assert outcome == PENDING
            entry[2] = asyncio.get_running_loop().call_later(delay or 0.0, self._push, c,
                                                             event.id)

    def load(self, keys_since: float) -> StoreSnapshot:
        return StoreSnapshot([c.record for c in self.consumers.values()], {}, [])

    def register_consumer(self, record: ConsumerRecord) -> None:
        old = self.consumers.get(record.name)
        c = _Consumer(record)
        if old is not None:
            c.open = old.open
        self.consumers[record.name] = c

    def attach(self, consumer: str, sink: ConsumerSink) -> None:
        c = self.consumers[consumer]
        c.sink = sink
        for event_id in list(c.open):
            asyncio.get_running_loop().call_soon(self._push, c, event_id)

    def detach(self, consumer: str) -> None:
        self.consumers[consumer].sink = None

    def drop_consumer(self, name: str) -> None:
        c = self.consumers.pop(name, None)
        for entry in (c.open.values() if c else ()):
            if entry[2] is not None:
                entry[2].cancel()

    def read(self, from_offset: int | None = None, since: float | None = None,
             limit: int | None = None) -> list[Event]:
        return [e for o, e in self.log.items() if o >= (from_offset or 0)][:limit]

    def state(self, consumer: str) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        for c in self.consumers.values():
            c.sink = None
            for entry in c.open.values():
                if entry[2] is not None:
                    entry[2].cancel()
