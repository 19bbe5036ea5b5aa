"""Event stores: the interface the broker writes through, and the in-memory store.

A store keeps four things: the event log (offset-ordered), each consumer's
registration (a subscriber or a group), each consumer's unfinished
deliveries (attempts, last error, whether its effect was already applied),
and each exactly-once consumer's state (the effects it committed).

Contract for implementers. The broker calls a store only from the event loop
thread. A method either does its work at once and returns the result
(``immediate = True``, as :class:`InMemoryEventStore` does), or *enqueues* the
work before returning and returns an awaitable of the result, executing work
in call order (as :class:`~lion_nb.patterns.SqliteEventStore` does). Call
order is what lets a subscription registered before a publish see it: keep it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Mapping, Sequence, TypeVar

from ._events_model import Effects, Event

__all__ = [
    "PENDING", "ACKED", "DEAD", "ConsumerRecord", "PendingRecord", "StoreSnapshot",
    "EventStore", "InMemoryEventStore",
]

T = TypeVar("T")
MaybeAwaitable = T | Awaitable[T]

#: Delivery status codes, as stored.
PENDING, ACKED, DEAD = 0, 1, 2

#: (event, names of the consumers it is routed to)
Append = tuple[Event, Sequence[str]]
#: (consumer, offset, status, attempts, last_error) - an upsert
Update = tuple[str, int, int, int, "str | None"]
#: (consumer, offset, effects) - applied only if that delivery is not yet processed
EffectRow = tuple[str, int, Effects]


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    """A durable subscription: its name (subscriber or group), pattern and options."""

    name: str
    pattern: str
    filter: str | None = None          # a declarative filter survives restarts
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PendingRecord:
    """An unfinished delivery found when loading a store."""

    event: Event
    attempts: int
    last_error: str | None
    processed: bool


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What a broker needs when it opens: consumers, unfinished deliveries, recent keys."""

    consumers: list[ConsumerRecord]
    pending: dict[str, list[PendingRecord]]
    recent_keys: list[tuple[str, str, float]]   # (idempotency key, event id, timestamp)
    last_offset: int


class EventStore(ABC):
    """Where the broker keeps events and delivery state (see the module docstring)."""

    durable: bool = False
    immediate: bool = False
    #: False when the store keeps no delivery state (acks and retries need no write).
    tracks_deliveries: bool = True

    @abstractmethod
    def write(self, appends: Sequence[Append] = (), updates: Sequence[Update] = (),
              effects: Sequence[EffectRow] = ()) -> MaybeAwaitable[tuple[list[int | None],
                                                                        list[bool]]]:
        """Apply one atomic change; return (offsets of appends, effects applied).

        An append whose event id is already stored gets offset None and
        creates nothing (publisher de-duplication by id). An effect row is
        applied, and its delivery marked processed, only if that delivery is
        still unfinished and not yet processed. If an effect raises, nothing
        in the write is applied and the error propagates.
        """

    @abstractmethod
    def load(self, keys_since: float) -> MaybeAwaitable[StoreSnapshot]:
        """Everything a broker needs to resume; keys stamped at or after ``keys_since``."""

    @abstractmethod
    def register_consumer(self, record: ConsumerRecord) -> MaybeAwaitable[None]:
        """Create or update a consumer's registration."""

    @abstractmethod
    def drop_consumer(self, name: str) -> MaybeAwaitable[None]:
        """Forget a consumer: its registration, unfinished deliveries and state."""

    @abstractmethod
    def read(self, from_offset: int | None = None, since: float | None = None,
             limit: int | None = None) -> MaybeAwaitable[list[Event]]:
        """Logged events in offset order, from ``from_offset`` and/or time ``since``."""

    @abstractmethod
    def state(self, consumer: str) -> MaybeAwaitable[dict[str, Any]]:
        """A copy of the state an exactly-once consumer committed through effects."""

    @abstractmethod
    def close(self) -> MaybeAwaitable[None]:
        """Finish queued work and release resources (idempotent)."""


