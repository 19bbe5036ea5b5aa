"""The broker's subscribing half: subscribe, re-attach, replay backlog, unsubscribe."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import SubscriberError
from ._events_filter import EventFilter, compile_filter
from ._events_model import DeliveryMode, Event, EventBrokerConfig
from ._events_subscription import (
    FINISHING, READY, AckSender, EventReceiver, Member, Pending, Subscription,
)
from ._events_topics import TopicPattern
from .event_store import ACKED, PENDING, ConsumerRecord

__all__: list[str] = []


async def resolve(value: Any) -> Any:
    """Await ``value`` if a store returned an awaitable, else return it."""
    return await value if inspect.isawaitable(value) else value


def check_name(value: object, what: str) -> None:
    """Raise SubscriberError unless ``value`` is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise SubscriberError(f"{what} must be a non-empty string, got {value!r}",
                              subscriber=value)


class SubscribeMixin:
    """``subscribe``/``unsubscribe`` for :class:`EventBroker`."""

    _config: EventBrokerConfig
    _subs: dict[str, Subscription]
    _members: dict[str, Member]
    _routes: dict[str, Any]

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
        check_name(subscriber_id, "subscriber id")
        if group is not None:
            check_name(group, "group name")
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
            await resolve(registered)
            if backlog is not None:
                await self._backfill(sub, await resolve(backlog))
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
        if self._store.tracks_deliveries:
            await resolve(self._store.write(
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
        await resolve(self._store.drop_consumer(sub.name))
