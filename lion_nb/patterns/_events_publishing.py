"""The broker's publishing half: topic checks, routing, idempotency keys, backpressure."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from ..engine.observe import EventKind
from ..errors import BrokerClosedError, SubscriberFullError
from ._events_model import Event, EventBrokerConfig
from ._events_subscription import Pending, Subscription
from ._events_topics import validate_topic

__all__: list[str] = []

_log = logging.getLogger("lion_nb.events")


class PublishMixin:
    """``publish``/``publish_many`` and routing for :class:`EventBroker`."""

    _config: EventBrokerConfig
    _subs: dict[str, Subscription]
    _routes: dict[str, tuple[tuple[Subscription, ...], bool, list[str]]]
    _valid_topics: set[str]
    _keys: dict[str, tuple[str, float]]

    # -- publishing -------------------------------------------------------------------

    def _check_topic(self, topic: str) -> None:
        validate_topic(topic)
        if len(self._valid_topics) < 65_536:  # a cache, not a leak
            self._valid_topics.add(topic)

    def _targets(self, event: Event) -> Sequence[Subscription]:
        """Subscriptions that take ``event``: pattern match, then each filter."""
        route = self._routes.get(event.topic) or self._new_route(event.topic)
        if not route[1]:
            return route[0]
        return [s for s in route[0] if s.filter is None or self._passes(s, event)]

    def _new_route(self, topic: str) -> tuple[tuple[Subscription, ...], bool, list[str]]:
        """Cache which subscriptions a topic reaches (cleared on every (un)subscribe)."""
        subs = tuple(s for s in self._subs.values() if s.pattern.matches(topic))
        route = (subs, any(s.filter is not None for s in subs), [s.name for s in subs])
        self._routes[topic] = route
        return route

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
            self._keys[key] = (event.id, event.timestamp)  # before any await: concurrent retries
        try:
            if self._immediate:
                offset = self._store.write(((event, names),))[0][0]
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
