"""The event-store interface the broker writes through, and the in-memory store.

A store keeps the event log (offset-ordered), each consumer's registration (a
subscriber or a group), each consumer's unfinished deliveries (attempts, last
error, whether its effect was applied), and each exactly-once consumer's state
(the effects it committed). :class:`EventStore` is the contract; a new durable
backend implements it without any change to the broker.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeAlias, TypeVar, Union

from ._model import Effects, Event

__all__ = [
    "PENDING", "ACKED", "DEAD", "ConsumerRecord", "PendingRecord", "DamagedRecord",
    "StoreSnapshot", "ConsumerSink", "EventStore", "InMemoryEventStore",
]

T = TypeVar("T")
MaybeAwaitable: TypeAlias = Union[T, Awaitable[T]]

#: Delivery status codes, as stored.
PENDING, ACKED, DEAD = 0, 1, 2

#: (event, names of the consumers it is routed to)
Append = tuple[Event, Sequence[str]]
#: (consumer, offset, status, attempts, last_error) - an upsert
Update = tuple[str, "int | None", int, int, "str | None"]
#: (consumer, offset, effects) - applied only if that delivery is not yet processed
EffectRow = tuple[str, "int | None", Effects]


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
class DamagedRecord:
    """An unfinished delivery whose stored event failed its checksum or did not decode."""

    consumer: str
    offset: int
    event_id: str
    topic: str
    error: str                          # what was wrong, for the dead letter


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What a broker needs when it opens: consumers, unfinished deliveries, recent keys."""

    consumers: list[ConsumerRecord]
    pending: dict[str, list[PendingRecord]]
    recent_keys: list[tuple[str, str, float]]   # (idempotency key, event id, timestamp)
    damaged: list[DamagedRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConsumerSink:
    """Callbacks a delivery-owning store calls on the broker's event loop (see EventStore)."""

    #: ``deliver(consumer, event, attempt)``: hand this attempt (1-based) to the consumer.
    deliver: Callable[[str, Event, int], None]
    #: ``dead_lettered(consumer, event, attempts, last_error)``: the store gave up on it.
    dead_lettered: Callable[[str, Event, int, "str | None"], None]


class EventStore(ABC):
    """Where the broker keeps events and delivery state: the contract for implementers.

    **Threads and order.** The broker calls a store only from its event loop
    thread. Each method either does its work at once and returns the result
    (``immediate = True``, as :class:`InMemoryEventStore`), or *enqueues* the
    work before returning and returns an awaitable of the result (as
    :class:`~lion_nb.patterns.SqliteEventStore`). Work runs in call order: a
    consumer registered before a publish must see that event. An awaited
    result means the change is durable (``durable = True``) or applied.

    **Two ways to share delivery.** By default (``owns_delivery = False``) the
    broker runs delivery: it routes each appended event to consumers by
    pattern and filter, hands deliveries out, times out unacked ones (ack
    timeout), redelivers with the backoff, counts attempts and dead-letters
    after ``max_deliveries``; the store only records that state through
    :meth:`write` (an ``Update`` per change) and gives it back in :meth:`load`.
    ``tracks_deliveries = False`` says the store keeps no delivery state at all
    (nothing survives the process; acks then need no write).

    A store that sets ``owns_delivery = True`` runs delivery itself, as a
    message server does (NATS JetStream: ack wait, max deliver, nak with
    delay, Msg-Id de-duplication, subject filtering on the server). Then:

    - :meth:`write` receives appends with an empty consumer list (the store
      routes by the consumer's ``pattern``) and never receives updates; it
      returns ``None`` as the offset of an event whose id it already holds
      (de-duplication by id, e.g. ``Nats-Msg-Id``). It may refuse effects
      with :class:`~lion_nb.errors.EventError` if it cannot commit them
      atomically with the delivery state.
    - :meth:`register_consumer` creates or updates the durable consumer; the
      record's ``options`` carry ``ack_timeout``, ``max_deliveries``,
      ``backoff`` (seconds per attempt), ``max_pending``, ``mode`` and
      ``group`` for the store to configure it (ack wait, max deliver, backoff,
      max ack pending).
    - :meth:`attach` starts pushing the consumer's deliveries - unfinished ones
      first after a restart - by calling ``sink.deliver(consumer, event,
      attempt)`` on the loop; a redelivery (ack wait passed, nak) comes the
      same way with a higher attempt and replaces the attempt in flight. When
      the store gives up on an event it calls ``sink.dead_lettered(...)`` and
      the broker publishes the ``$dlq`` event and the advisory.
    - :meth:`settle` is each verdict: ``ACKED`` (ack; an event the consumer's
      filter rejects is acked too), ``PENDING`` (nak, redeliver after
      ``delay`` seconds, or the store's backoff when None) or ``DEAD`` (term:
      the broker dead-lettered it after a failure ack on the last attempt).
    - :meth:`load` returns only consumers and recent idempotency keys; the
      broker keeps no timer for these consumers.
    """

    durable: bool = False
    immediate: bool = False
    #: False when the store keeps no delivery state (acks and retries need no write).
    tracks_deliveries: bool = True
    #: True when the store routes, times out, redelivers and dead-letters itself.
    owns_delivery: bool = False

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

    def append(self, event: Event, consumers: Sequence[str]) -> int | None:
        """Immediate stores: append one event; its offset, None if its id is stored.

        The broker's one-event publish on an ``immediate`` store; the default
        is :meth:`write` with one append. A store may override it with a
        faster path that does the same.
        """
        return self.write(((event, consumers),))[0][0]  # type: ignore[index]

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

    def compact(self, before: float) -> MaybeAwaitable[int]:
        """Delete logged events stamped before ``before`` that no consumer still needs.

        An event goes only once every delivery of it is finished (acked or
        dead-lettered); its delivery rows go with it. Returns how many events
        were deleted. The default keeps everything.
        """
        return 0

    def attach(self, consumer: str, sink: ConsumerSink) -> MaybeAwaitable[None]:
        """Delivery-owning stores: start pushing ``consumer``'s deliveries to ``sink``."""
        raise NotImplementedError(f"{type(self).__name__} does not own delivery")

    def detach(self, consumer: str) -> MaybeAwaitable[None]:
        """Delivery-owning stores: stop pushing ``consumer``'s deliveries (it stays durable)."""
        raise NotImplementedError(f"{type(self).__name__} does not own delivery")

    def progress(self, consumer: str, event: Event) -> MaybeAwaitable[None]:
        """Delivery-owning stores: ``event`` is still being handled; restart its ack wait."""
        raise NotImplementedError(f"{type(self).__name__} does not own delivery")

    def settle(self, consumer: str, event: Event, outcome: int, attempts: int,
               delay: float | None = None, error: str | None = None) -> MaybeAwaitable[None]:
        """Delivery-owning stores: the verdict on ``event``'s delivery to ``consumer``.

        ``outcome`` is ACKED (ack), PENDING (nak; redeliver after ``delay``)
        or DEAD (term). See the class docstring.
        """
        raise NotImplementedError(f"{type(self).__name__} does not own delivery")


def apply_effects(state: dict[str, Any], effects: Effects) -> dict[str, Any]:
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
        # The log, by event id: insertion order is offset order, and one dict
        # answers both "already stored?" and "in order from offset N".
        self._log: dict[str, Event] = {}
        self._last = 0
        self._state: dict[str, dict[str, Any]] = {}
        # (consumer, offset) whose effect is committed and whose ack has not come yet
        self._processed: set[tuple[str, int | None]] = set()

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
                staged[consumer] = apply_effects(base, fx)  # may raise: nothing changed yet
                marks.append((consumer, offset))
                applied.append(True)
            self._state.update(staged)
            self._processed.update(marks)
        offsets = [self.append(event, consumers) for event, consumers in appends]
        if self._processed:
            for consumer, offset, status, _attempts, _error in updates:
                if status != PENDING:
                    self._processed.discard((consumer, offset))
        return offsets, applied

    def append(self, event: Event, consumers: Sequence[str]) -> int | None:
        """One event, without the lists and tuples of a general :meth:`write`."""
        if event.id in self._log:
            return None
        self._last = offset = self._last + 1
        event.offset = offset
        self._log[event.id] = event
        return offset

    def load(self, keys_since: float) -> StoreSnapshot:
        """No consumers or deliveries (not tracked); recent idempotency keys from the log."""
        keys = []
        for event in reversed(self._log.values()):
            if (event.timestamp or 0.0) < keys_since:
                break
            if event.idempotency_key is not None:
                keys.append((event.idempotency_key, event.id, event.timestamp or 0.0))
        keys.reverse()
        return StoreSnapshot([], {}, keys)

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
        for event in self._log.values():
            if from_offset is not None and (event.offset or 0) < from_offset:
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

    def compact(self, before: float) -> int:
        """Drop logged events stamped before ``before`` (deliveries live in the broker)."""
        busy = {offset for _, offset in self._processed}
        gone = []
        for event in self._log.values():  # offset order is publish-time order
            if (event.timestamp or 0.0) >= before:
                break
            if event.offset not in busy:
                gone.append(event.id)
        for event_id in gone:
            del self._log[event_id]
        return len(gone)

    def __len__(self) -> int:
        return len(self._log)

    def __bool__(self) -> bool:  # an empty store is still a store (`store or default`)
        return True

