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
import inspect
import logging
from collections import deque
from typing import Any, Iterable, Sequence

from ..clock import SYSTEM_CLOCK, Clock
from ..engine.observe import EventKind, ObserveStream
from ..errors import BrokerClosedError, EventError, SubscriberError, SubscriberFullError
from ._events_delivery import DeliveryMixin
from ._events_filter import EventFilter, compile_filter
from ._events_model import (
    BrokerStatistics, Delivery, DeliveryMode, Event, EventAck, EventBrokerConfig, RetryBackoff,
)
from ._events_subscription import (
    FINISHING, READY, AckSender, EventReceiver, Member, Pending, Subscription,
)
from ._events_topics import TopicPattern, validate_topic
from .event_store import ACKED, PENDING, ConsumerRecord, EventStore, InMemoryEventStore
from .event_store_sqlite import SqliteEventStore

__all__ = [
    "Event", "Delivery", "EventAck", "DeliveryMode", "RetryBackoff", "EventBrokerConfig",
    "BrokerStatistics", "EventBroker", "EventReceiver", "AckSender", "EventFilter",
    "EventStore", "InMemoryEventStore", "SqliteEventStore", "TopicPattern",
]

_log = logging.getLogger("lion_nb.events")
_HISTORY_FIELDS = ("time", "kind", "topic", "event_id", "subscriber", "attempt", "error")


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class EventBroker(DeliveryMixin):
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
        self._store: EventStore = store or InMemoryEventStore()
        self._immediate = self._store.immediate
        self._closed = False
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._subs: dict[str, Subscription] = {}
        self._members: dict[str, Member] = {}
        self._routes: dict[str, tuple[tuple[Subscription, ...], bool]] = {}
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
            snap = await _resolve(self._store.load(self._clock.time() - self._config.dedup_window))
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
            opts.get("ack_timeout", cfg.ack_timeout), opts.get("max_deliveries", cfg.max_deliveries),
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
        await _resolve(self._store.close())

    # -- publishing -------------------------------------------------------------------

    def _check_topic(self, topic: str) -> None:
        validate_topic(topic)
        if len(self._valid_topics) < 65_536:  # a cache, not a leak
            self._valid_topics.add(topic)

    def _targets(self, event: Event) -> Sequence[Subscription]:
        """Subscriptions that take ``event``: pattern match, then each filter."""
        topic = event.topic
        route = self._routes.get(topic)
        if route is None:
            subs = tuple(s for s in self._subs.values() if s.pattern.matches(topic))
            route = self._routes[topic] = (subs, any(s.filter is not None for s in subs))
        subs, filtered = route
        if not filtered:
            return subs
        return [s for s in subs if s.filter is None or self._passes(s, event)]

    def _passes(self, sub: Subscription, event: Event) -> bool:
        try:
            return sub.filter(event)  # type: ignore[misc]
        except Exception:  # a broken filter must not break publishing for everyone
            _log.warning("filter of subscriber %r raised on event %s (topic %r); not delivered",
                         sub.name, event.id, event.topic, exc_info=True)
            return False

    def _known_key(self, key: str) -> str | None:
        """The event id published under ``key`` within the window, else None."""
        hit = self._keys.get(key)
        if hit is None:
            return None
        horizon = self._clock.time() - self._config.dedup_window
        if hit[1] >= horizon:
            return hit[0]
        # Keys are kept in publish order: drop everything that fell out of the window.
        for k in [k for k, (_, t) in self._keys.items() if t < horizon]:
            del self._keys[k]
        return None

    def _wait_or_raise(self, wait: bool | None, sub: Subscription, event: Event) -> bool:
        if wait is None:
            wait = self._config.on_full == "wait"
        if not wait:
            raise SubscriberFullError(
                f"subscriber {sub.name!r} has {len(sub.pending) + sub.reserved} pending events "
                f"(max_pending={sub.max_pending}); event {event.id!r} on {event.topic!r} "
                "was not published", subscriber=sub.name, topic=event.topic)
        return True

    async def publish(self, event: Event, *, wait: bool | None = None) -> str:
        """Store ``event`` and route it to every matching subscription; return its id.

        A duplicate (same id already stored, or same ``idempotency_key`` within
        ``dedup_window``) is not stored again; the first event's id is returned.
        When a subscriber is full, waits for room or raises SubscriberFullError
        (``wait`` overrides the configured ``on_full``).
        """
        if self._closed:
            raise BrokerClosedError(f"the event broker is closed; event on "
                                    f"{getattr(event, 'topic', None)!r} was not published")
        if not self._opened:
            await self._open()
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, got {type(event).__name__}")
        topic = event.topic
        if topic not in self._valid_topics:
            self._check_topic(topic)
        key = event.idempotency_key
        if key is not None:
            first = self._known_key(key)
            if first is not None:
                self._n_duplicates += 1
                return first
        while True:
            targets = self._targets(event)
            for sub in targets:
                if not sub.room(1):
                    break
            else:
                break
            self._wait_or_raise(wait, sub, event)
            await self._wait_space()
            self._check_open()
        if event.timestamp is None:
            event.timestamp = self._clock.time()
        if key is not None:
            self._keys[key] = (event.id, event.timestamp)  # before any await: concurrent retries
        try:
            if self._immediate:
                offset = self._store.write(((event, [s.name for s in targets]),))[0][0]
            else:
                offset = await self._write_reserved(((event, targets),))
        except BaseException:
            if key is not None and self._keys.get(key, (None,))[0] == event.id:
                del self._keys[key]
            raise
        if offset is None:
            self._n_duplicates += 1
            return event.id
        event.offset = offset
        self._route(event, targets)
        return event.id

    async def _write_reserved(self, items: Sequence[tuple[Event, Sequence[Subscription]]]) -> Any:
        """Write through an asynchronous store, holding buffer slots meanwhile."""
        held = [s for _, targets in items for s in targets]
        for s in held:
            s.reserved += 1
        try:
            offsets, _ = await self._store.write(
                [(e, [s.name for s in targets]) for e, targets in items])
        finally:
            for s in held:
                s.reserved -= 1
        return offsets[0] if len(items) == 1 else offsets

    async def publish_many(self, events: Iterable[Event], *,
                           wait: bool | None = None) -> list[str]:
        """Publish several events in one store transaction (one fsync); return their ids."""
        self._check_open()
        if not self._opened:
            await self._open()
        batch: list[Event] = []
        ids: list[str | None] = []
        seen: dict[str, str] = {}
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"publish_many() takes Events, got {type(event).__name__}")
            if event.topic not in self._valid_topics:
                self._check_topic(event.topic)
            key = event.idempotency_key
            first = None if key is None else (seen.get(key) or self._known_key(key))
            if first is not None:
                self._n_duplicates += 1
                ids.append(first)
                continue
            if key is not None:
                seen[key] = event.id
            batch.append(event)
            ids.append(None)
        while True:
            items = [(e, self._targets(e)) for e in batch]
            need: dict[str, int] = {}
            for _, targets in items:
                for s in targets:
                    need[s.name] = need.get(s.name, 0) + 1
            full = next((self._subs[n] for n, k in need.items() if not self._subs[n].room(k)),
                        None)
            if full is None:
                break
            self._wait_or_raise(wait, full, batch[0])
            await self._wait_space()
            self._check_open()
        now = self._clock.time()
        for e in batch:
            if e.timestamp is None:
                e.timestamp = now
            if e.idempotency_key is not None:
                self._keys[e.idempotency_key] = (e.id, e.timestamp)
        if self._immediate:
            offsets = self._store.write([(e, [s.name for s in t]) for e, t in items])[0]
        else:
            offsets = await self._write_reserved(items) if items else []
            if len(items) == 1:
                offsets = [offsets]
        for (event, targets), offset in zip(items, offsets):
            if offset is None:
                self._n_duplicates += 1
            else:
                event.offset = offset
                self._route(event, targets)
        out = iter(e.id for e in batch)
        return [i if i is not None else next(out) for i in ids]

    def _route(self, event: Event, targets: Sequence[Subscription]) -> None:
        """Buffer a stored event for each target subscription."""
        eid = event.id
        for sub in targets:
            if sub.closed:
                continue
            p = Pending(event)
            sub.pending[eid] = p
            sub.put(p)
        self._n_published += 1
        if self._history is not None:
            self._history.append((event.timestamp, "published", event.topic, eid, None, 0, None))
        obs = self._observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_PUBLISHED, event, None, 0,
                       subscribers=[s.name for s in targets])

    # -- subscribing ------------------------------------------------------------------

    async def subscribe(
        self, topic: str, subscriber_id: str, filter: Any = None, *,  # noqa: A002 - seed name
        group: str | None = None, mode: DeliveryMode | str | None = None,
        ack_timeout: float | None = None, max_deliveries: int | None = None,
        max_pending: int | None = None, from_offset: int | None = None,
        since: float | None = None,
    ) -> tuple[EventReceiver, AckSender]:
        """Subscribe ``subscriber_id`` to a topic or pattern; return ``(receiver, ack sender)``.

        ``filter`` is a callable ``(event) -> bool`` or an expression string.
        With ``group``, members share one delivery state and each event goes
        to one member. A subscriber known to a durable store re-attaches and
        gets its unfinished events. ``from_offset`` / ``since`` (new
        subscriptions only) first replay matching logged events.
        """
        self._check_open()
        if not self._opened:
            await self._open()
        pattern = TopicPattern(topic)
        _check_name(subscriber_id, "subscriber id")
        if group is not None:
            _check_name(group, "group name")
        if subscriber_id in self._members:
            raise SubscriberError(f"subscriber {subscriber_id!r} is already subscribed (to "
                                  f"{self._members[subscriber_id].sub.pattern.pattern!r})",
                                  subscriber=subscriber_id)
        flt = compile_filter(filter)
        cfg = self._config
        mode = DeliveryMode(mode or cfg.delivery_mode)
        name = group if group is not None else subscriber_id
        replay = from_offset is not None or since is not None
        sub = self._subs.get(name)
        new = sub is None
        if sub is None:
            sub = Subscription(name, pattern, flt, mode, ack_timeout or cfg.ack_timeout,
                               max_deliveries or cfg.max_deliveries,
                               max_pending or cfg.max_pending, group is not None)
            self._subs[name] = sub
        else:
            self._check_rejoin(sub, pattern, flt, group, replay)
            if not sub.members:  # a durable subscription re-attaching after a restart
                self._reattach(sub, flt, mode, ack_timeout, max_deliveries, max_pending)
        self._routes.clear()
        member = Member(subscriber_id, sub)
        sub.members[subscriber_id] = member
        self._members[subscriber_id] = member
        # Register and read the log in this same step, before any await: the
        # store runs work in call order, so the replay sees exactly the events
        # published before this subscription existed and routing has the rest.
        try:
            registered = self._store.register_consumer(self._record(sub)) \
                if new or len(sub.members) == 1 else None
            backlog = self._store.read(from_offset, since) if new and replay else None
            await _resolve(registered)
            if backlog is not None:
                await self._backfill(sub, await _resolve(backlog))
        except BaseException:
            self._members.pop(subscriber_id, None)
            sub.members.pop(subscriber_id, None)
            if new:
                sub.closed = True
                self._subs.pop(name, None)
                self._routes.clear()
            raise
        return EventReceiver(self, member), AckSender(self, member)

    def _check_rejoin(self, sub: Subscription, pattern: TopicPattern, flt: EventFilter | None,
                      group: str | None, replay: bool) -> None:
        kind = "group" if sub.is_group else "subscriber"
        if sub.is_group != (group is not None):
            raise SubscriberError(f"{sub.name!r} is already a {kind}; pick another name",
                                  subscriber=sub.name)
        if sub.pattern.pattern != pattern.pattern:
            raise SubscriberError(
                f"{kind} {sub.name!r} is subscribed to {sub.pattern.pattern!r}, not "
                f"{pattern.pattern!r}; unsubscribe it first", subscriber=sub.name)
        if replay:
            raise SubscriberError(f"{kind} {sub.name!r} already exists; from_offset/since only "
                                  "apply to a new subscription", subscriber=sub.name)
        if sub.members and flt is not None and not flt.same_as(sub.filter):
            raise SubscriberError(f"group {sub.name!r} has another filter; members share one",
                                  subscriber=sub.name)

    def _reattach(self, sub: Subscription, flt: EventFilter | None, mode: DeliveryMode,
                  ack_timeout: float | None, max_deliveries: int | None,
                  max_pending: int | None) -> None:
        if sub.filter_unknown or flt is not None:
            sub.filter, sub.filter_unknown = flt, False
            # Events routed while only the pattern was known: drop those the filter rejects.
            rejected = [p for p in sub.ready
                        if p.state == READY and flt and not self._passes(sub, p.event)]
            for p in rejected:
                sub.pending.pop(p.event.id, None)
                p.state = FINISHING
                self._write_bg((), ((sub.name, p.event.offset, ACKED, p.attempts, "filtered"),))
        sub.mode = mode
        sub.ack_timeout = ack_timeout or sub.ack_timeout
        sub.max_deliveries = max_deliveries or sub.max_deliveries
        sub.max_pending = max_pending or sub.max_pending

    def _record(self, sub: Subscription) -> ConsumerRecord:
        flt = sub.filter
        return ConsumerRecord(sub.name, sub.pattern.pattern, flt.expression if flt else None, {
            "mode": sub.mode.value, "group": sub.is_group, "ack_timeout": sub.ack_timeout,
            "max_deliveries": sub.max_deliveries, "max_pending": sub.max_pending,
            "callable_filter": bool(flt is not None and flt.expression is None)})

    async def _backfill(self, sub: Subscription, logged: list[Event]) -> None:
        chosen = [e for e in logged if sub.pattern.matches(e.topic) and e.id not in sub.pending
                  and (sub.filter is None or self._passes(sub, e))]
        if not chosen:
            return
        await _resolve(self._store.write(
            (), [(sub.name, e.offset, PENDING, 0, None) for e in chosen]))
        # Older than anything routed live meanwhile, so they go to the front.
        for event in reversed(chosen):
            p = Pending(event)
            sub.pending[event.id] = p
            sub.ready.appendleft(p)
        sub.wake_one()

    async def unsubscribe(self, subscriber_id: str) -> None:
        """Detach a subscriber; the last member leaving deletes the subscription and its state.

        Its unacked deliveries go back to the group's other members. Also
        accepts the name of a durable subscription no one has re-attached.
        """
        self._check_open()
        member = self._members.pop(subscriber_id, None)
        if member is None:
            sub = self._subs.get(subscriber_id)
            if sub is None or sub.members:
                raise SubscriberError(f"unknown subscriber {subscriber_id!r}",
                                      subscriber=subscriber_id)
        else:
            member.closed = True
            sub = member.sub
            del sub.members[subscriber_id]
            sub.wake_all()
            if sub.members:
                for p in [p for p in sub.inflight.values() if p.member is member]:
                    self._retry(sub, p, f"subscriber {subscriber_id!r} unsubscribed", 0.0,
                                "unsubscribed")
                return
        sub.closed = True
        del self._subs[sub.name]
        self._routes.clear()
        for p in sub.pending.values():
            p.state = FINISHING
        sub.pending.clear()
        sub.ready.clear()
        sub.inflight.clear()
        self._wake_publishers()
        await _resolve(self._store.drop_consumer(sub.name))

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
        applied = (await _resolve(self._store.write((), (), ((sub.name, p.event.offset,
                                                              effects),))))[1][0]
        if applied:
            p.processed = True
        return applied

    async def subscriber_state(self, subscriber_id: str) -> dict[str, Any]:
        """The state an exactly-once subscriber (or its group) committed through effects."""
        self._check_open()
        if not self._opened:
            await self._open()
        return await _resolve(self._store.state(self._exactly_once_sub(subscriber_id).name))

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
        logged = await _resolve(self._store.read(from_offset, since))
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
        """One row per happening (published, delivered, acked, failed, redelivery, dead_lettered)."""
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


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SubscriberError(f"{what} must be a non-empty string, got {value!r}",
                              subscriber=value)

