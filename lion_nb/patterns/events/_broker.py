"""The event broker: publish/subscribe with at-least-once or exactly-once delivery.

One class does the routing and the verdicts; it composes the objects that own
their own state: each :class:`Subscription` (buffer, pending, in flight - the
channel state its endpoints work on), the :class:`RedeliveryTimer`, the
:class:`Ledger` (counters, history, observe) and the :class:`IdempotencyKeys`.
Guarantees, wildcards, dead letters and stores are described in docs/events.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Iterable, Sequence

from ...clock import SYSTEM_CLOCK, Clock
from ...engine import ObserveStream
from ...errors import (
    AckError, BrokerClosedError, EventError, EventTypeError, SubscriberError,
    SubscriberFullError,
)
from ._channel import (
    DELAYED, FINISHING, INFLIGHT, READY, AckSender, EventReceiver, HandOut, Member, Pending,
    Subscription, pending,
)
from ._filter import EventFilter, compile_filter
from ._keys import IdempotencyKeys
from ._ledger import Ledger
from ._model import (
    BrokerStatistics, Delivery, DeliveryMode, Event, EventAck, EventBrokerConfig,
)
from ._store import (
    ACKED, DEAD, PENDING, ConsumerRecord, ConsumerSink, DamagedRecord, EventStore,
    InMemoryEventStore,
)
from ._timer import RedeliveryTimer
from ._topics import TopicPattern, validate_topic

__all__ = ["EventBroker"]

_log = logging.getLogger("lion_nb.events")
Route = tuple[tuple[Subscription, ...], bool, list[str]]
_ROUTE_CACHE = 65_536         # topics whose validity and routes are cached


async def _resolve(value: Any) -> Any:
    """Await ``value`` if a store returned an awaitable, else return it."""
    return await value if inspect.isawaitable(value) else value


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SubscriberError(f"{what} must be a non-empty string, got {value!r}",
                              subscriber=value)


def _log_failure(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled() and fut.exception() is not None:
        _log.error("event store bookkeeping write failed", exc_info=fut.exception())


class EventBroker:
    """Routes events from publishers to subscribers and tracks every delivery until acked.

    ``clock`` drives ack timeouts, backoff and timestamps (pass a FakeClock in
    tests); ``observe`` receives EVENT_* execution events. Use ``async with``
    or ``await close()`` to stop it.
    """

    def __init__(self, config: EventBrokerConfig | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 observe: ObserveStream | None = None,
                 store: EventStore | None = None) -> None:
        self._config = cfg = config or EventBrokerConfig()
        self._clock = clock
        self._store: EventStore = InMemoryEventStore()
        self._closed = False
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._subs: dict[str, Subscription] = {}
        self._members: dict[str, Member] = {}
        self._routes: dict[str, Route] = {}
        self._valid_topics: set[str] = set()
        self._keys = IdempotencyKeys(cfg.dedup_window, cfg.dedup_max_keys)
        self._ledger = Ledger(clock, observe, cfg.history_limit)
        self._timer = RedeliveryTimer(clock, self._subs.values, self._expired)
        self._space_waiters: list[asyncio.Future[None]] = []
        self._compacted_at = clock.time()
        self._retention = cfg.retention
        self._compaction: asyncio.Task[Any] | None = None
        self._use_store(store if store is not None else self._store)

    def _use_store(self, store: EventStore) -> None:
        self._store = store
        self._immediate = store.immediate
        self._tracks = store.tracks_deliveries
        self._owned = store.owns_delivery
        self._quiet_acks = not (self._owned or self._tracks)
        self._handout = HandOut(self._clock, self._ledger, None if self._owned else self._timer,
                                self._finish_processed)

    def with_event_store(self, store: EventStore) -> "EventBroker":
        """Use ``store`` for events and delivery state (before first use); returns self."""
        if self._opened:
            raise EventError("with_event_store() must be called before the broker is used")
        if not isinstance(store, EventStore):
            raise EventTypeError(f"expected an EventStore, got {type(store).__name__}",
                                 value=store)
        self._use_store(store)
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
    def observe(self) -> ObserveStream | None:
        """The observe stream this broker emits EVENT_* execution events on, or None."""
        return self._ledger.observe

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
                    p = pending(row.event, row.attempts, row.last_error, row.processed)
                    sub.pending[row.event.id] = p
                    if row.processed:  # effect committed before a crash, ack never came
                        self._finish_processed(sub, p)
                    else:
                        sub.put(p)
            for key, event_id, stamp in snap.recent_keys:
                self._keys.add(key, event_id, stamp)
            if not self._owned:
                self._timer.start()
            self._opened = True
            for damaged in snap.damaged:
                self._dead_letter_damaged(damaged)

    def _restore_subscription(self, record: ConsumerRecord) -> Subscription:
        opts = record.options
        cfg = self._config
        sub = self._new_subscription(
            record.name, TopicPattern(record.pattern), compile_filter(record.filter),
            DeliveryMode(opts.get("mode", cfg.delivery_mode)), opts.get("ack_timeout"),
            opts.get("max_deliveries"), opts.get("max_pending"), bool(opts.get("group", False)))
        sub.filter_unknown = bool(opts.get("callable_filter", False))
        self._limits(sub, opts.get("backoff") if opts.get("backoff_list") else None,
                     opts.get("max_ack_pending"))
        return sub

    def _new_subscription(self, name: str, pattern: TopicPattern, flt: EventFilter | None,
                          mode: DeliveryMode, ack_timeout: float | None,
                          max_deliveries: int | None, max_pending: int | None,
                          is_group: bool) -> Subscription:
        cfg = self._config
        return Subscription(name, pattern, flt, mode, ack_timeout or cfg.ack_timeout,
                            max_deliveries or cfg.max_deliveries,
                            max_pending or cfg.max_pending, is_group, self._handout)

    async def close(self) -> None:
        """Stop delivering, end every receiver (``recv()`` returns None), close the store.

        Unacked deliveries stay pending in the store: a new broker on the same
        store delivers them again. Blocked publishers get BrokerClosedError.
        """
        if self._closed:
            return
        self._closed = True
        await self._timer.stop()
        if self._compaction is not None:
            await asyncio.gather(self._compaction, return_exceptions=True)
        for sub in self._subs.values():
            sub.shut_down()
        self._wake_publishers()
        await _resolve(self._store.close())

    # -- publishing -------------------------------------------------------------------

    def _check_topic(self, topic: str) -> None:
        validate_topic(topic)
        if len(self._valid_topics) < _ROUTE_CACHE:  # a cache, not a leak
            self._valid_topics.add(topic)

    def _targets(self, event: Event) -> Sequence[Subscription]:
        """Subscriptions that take ``event``: pattern match, then each filter."""
        if self._owned:
            return ()  # the store routes
        route = self._routes.get(event.topic) or self._new_route(event.topic)
        if not route[1]:
            return route[0]
        return [s for s in route[0] if s.filter is None or self._passes(s, event)]

    def _new_route(self, topic: str) -> Route:
        """Cache which subscriptions a topic reaches (cleared on every (un)subscribe)."""
        subs = () if self._owned else \
            tuple(s for s in self._subs.values() if s.pattern.matches(topic))
        route = (subs, any(s.filter is not None for s in subs), [s.name for s in subs])
        if len(self._routes) >= _ROUTE_CACHE:  # many distinct topics: a cache, not a leak
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _passes(self, sub: Subscription, event: Event) -> bool:
        try:
            return sub.filter(event)  # type: ignore[misc]
        except Exception:  # a broken filter must not break publishing for everyone
            _log.warning("filter of subscriber %r raised on event %s (topic %r); not delivered",
                         sub.name, event.id, event.topic, exc_info=True)
            return False

    def _wait_or_raise(self, wait: bool | None, sub: Subscription, event: Event) -> None:
        if wait is None:
            wait = self._config.on_full == "wait"
        if not wait:
            raise SubscriberFullError(
                f"subscriber {sub.name!r} has {len(sub.pending) + sub.reserved} pending events "
                f"(max_pending={sub.max_pending}); event {event.id!r} on {event.topic!r} "
                "was not published", subscriber=sub.name, topic=event.topic)

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
        if type(event) is not Event and not isinstance(event, Event):
            raise EventTypeError(f"publish() takes an Event, got {type(event).__name__}",
                                 value=event)
        topic = event.topic
        if topic not in self._valid_topics:
            self._check_topic(topic)
        key = event.idempotency_key
        if key is not None:
            first = self._keys.get(key, self._clock.time())
            if first is not None:
                self._ledger.duplicates += 1
                return first
        while True:
            route = self._routes.get(topic) or self._new_route(topic)
            if route[1]:
                targets = self._targets(event)
                names = [s.name for s in targets]
            else:
                targets, _, names = route
            for sub in targets:
                used = len(sub.pending) + sub.reserved   # inlined Subscription.room(1)
                if used and used >= sub.max_pending:
                    break
            else:
                break
            self._wait_or_raise(wait, sub, event)
            await self._wait_space()
            self._check_open()
        if event.timestamp is None:
            event.timestamp = self._clock.time()
        if key is not None:
            self._keys.add(key, event.id, event.timestamp)  # before any await: retries race
        try:
            if self._immediate:
                offset = self._store.append(event, names)
            else:
                offset = await self._write_reserved(((event, targets),))
        except BaseException:
            if key is not None:
                self._keys.discard(key, event.id)
            raise
        if offset is None:
            self._ledger.duplicates += 1
            return event.id
        event.offset = offset
        for sub in targets:  # inlined _route(): one call less per publish
            if not sub.closed:
                sub.add(event)
        self._ledger.on_published(event, targets)
        if self._retention is not None:
            self._maybe_compact()
        return event.id

    async def _write_reserved(self, items: Sequence[tuple[Event, Sequence[Subscription]]]) -> Any:
        """Write through an asynchronous store, holding buffer slots meanwhile."""
        held = [s for _, targets in items for s in targets]
        for s in held:
            s.reserved += 1
        try:
            offsets, _ = await _resolve(self._store.write(
                [(e, [s.name for s in targets]) for e, targets in items]))
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
        self._keys.expire(self._clock.time())
        for event in events:
            if not isinstance(event, Event):
                raise EventTypeError(f"publish_many() takes Events, got {type(event).__name__}",
                                     value=event)
            if event.topic not in self._valid_topics:
                self._check_topic(event.topic)
            key = event.idempotency_key
            first = None if key is None else (seen.get(key) or self._keys.find(key))
            if first is not None:
                self._ledger.duplicates += 1
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
                self._keys.add(e.idempotency_key, e.id, e.timestamp)
        try:
            if self._immediate:
                written = self._store.write([(e, [s.name for s in t]) for e, t in items])
                offsets = written[0]  # type: ignore[index]
            else:
                offsets = await self._write_reserved(items) if items else []
                if len(items) == 1:
                    offsets = [offsets]
        except BaseException:
            for e in batch:
                if e.idempotency_key is not None:
                    self._keys.discard(e.idempotency_key, e.id)
            raise
        for (event, targets), offset in zip(items, offsets):
            if offset is None:
                self._ledger.duplicates += 1
            else:
                event.offset = offset
                self._route(event, targets)
        if self._config.retention is not None:
            self._maybe_compact()
        out = iter(e.id for e in batch)
        return [i if i is not None else next(out) for i in ids]

    def _route(self, event: Event, targets: Sequence[Subscription]) -> None:
        """Buffer a stored event for each target subscription."""
        for sub in targets:
            if not sub.closed:
                sub.add(event)
        self._ledger.on_published(event, targets)

    # -- subscribing ------------------------------------------------------------------

    async def subscribe(
        self, topic: str, subscriber_id: str, filter: Any = None, *,  # noqa: A002 - seed name
        group: str | None = None, mode: DeliveryMode | str | None = None,
        ack_timeout: float | None = None, max_deliveries: int | None = None,
        max_pending: int | None = None, from_offset: int | None = None,
        since: float | None = None, backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
    ) -> tuple[EventReceiver, AckSender]:
        """Subscribe ``subscriber_id`` to a topic or pattern; return ``(receiver, ack sender)``.

        ``filter`` is a callable ``(event) -> bool`` or an expression string.
        With ``group``, members share one delivery state and each event goes
        to one member. A subscriber known to a durable store re-attaches and
        gets its unfinished events. ``from_offset`` / ``since`` (new
        subscriptions only) first replay matching logged events. ``backoff``
        lists the delay before each redelivery (JetStream's BackOff; the last
        repeats). ``max_ack_pending`` pauses hand-out while that many
        deliveries are unacked; publishers are not blocked by it.
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
        mode = DeliveryMode(mode or self._config.delivery_mode)
        name = group if group is not None else subscriber_id
        replay = from_offset is not None or since is not None
        sub = self._subs.get(name)
        new = sub is None
        if sub is None:
            sub = self._new_subscription(name, pattern, flt, mode, ack_timeout, max_deliveries,
                                         max_pending, group is not None)
            self._subs[name] = sub
        else:
            self._check_rejoin(sub, pattern, flt, group, replay)
            if not sub.members:  # a durable subscription re-attaching after a restart
                self._reattach(sub, flt, mode, ack_timeout, max_deliveries, max_pending)
        if new or not sub.members:
            self._limits(sub, backoff, max_ack_pending)
        self._routes.clear()
        member = Member(subscriber_id, sub)
        sub.members[subscriber_id] = member
        self._members[subscriber_id] = member
        # Register and read the log in this same step, before any await: the
        # store runs work in call order, so the replay sees exactly the events
        # published before this subscription existed and routing has the rest.
        first_member = len(sub.members) == 1
        try:
            registered = self._store.register_consumer(self._record(sub)) \
                if new or first_member else None
            backlog = self._store.read(from_offset, since) if new and replay else None
            await _resolve(registered)
            if backlog is not None:
                await self._backfill(sub, await _resolve(backlog))
            if self._owned and first_member:
                await _resolve(self._store.attach(sub.name, ConsumerSink(self._pushed,
                                                                         self._store_gave_up)))
        except BaseException:
            self._members.pop(subscriber_id, None)
            sub.members.pop(subscriber_id, None)
            if new:
                sub.closed = True
                self._subs.pop(name, None)
                self._routes.clear()
            raise
        return EventReceiver(member), AckSender(member, self._settle, self._settle_many,
                                                self._progress)

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
                self._write_bg((), ((sub.name, p.event.offset, ACKED, p.attempt, "filtered"),))
        sub.mode = mode
        sub.ack_timeout = ack_timeout or sub.ack_timeout
        sub.max_deliveries = max_deliveries or sub.max_deliveries
        sub.max_pending = max_pending or sub.max_pending

    @staticmethod
    def _limits(sub: Subscription, backoff: Sequence[float] | None,
                max_ack_pending: int | None) -> None:
        """Check and set a subscription's backoff list and max ack pending (None: unchanged)."""
        if backoff is not None:
            delays = tuple(backoff) if isinstance(backoff, (list, tuple)) else None
            if not delays or not all(isinstance(d, (int, float)) and not isinstance(d, bool)
                                     and 0 <= d < float("inf") for d in delays):
                raise SubscriberError(f"backoff must be a non-empty list of delays >= 0 "
                                      f"seconds, got {backoff!r}", subscriber=sub.name)
            sub.backoff = tuple(float(d) for d in delays)
        if max_ack_pending is not None:
            if isinstance(max_ack_pending, bool) or not isinstance(max_ack_pending, int) \
                    or max_ack_pending < 1:
                raise SubscriberError(f"max_ack_pending must be an int >= 1, got "
                                      f"{max_ack_pending!r}", subscriber=sub.name)
            sub.max_ack_pending = max_ack_pending

    def _delay(self, sub: Subscription, attempts: int) -> float:
        """Seconds before redelivering after the ``attempts``-th delivery failed or timed out."""
        if sub.backoff:
            return sub.backoff[min(attempts, len(sub.backoff)) - 1]
        return self._config.backoff.delay(attempts)

    def _record(self, sub: Subscription) -> ConsumerRecord:
        flt = sub.filter
        return ConsumerRecord(sub.name, sub.pattern.pattern, flt.expression if flt else None, {
            "mode": sub.mode.value, "group": sub.is_group, "ack_timeout": sub.ack_timeout,
            "max_deliveries": sub.max_deliveries, "max_pending": sub.max_pending,
            "callable_filter": bool(flt is not None and flt.expression is None),
            "backoff": [self._delay(sub, n) for n in range(1, sub.max_deliveries)],
            "backoff_list": bool(sub.backoff), "max_ack_pending": sub.max_ack_pending})

    async def _backfill(self, sub: Subscription, logged: list[Event]) -> None:
        chosen = [e for e in logged if sub.pattern.matches(e.topic) and e.id not in sub.pending
                  and (sub.filter is None or self._passes(sub, e))]
        if not chosen:
            return
        if self._tracks:
            await _resolve(self._store.write(
                (), [(sub.name, e.offset, PENDING, 0, None) for e in chosen]))
        # Older than anything routed live meanwhile, so they go to the front.
        for event in reversed(chosen):
            p = pending(event)
            sub.pending[event.id] = p
            sub.ready.appendleft(p)
        sub.wake_one()

    async def unsubscribe(self, subscriber_id: str) -> None:
        """Detach a subscriber; the last member leaving deletes the subscription and its state.

        Its unacked deliveries go back to the group's other members. Also
        accepts the name of a durable subscription no one has re-attached.
        Its receiver's ``recv()`` returns None from now on.
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
        if self._owned:
            await _resolve(self._store.detach(sub.name))
        await _resolve(self._store.drop_consumer(sub.name))

    # -- acks -------------------------------------------------------------------

    async def ack(self, ack: EventAck) -> None:
        """Apply ``ack`` without going through an AckSender."""
        await self._settle(ack, None)

    def _check_ack(self, ack: EventAck,
                   member: Member | None) -> tuple[Subscription, Pending] | None:
        """The delivery ``ack`` refers to, None for a repeat of an applied ack, else AckError."""
        if self._closed:
            raise BrokerClosedError("broker is closed; acks are no longer accepted",
                                    subscriber=getattr(ack, "subscriber", None))
        if not isinstance(ack, EventAck):
            raise EventTypeError(f"expected an EventAck, got {type(ack).__name__}", value=ack)
        sid, eid = ack.subscriber, ack.event_id
        if member is None:
            member = self._members.get(sid)
            if member is None:
                raise AckError(f"ack for event {eid!r} names unknown subscriber {sid!r}",
                               event_id=eid, subscriber=sid)
        elif sid != member.id:
            raise AckError(f"ack for event {eid!r} names subscriber {sid!r} but was sent on "
                           f"the channel of {member.id!r}", event_id=eid, subscriber=sid)
        if member.closed:
            raise AckError(f"subscriber {sid!r} has unsubscribed; its ack for {eid!r} is void",
                           event_id=eid, subscriber=sid)
        sub = member.sub
        p = sub.pending.get(eid)
        if p is None:
            done = sub.acked_attempt(eid)
            if done is not None and ack.ok and ack.effects is None \
                    and ack.attempt in (None, done):
                return None  # the same success ack again: already applied, nothing to do
            raise AckError(f"event {eid!r} is not pending for subscriber {sid!r} (unknown, "
                           "already acknowledged or dead-lettered)", event_id=eid, subscriber=sid)
        if p.state != INFLIGHT or p.member is not member or (
                ack.attempt is not None and ack.attempt != p.attempt):
            raise AckError(self._stale_reason(ack, p, member), event_id=eid, subscriber=sid)
        if ack.effects is not None and not sub.exactly_once:
            raise AckError(f"ack effects need an exactly-once subscription; {sub.name!r} is "
                           f"{sub.mode.value}", event_id=eid, subscriber=sid)
        return sub, p

    async def _settle(self, ack: EventAck, member: Member | None) -> None:
        # Fast path: the common valid ack on its own channel; anything unusual
        # goes through _check_ack, which raises the precise error.
        sub = p = None
        if member is not None and type(ack) is EventAck:
            sub = member.sub
            p = sub.pending.get(ack.event_id)
        if (p is None or p.member is not member or p.state != INFLIGHT or self._closed
                or ack.subscriber != p.subscriber
                or (ack.attempt is not None and ack.attempt != p.attempt)
                or (ack.effects is not None and not sub.exactly_once)):  # type: ignore
            found = self._check_ack(ack, member)
            if found is None:
                return
            sub, p = found
        assert sub is not None
        if not ack.ok:
            self._fail(sub, p, ack)
            return
        # Out of inflight first, so the timer cannot redeliver while the store writes.
        del sub.inflight[p.id]
        p.state = FINISHING
        if not self._quiet_acks or sub.exactly_once:  # else the store keeps no delivery state
            await self._write_ack(sub, p, ack.effects)
        sub.acked(p)  # inlined _acked(): one call less per ack
        self._ledger.on_acked(p)
        if self._space_waiters:
            self._wake_publishers()

    async def _write_ack(self, sub: Subscription, p: Pending, effects: Any) -> None:
        """Make an ack (and an exactly-once subscription's effects) durable, then finish."""
        offset = p.event.offset
        fx = ((sub.name, offset, effects or {}),) if sub.exactly_once else ()
        try:
            if self._owned:
                if fx:
                    await _resolve(self._store.write((), (), fx))
                await _resolve(self._store.settle(sub.name, p.event, ACKED, p.attempt))
            else:
                result = self._store.write((), ((sub.name, offset, ACKED, p.attempt, None),), fx)
                if not self._immediate:
                    await result  # type: ignore[misc]
        except BaseException:
            self._unfinish(sub, p)
            raise

    async def _settle_many(self, acks: list[EventAck], member: Member | None) -> None:
        """Apply several acks with one store write; all are checked before any applies."""
        checked = []
        seen: set[int] = set()
        for ack in acks:
            found = self._check_ack(ack, member)
            if found is None:
                continue
            sub, p = found
            if id(p) in seen:
                raise AckError(f"two acks for event {ack.event_id!r} in one batch",
                               event_id=ack.event_id, subscriber=ack.subscriber)
            seen.add(id(p))
            checked.append((ack, sub, p))
        if self._owned:  # the server takes acks one by one
            for ack, _, _ in checked:
                await self._settle(ack, member)
            return
        done = [(a, s, p) for a, s, p in checked if a.ok]
        updates = [(s.name, p.event.offset, ACKED, p.attempt, None) for _, s, p in done]
        fx = [(s.name, p.event.offset, a.effects or {}) for a, s, p in done if s.exactly_once]
        for _, s, p in done:
            del s.inflight[p.event.id]
            p.state = FINISHING
        try:
            result = self._store.write((), updates, fx)
            if not self._immediate:
                await result  # type: ignore[misc]
        except BaseException:
            for _, s, p in done:
                self._unfinish(s, p)
            raise
        for a, s, p in checked:
            if a.ok:
                self._acked(s, p)
            else:
                self._fail(s, p, a)

    def _unfinish(self, sub: Subscription, p: Pending) -> None:
        """The ack did not become durable: deliver again rather than lose the event."""
        if not self._closed and not sub.closed:
            sub.put(p)

    def _fail(self, sub: Subscription, p: Pending, ack: EventAck) -> None:
        self._ledger.on_failed(p.event, ack.subscriber, p.attempt, ack.error)
        if ack.final:  # terminate: no redelivery, whatever attempts are left
            sub.inflight.pop(p.event.id, None)
            p.last_error, p.member = ack.error, None
            sub.freed()
            self._dead_letter(sub, p)
            return
        self._retry(sub, p, ack.error, ack.delay, "failure")

    async def _progress(self, delivery: Delivery, member: Member) -> None:
        """In progress: the delivery's ack deadline starts again (JetStream's +WPI)."""
        if not isinstance(delivery, Delivery):
            raise EventTypeError(f"in_progress() takes the Delivery received, got "
                                 f"{type(delivery).__name__}", value=delivery)
        found = self._check_ack(EventAck.success(delivery, member.id), member)
        if found is None:
            return  # already acknowledged: nothing left to extend
        sub, p = found
        if self._owned:
            await _resolve(self._store.progress(sub.name, p.event))
            return
        p.deadline = self._clock.monotonic() + sub.ack_timeout
        del sub.inflight[p.event.id]   # re-inserted last: inflight stays in deadline order
        sub.inflight[p.event.id] = p

    def _stale_reason(self, ack: EventAck, p: Pending, member: Member) -> str:
        where = {READY: "waiting to be redelivered" if p.attempt else "not delivered yet",
                 DELAYED: "waiting out a retry delay",
                 FINISHING: "being acknowledged"}.get(p.state)
        if where is None and p.member is not member:
            where = f"in flight to {p.member.id if p.member else None!r}"
        elif where is None:
            where = f"in flight as attempt {p.attempt}"
        attempt = f"attempt {ack.attempt}" if ack.attempt is not None else "an earlier attempt"
        return (f"stale ack from subscriber {ack.subscriber!r} for event {ack.event_id!r} "
                f"({attempt}); the event is now {where}")

    def _acked(self, sub: Subscription, p: Pending) -> None:
        sub.acked(p)
        self._ledger.on_acked(p)
        if self._space_waiters:
            self._wake_publishers()

    def _finish_processed(self, sub: Subscription, p: Pending) -> None:
        """Exactly-once: the effect committed but no ack came; finish without redelivery."""
        sub.inflight.pop(p.event.id, None)
        sub.pending.pop(p.event.id, None)
        p.state = FINISHING
        if self._owned:
            self._bg(self._store.settle(sub.name, p.event, ACKED, p.attempt))
        else:
            self._write_bg((), ((sub.name, p.event.offset, ACKED, p.attempt, None),))
        self._ledger.on_finished(p.event, sub.name, p.attempt, "effect already committed")
        sub.freed()
        if self._space_waiters:
            self._wake_publishers()

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
        written = await _resolve(self._store.write((), (), ((sub.name, p.event.offset,
                                                              effects),)))
        applied: bool = written[1][0]
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

    # -- redelivery and dead letters ----------------------------------------------

    def _expired(self, sub: Subscription, p: Pending) -> None:
        """The timer found ``p``'s ack deadline passed."""
        if p.processed:
            self._finish_processed(sub, p)
        else:
            self._retry(sub, p, f"no ack within {sub.ack_timeout:g}s (attempt {p.attempt})",
                        None, "timeout")

    def _retry(self, sub: Subscription, p: Pending, error: str | None,
               delay: float | None, reason: str) -> None:
        event = p.event
        sub.inflight.pop(event.id, None)
        p.last_error = error
        p.member = None
        sub.freed()
        if p.attempt >= sub.max_deliveries:
            self._dead_letter(sub, p)
            return
        if delay is None:
            delay = self._delay(sub, p.attempt)
        self._ledger.on_redelivery(event, sub.name, p.attempt, error, reason, delay)
        if self._owned:  # nak: the store redelivers after the delay
            p.state = DELAYED
            self._bg(self._store.settle(sub.name, event, PENDING, p.attempt, delay, error))
            return
        self._write_bg((), ((sub.name, event.offset, PENDING, p.attempt, error),))
        if delay <= 0:
            sub.put(p)  # to the back of the buffer: a poison event never blocks the rest
            return
        self._timer.redeliver_later(sub, p, self._clock.monotonic() + delay)

    def _dead_letter(self, sub: Subscription, p: Pending) -> None:
        event = p.event
        sub.pending.pop(event.id, None)
        p.state = FINISHING
        if self._owned:
            self._bg(self._store.settle(sub.name, event, DEAD, p.attempt, None, p.last_error))
            self._publish_dead_letter(sub.name, event, p.attempt, p.last_error, ())
        else:
            self._publish_dead_letter(sub.name, event, p.attempt, p.last_error,
                                      ((sub.name, event.offset, DEAD, p.attempt,
                                        p.last_error),))
        if self._space_waiters:
            self._wake_publishers()

    def _publish_dead_letter(self, consumer: str, event: Event, attempts: int,
                             error: str | None, updates: Any,
                             original: dict[str, Any] | None = None) -> None:
        """Record the verdict; publish ``$dlq.<topic>`` and the advisory (not for ``$`` topics)."""
        now = self._clock.time()
        appends: list[tuple[Event, Any]] = []
        if event.topic.startswith("$"):
            # A dead letter of a dead letter would loop; record it and stop here.
            _log.warning("event %s on broker topic %r dead-lettered by %r after %d attempts",
                         event.id, event.topic, consumer, attempts)
        else:
            cfg = self._config
            dlq = Event(f"{cfg.dead_letter_prefix}.{event.topic}",
                        {"event": original or event.to_dict(), "subscriber": consumer,
                         "attempts": attempts, "last_error": error},
                        headers={"dead_letter_of": event.id}, timestamp=now)
            advisory = Event(cfg.advisory_topic,
                             {"event_id": event.id, "topic": event.topic,
                              "subscriber": consumer, "attempts": attempts,
                              "last_error": error, "dead_letter_id": dlq.id},
                             timestamp=now)
            appends = [(e, self._targets(e)) for e in (dlq, advisory)]
        if appends or (updates and self._tracks):
            result = self._store.write([(e, [s.name for s in t]) for e, t in appends], updates)
            if self._immediate:
                self._route_written(appends, result[0])  # type: ignore[index]
            else:
                result.add_done_callback(  # type: ignore[union-attr]
                    lambda f: self._route_written(appends, f.result()[0])
                    if not f.cancelled() and f.exception() is None else _log_failure(f))
        self._ledger.on_dead_lettered(event, consumer, attempts, error)

    def _dead_letter_damaged(self, damaged: DamagedRecord) -> None:
        """A stored event failed its checksum: dead-letter it for its consumer, keep going."""
        sub = self._subs.get(damaged.consumer)
        if sub is None:
            return
        _log.error("event store: event %s at offset %d is damaged (%s); dead-lettered for %r",
                   damaged.event_id, damaged.offset, damaged.error, damaged.consumer)
        stub = Event(damaged.topic, None, id=damaged.event_id, offset=damaged.offset)
        self._publish_dead_letter(
            damaged.consumer, stub, 0, damaged.error,
            ((damaged.consumer, damaged.offset, DEAD, 0, damaged.error),),
            original={"id": damaged.event_id, "topic": damaged.topic,
                      "offset": damaged.offset, "damaged": True})

    def _route_written(self, appends: list[tuple[Event, Any]], offsets: list[int | None]) -> None:
        for (event, targets), offset in zip(appends, offsets):
            if offset is not None:
                event.offset = offset
                self._route(event, targets)

    def _write_bg(self, appends: Any, updates: Any) -> None:
        """A store write nobody waits for (bookkeeping); failures are logged."""
        if not self._tracks or (self._closed and not self._immediate):
            return
        self._bg(self._store.write(appends, updates))

    def _bg(self, result: Any) -> None:
        if inspect.isawaitable(result):
            asyncio.ensure_future(result).add_done_callback(_log_failure)

    # -- a store that owns delivery -------------------------------------------------

    def _pushed(self, consumer: str, event: Event, attempt: int) -> None:
        """A delivery-owning store hands ``attempt`` of ``event`` to ``consumer``."""
        sub = self._subs.get(consumer)
        if sub is None or sub.closed or self._closed:
            return  # the store redelivers after its ack wait, to whoever attaches
        if sub.filter is not None and not self._passes(sub, event):
            self._bg(self._store.settle(consumer, event, ACKED, attempt, None, "filtered"))
            return
        old = sub.pending.get(event.id)
        if old is not None:  # a redelivery supersedes whatever attempt was out there
            sub.inflight.pop(event.id, None)
            old.state = FINISHING
        p = pending(event, attempt - 1)
        sub.pending[event.id] = p
        sub.put(p)

    def _store_gave_up(self, consumer: str, event: Event, attempts: int,
                       error: str | None) -> None:
        """A delivery-owning store reached max deliveries for ``event``."""
        sub = self._subs.get(consumer)
        if sub is not None:
            p = sub.pending.pop(event.id, None)
            sub.inflight.pop(event.id, None)
            if p is not None:
                p.state = FINISHING
        self._publish_dead_letter(consumer, event, attempts, error, ())

    # -- backpressure -----------------------------------------------------------------

    async def _wait_space(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._space_waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._space_waiters:
                self._space_waiters.remove(fut)

    def _wake_publishers(self) -> None:
        waiters, self._space_waiters = self._space_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- retention --------------------------------------------------------------------

    async def compact(self, older_than: float | None = None) -> int:
        """Delete finished events older than ``older_than`` seconds (default: ``retention``).

        Only events every consumer has finished (acked or dead-lettered) go;
        returns how many. Replay no longer sees them. Idempotency keys and
        id de-duplication cover what is still in the log.
        """
        self._check_open()
        if not self._opened:
            await self._open()
        window = self._config.retention if older_than is None else older_than
        if window is None:
            raise EventError("compact() needs older_than= or EventBrokerConfig(retention=...)")
        now = self._clock.time()
        self._compacted_at = now
        return int(await _resolve(self._store.compact(now - window)))

    def _maybe_compact(self) -> None:
        retention = self._config.retention
        assert retention is not None
        if self._clock.time() - self._compacted_at < retention / 4 or (
                self._compaction is not None and not self._compaction.done()):
            return
        self._compacted_at = self._clock.time()
        self._compaction = asyncio.ensure_future(self.compact())
        self._compaction.add_done_callback(_log_failure)

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
        return self._ledger.statistics(
            {name: len(sub.pending) for name, sub in self._subs.items()}, len(self._keys))

    def history(self) -> list[dict[str, Any]]:
        """One row per happening: published, delivered, acked, failed, redelivery, dead_lettered."""
        return self._ledger.history()

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
                f"subscriptions={len(self._subs)} published={self._ledger.published}>")
