"""Helpers shared by the event broker tests."""

from __future__ import annotations

import asyncio
from typing import Any

from lion_nb.clock import FakeClock
from lion_nb.patterns import EventBroker, EventBrokerConfig, EventStore, InMemoryEventStore

__all__ = ["make_broker", "drain", "close_all"]

# Brokers made by make_broker, with the loop they run on: the conftest closes them after each
# test, so a failing assert never leaves a timer task or an open store behind.
_made: list[tuple[EventBroker, asyncio.AbstractEventLoop | None]] = []


def make_broker(store: EventStore | None = None, clock: FakeClock | None = None,
                **config: Any) -> tuple[EventBroker, FakeClock]:
    """A broker on a FakeClock (so timeouts are instant and exact), closed after the test."""
    clock = clock or FakeClock()
    broker = EventBroker(EventBrokerConfig(**config), clock=clock)
    broker.with_event_store(store if store is not None else InMemoryEventStore())
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    _made.append((broker, loop))
    return broker, clock


async def close_all() -> None:
    """Close every broker made on this loop that the test left open."""
    here = asyncio.get_running_loop()
    made, _made[:] = list(_made), []
    for broker, loop in made:
        if loop is here and not broker.closed:
            await broker.close()


async def drain(rx: Any) -> list[Any]:
    """Every delivery that is ready now, without waiting."""
    out = []
    while True:
        try:
            out.append(rx.recv_nowait())
        except asyncio.QueueEmpty:
            return out
