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
    """Keeps everything in this process (the seed's ``InMemoryEventStore``).

    Not durable, but a second broker given the same store object resumes
    exactly as it would from SQLite, which keeps both paths honest in tests.
    Finished deliveries are forgotten; the event log is kept for replay.
    """

    immediate = True

    def __init__(self) -> None:
        self._events: dict[int, Event] = {}
        self._ids: dict[str, int] = {}
        self._last = 0
        self._consumers: dict[str, ConsumerRecord] = {}
        # consumer -> offset -> [attempts, last_error, processed]
        self._pending: dict[str, dict[int, list[Any]]] = {}
        self._state: dict[str, dict[str, Any]] = {}

    def write(self, appends: Sequence[Append] = (), updates: Sequence[Update] = (),
              effects: Sequence[EffectRow] = ()) -> tuple[list[int | None], list[bool]]:
        """Apply one change at once (see :meth:`EventStore.write`)."""
        applied: list[bool] = []
        if effects:
            staged: dict[str, dict[str, Any]] = {}
            marks = []
            for consumer, offset, fx in effects:
                row = self._pending.get(consumer, {}).get(offset)
                if row is None or row[2]:
                    applied.append(False)
                    continue
                base = staged.get(consumer, self._state.get(consumer, {}))
                staged[consumer] = _apply_effects(base, fx)  # may raise: nothing changed yet
                marks.append(row)
                applied.append(True)
            self._state.update(staged)
            for row in marks:
                row[2] = True
        offsets: list[int | None] = []
        for event, consumers in appends:
            if event.id in self._ids:
                offsets.append(None)
                continue
            self._last += 1
            offset = self._last
            event.offset = offset
            self._events[offset] = event
            self._ids[event.id] = offset
            for name in consumers:
                self._pending.setdefault(name, {})[offset] = [0, None, False]
            offsets.append(offset)
        for consumer, offset, status, attempts, error in updates:
            rows = self._pending.setdefault(consumer, {})
            if status == PENDING:
                row = rows.get(offset)
                if row is None:
                    rows[offset] = [attempts, error, False]
                else:
                    row[0], row[1] = attempts, error
            else:
                rows.pop(offset, None)
        return offsets, applied

    def load(self, keys_since: float) -> StoreSnapshot:
        """Consumers, their unfinished deliveries and recent idempotency keys."""
        pending = {
            name: [PendingRecord(self._events[off], row[0], row[1], row[2])
                   for off, row in sorted(rows.items())]
            for name, rows in self._pending.items() if name in self._consumers
        }
        keys = []
        for event in reversed(self._events.values()):
            if (event.timestamp or 0.0) < keys_since:
                break
            if event.idempotency_key is not None:
                keys.append((event.idempotency_key, event.id, event.timestamp or 0.0))
        keys.reverse()
        return StoreSnapshot(list(self._consumers.values()), pending, keys, self._last)

    def register_consumer(self, record: ConsumerRecord) -> None:
        """Create or update a consumer's registration."""
        self._consumers[record.name] = record
        self._pending.setdefault(record.name, {})

    def drop_consumer(self, name: str) -> None:
        """Forget a consumer entirely."""
        self._consumers.pop(name, None)
        self._pending.pop(name, None)
        self._state.pop(name, None)

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

