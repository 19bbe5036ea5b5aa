"""Helpers shared by the event broker tests."""

from __future__ import annotations

import asyncio
from typing import Any

from lion_nb.clock import FakeClock
from lion_nb.patterns import EventBroker, EventBrokerConfig, EventStore, InMemoryEventStore

__all__ = ["make_broker", "drain"]


def make_broker(store: EventStore | None = None, clock: FakeClock | None = None,
                **config: Any) -> tuple[EventBroker, FakeClock]:
    """A broker on a FakeClock (so timeouts are instant and exact)."""
    clock = clock or FakeClock()
    broker = EventBroker(EventBrokerConfig(**config), clock=clock)
    return broker.with_event_store(store if store is not None else InMemoryEventStore()), clock


async def drain(rx: Any) -> list[Any]:
    """Every delivery that is ready now, without waiting."""
    out = []
    while True:
        try:
            out.append(rx.recv_nowait())
        except asyncio.QueueEmpty:
            return out
