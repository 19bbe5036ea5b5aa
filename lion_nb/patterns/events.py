"""Event-driven patterns: publish/subscribe with at-least-once or exactly-once delivery.

The seed's example, in Python::

    broker = EventBroker(EventBrokerConfig()).with_event_store(InMemoryEventStore())
    event_rx, ack_tx = await broker.subscribe("order.created", "order-processor", None)
    await broker.publish(Event("order.created", {"order_id": "12345"}))
    event = await event_rx.recv()
    await ack_tx.send(EventAck.success(event.id, "order-processor"))

Guarantees, wildcards, dead letters and stores are described in docs/events.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..engine.observe import ObserveStream
from ..errors import BrokerClosedError, EventError, SubscriberError
from ._events_delivery import DeliveryMixin
from ._events_publishing import PublishMixin
from ._events_subscribing import SubscribeMixin, resolve
from ._events_filter import EventFilter, compile_filter
from ._events_model import (
    BrokerStatistics, Delivery, DeliveryMode, Event, EventAck, EventBrokerConfig, RetryBackoff,
)
from ._events_subscription import AckSender, EventReceiver, Member, Pending, Subscription
from ._events_topics import TopicPattern
from .event_store import ConsumerRecord, EventStore, InMemoryEventStore
from .event_store_sqlite import SqliteEventStore

__all__ = [
    "Event", "Delivery", "EventAck", "DeliveryMode", "RetryBackoff", "EventBrokerConfig",
    "BrokerStatistics", "EventBroker", "EventReceiver", "AckSender", "EventFilter",
    "EventStore", "InMemoryEventStore", "SqliteEventStore", "TopicPattern",
]

_log = logging.getLogger("lion_nb.events")
_HISTORY_FIELDS = ("time", "kind", "topic", "event_id", "subscriber", "attempt", "error")


class EventBroker(PublishMixin, SubscribeMixin, DeliveryMixin):
    """Routes events from publishers to subscribers and tracks every delivery until acked.

    ``clock`` drives ack timeouts, backoff and timestamps (pass a FakeClock in
    tests); ``observe`` receives EVENT_* execution events. Use ``async with``
    or ``await close()`` to stop it.
    """

    def __init__(self, config: EventBrokerConfig | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 observe: ObserveStream | None = None,
                 store: EventStore | None = None) -> None:
        self._config = config or EventBrokerConfig()
        self._clock = clock
        self._observe = observe
        self._store: EventStore = store if store is not None else InMemoryEventStore()
        self._immediate = self._store.immediate
        self._tracks = self._store.tracks_deliveries
        self._closed = False
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._subs: dict[str, Subscription] = {}
        self._members: dict[str, Member] = {}
        self._routes: dict[str, tuple[tuple[Subscription, ...], bool, list[str]]] = {}
        self._valid_topics: set[str] = set()
        self._keys: dict[str, tuple[str, float]] = {}   # idempotency key -> (event id, time)
        limit = self._config.history_limit
        self._history: deque[tuple[Any, ...]] | None = deque(maxlen=limit) if limit else None
        self._n_published = self._n_duplicates = self._n_delivered = 0
        self._n_acked = self._n_failed = self._n_redelivered = self._n_dead = 0
        self._init_delivery()

    def with_event_store(self, store: EventStore) -> "EventBroker":
        """Use ``store`` for events and delivery state (before first use); returns self."""
        if self._opened:
            raise EventError("with_event_store() must be called before the broker is used")
        if not isinstance(store, EventStore):
            raise TypeError(f"expected an EventStore, got {type(store).__name__}")
        self._store = store
        self._immediate = store.immediate
        self._tracks = store.tracks_deliveries
        return self

    @property
    def config(self) -> EventBrokerConfig:
        """The configuration this broker runs with."""
        return self._config

    @property
    def store(self) -> EventStore:
        """The event store in use."""
        return self._store

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    async def __aenter__(self) -> "EventBroker":
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- opening and closing --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the event broker is closed")

    async def _open(self) -> None:
        """Load consumers and unfinished deliveries from the store; start the timer."""
        self._check_open()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            snap = await resolve(self._store.load(self._clock.time() - self._config.dedup_window))
            for record in snap.consumers:
                self._subs[record.name] = self._restore_subscription(record)
            for name, rows in snap.pending.items():
                sub = self._subs.get(name)
                if sub is None:
                    continue
                for row in rows:
                    p = Pending(row.event, row.attempts, row.last_error, row.processed)
                    sub.pending[row.event.id] = p
                    if row.processed:  # effect committed before a crash, ack never came
                        self._finish_processed(sub, p)
                    else:
                        sub.put(p)
            for key, event_id, stamp in snap.recent_keys:
                self._keys[key] = (event_id, stamp)
            self._timer = asyncio.get_running_loop().create_task(
                self._run_timer(), name="lion-events-timer")
            self._opened = True

    def _restore_subscription(self, record: ConsumerRecord) -> Subscription:
        opts = record.options
        cfg = self._config
        sub = Subscription(
            record.name, TopicPattern(record.pattern), compile_filter(record.filter),
            DeliveryMode(opts.get("mode", cfg.delivery_mode)),
            opts.get("ack_timeout", cfg.ack_timeout),
            opts.get("max_deliveries", cfg.max_deliveries),
            opts.get("max_pending", cfg.max_pending), bool(opts.get("group", False)))
        sub.filter_unknown = bool(opts.get("callable_filter", False))
        return sub

    async def close(self) -> None:
        """Stop delivering, wake every waiter with BrokerClosedError, close the store.

        Unacked deliveries stay pending in the store: a new broker on the same
        store delivers them again.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        for sub in self._subs.values():
            sub.wake_all()
        self._wake_publishers()
        await resolve(self._store.close())

    # -- exactly-once effects -----------------------------------------------------------

    async def apply_effect(self, subscriber_id: str, event: Delivery | Event | str,
                           effects: Any) -> bool:
        """Commit ``effects`` for an exactly-once subscriber's event, at most once.

        ``effects`` is a mapping of state keys to JSON values, or a function
        that edits the state dict in place. Returns False (and changes nothing)
        if the effect for this event was already committed or the event is no
        longer pending for the subscriber. The event still needs an ack; if
        the ack is lost (crash, timeout) the event is finished, not redelivered.
        """
        self._check_open()
        sub = self._exactly_once_sub(subscriber_id)
        eid = event if isinstance(event, str) else event.id
        p = sub.pending.get(eid)
        if p is None or p.processed:
            return False
        applied = (await resolve(self._store.write((), (), ((sub.name, p.event.offset,
                                                              effects),))))[1][0]
        if applied:
            p.processed = True
        return applied

    async def subscriber_state(self, subscriber_id: str) -> dict[str, Any]:
        """The state an exactly-once subscriber (or its group) committed through effects."""
        self._check_open()
        if not self._opened:
            await self._open()
        return await resolve(self._store.state(self._exactly_once_sub(subscriber_id).name))

    def _exactly_once_sub(self, subscriber_id: str) -> Subscription:
        member = self._members.get(subscriber_id)
        sub = member.sub if member is not None else self._subs.get(subscriber_id)
        if sub is None:
            raise SubscriberError(f"unknown subscriber {subscriber_id!r}",
                                  subscriber=subscriber_id)
        if not sub.exactly_once:
            raise SubscriberError(f"subscriber {subscriber_id!r} is {sub.mode.value}; effects "
                                  "need DeliveryMode.EXACTLY_ONCE", subscriber=subscriber_id)
        return sub

    async def ack(self, ack: EventAck) -> None:
        """Apply ``ack`` without going through an AckSender."""
        await self._ack(ack)

    # -- looking at it -----------------------------------------------------------------

    async def replay(self, pattern: str, *, from_offset: int | None = None,
                     since: float | None = None, limit: int | None = None) -> list[Event]:
        """Logged events matching ``pattern`` from an offset and/or a wall time (read-only)."""
        self._check_open()
        if not self._opened:
            await self._open()
        matcher = TopicPattern(pattern)
        logged = await resolve(self._store.read(from_offset, since))
        found = [e for e in logged if matcher.matches(e.topic)]
        return found if limit is None else found[:limit]

    def statistics(self) -> BrokerStatistics:
        """Counts since start and pending events per subscription (frozen snapshot)."""
        return BrokerStatistics(
            published=self._n_published, duplicates=self._n_duplicates,
            delivered=self._n_delivered, acked=self._n_acked, failed=self._n_failed,
            redelivered=self._n_redelivered, dead_lettered=self._n_dead,
            pending={name: len(sub.pending) for name, sub in self._subs.items()})

    def history(self) -> list[dict[str, Any]]:
        """One row per happening: published, delivered, acked, failed, redelivery, dead_lettered."""
        if self._history is None:
            return []
        return [dict(zip(_HISTORY_FIELDS, row)) for row in self._history]

    def subscriptions(self) -> list[dict[str, Any]]:
        """One row per subscription: name, pattern, mode, members, pending, in flight."""
        return [{"name": s.name, "pattern": s.pattern.pattern, "mode": s.mode.value,
                 "group": s.is_group, "members": sorted(s.members), "pending": len(s.pending),
                 "in_flight": len(s.inflight),
                 "filter": s.filter.expression if s.filter else None}
                for s in self._subs.values()]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<EventBroker {state} store={type(self._store).__name__} "
                f"subscriptions={len(self._subs)} published={self._n_published}>")