def _apply_effects(state: dict[str, Any], effects: Effects) -> dict[str, Any]:
    """The state after ``effects``: a mapping of puts, or a function editing a copy."""
    new = copy.deepcopy(state)
    if callable(effects):
        effects(new)
    else:
        new.update(effects)
    return new


class InMemoryEventStore(EventStore):
    """Keeps the log and exactly-once state in this process (the seed's ``InMemoryEventStore``).

    Not durable, and it does not track deliveries: the broker's own memory
    already holds them, and skipping a second copy halves the cost of a
    publish-deliver-ack round trip. So a new broker given the same store can
    replay the log but starts with no subscriptions. Use
    :class:`~lion_nb.patterns.SqliteEventStore` to survive restarts.
    """

    immediate = True
    tracks_deliveries = False

    def __init__(self) -> None:
        self._events: dict[int, Event] = {}
        self._ids: dict[str, int] = {}
        self._last = 0
        self._state: dict[str, dict[str, Any]] = {}
        # (consumer, offset) whose effect is committed and whose ack has not come yet
        self._processed: set[tuple[str, int]] = set()

    def write(self, appends: Sequence[Append] = (), updates: Sequence[Update] = (),
              effects: Sequence[EffectRow] = ()) -> tuple[list[int | None], list[bool]]:
        """Apply one change at once (see :meth:`EventStore.write`).

        The broker only sends effect rows for deliveries it holds as pending,
        so "not yet processed" is all this store has to check.
        """
        applied: list[bool] = []
        if effects:
            staged: dict[str, dict[str, Any]] = {}
            marks = []
            for consumer, offset, fx in effects:
                if (consumer, offset) in self._processed:
                    applied.append(False)
                    continue
                base = staged.get(consumer, self._state.get(consumer, {}))
                staged[consumer] = _apply_effects(base, fx)  # may raise: nothing changed yet
                marks.append((consumer, offset))
                applied.append(True)
            self._state.update(staged)
            self._processed.update(marks)
        offsets: list[int | None] = []
        for event, _consumers in appends:
            if event.id in self._ids:
                offsets.append(None)
                continue
            self._last = offset = self._last + 1
            event.offset = offset
            self._events[offset] = event
            self._ids[event.id] = offset
            offsets.append(offset)
        if self._processed:
            for consumer, offset, status, _attempts, _error in updates:
                if status != PENDING:
                    self._processed.discard((consumer, offset))
        return offsets, applied

    def load(self, keys_since: float) -> StoreSnapshot:
        """No consumers or deliveries (not tracked); recent idempotency keys from the log."""
        keys = []
        for event in reversed(self._events.values()):
            if (event.timestamp or 0.0) < keys_since:
                break
            if event.idempotency_key is not None:
                keys.append((event.idempotency_key, event.id, event.timestamp or 0.0))
        keys.reverse()
        return StoreSnapshot([], {}, keys, self._last)

    def register_consumer(self, record: ConsumerRecord) -> None:
        """Nothing to do: consumers live only in the broker."""

    def drop_consumer(self, name: str) -> None:
        """Forget a consumer's exactly-once state."""
        self._state.pop(name, None)
        self._processed = {k for k in self._processed if k[0] != name}

    def read(self, from_offset: int | None = None, since: float | None = None,
             limit: int | None = None) -> list[Event]:
        """Logged events in offset order."""
        out: list[Event] = []
        for offset, event in self._events.items():
            if from_offset is not None and offset < from_offset:
                continue
            if since is not None and (event.timestamp or 0.0) < since:
                continue
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
        return out

    def state(self, consumer: str) -> dict[str, Any]:
        """A copy of an exactly-once consumer's committed state."""
        return copy.deepcopy(self._state.get(consumer, {}))

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._events)

    def __bool__(self) -> bool:  # an empty store is still a store (`store or default`)
        return True

