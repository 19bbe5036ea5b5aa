"""Per-subscription delivery state, and the two channel ends a subscriber holds.

A *subscription* is the unit of delivery state: one per subscriber, or one per
subscriber group (whose members compete for its events, so each event goes to
one member). Its events are *pending* from routing until acked or
dead-lettered; a pending event is READY (buffered, waiting for a ``recv``),
INFLIGHT (handed out, waiting for an ack) or DELAYED (waiting out a backoff).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import BrokerClosedError, SubscriberError
from ._events_filter import EventFilter
from ._events_model import Delivery, DeliveryMode, Effects, Event, EventAck
from ._events_topics import TopicPattern

if TYPE_CHECKING:
    from .events import EventBroker

__all__ = ["EventReceiver", "AckSender"]

READY, INFLIGHT, DELAYED, FINISHING = 0, 1, 2, 3


class Pending:
    """One event's delivery state within one subscription."""

    __slots__ = ("event", "attempts", "member", "deadline", "last_error", "state", "processed")

    def __init__(self, event: Event, attempts: int = 0, last_error: str | None = None,
                 processed: bool = False) -> None:
        self.event = event
        self.attempts = attempts          # deliveries handed out so far
        self.member: Member | None = None
        self.deadline = 0.0
        self.last_error = last_error
        self.state = READY
        self.processed = processed        # exactly-once: its effect is committed


class Subscription:
    """Delivery state shared by a subscriber (or by all members of a group)."""

    __slots__ = ("name", "pattern", "filter", "mode", "ack_timeout", "max_deliveries",
                 "max_pending", "is_group", "members", "ready", "getters", "inflight",
                 "pending", "reserved", "closed", "filter_unknown")

    def __init__(self, name: str, pattern: TopicPattern, flt: EventFilter | None,
                 mode: DeliveryMode, ack_timeout: float, max_deliveries: int,
                 max_pending: int, is_group: bool) -> None:
        self.name = name
        self.pattern = pattern
        self.filter = flt
        self.mode = mode
        self.ack_timeout = ack_timeout
        self.max_deliveries = max_deliveries
        self.max_pending = max_pending
        self.is_group = is_group
        self.members: dict[str, Member] = {}
        self.ready: deque[Pending] = deque()
        self.getters: deque[asyncio.Future[None]] = deque()
        # Insertion order is deadline order: every entry gets now + ack_timeout.
        self.inflight: dict[str, Pending] = {}
        self.pending: dict[str, Pending] = {}
        self.reserved = 0                 # slots held by publishes awaiting the store
        self.closed = False
        # Restored from a store whose filter was a callable: route everything
        # matching the pattern until a member re-attaches with the callable.
        self.filter_unknown = False

    def put(self, p: Pending) -> None:
        """Buffer ``p`` for the next ``recv`` and wake one waiting receiver."""
        p.state = READY
        self.ready.append(p)
        getters = self.getters
        while getters:  # inlined wake_one(): this is the hot path of every publish
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_one(self) -> None:
        """Wake the longest-waiting receiver, if any."""
        getters = self.getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        """Wake every waiting receiver (close, unsubscribe)."""
        while self.getters:
            fut = self.getters.popleft()
            if not fut.done():
                fut.set_result(None)

    def room(self, extra: int) -> bool:
        """True if ``extra`` more events fit; an empty subscription always takes a batch."""
        used = len(self.pending) + self.reserved
        return used == 0 or used + extra <= self.max_pending

    @property
    def exactly_once(self) -> bool:
        """True for an exactly-once subscription."""
        return self.mode is DeliveryMode.EXACTLY_ONCE


class Member:
    """One subscriber id attached to a subscription."""

    __slots__ = ("id", "sub", "closed")

    def __init__(self, subscriber_id: str, sub: Subscription) -> None:
        self.id = subscriber_id
        self.sub = sub
        self.closed = False


class EventReceiver:
    """The receiving end: ``await rx.recv()`` or ``async for delivery in rx``.

    Each item is a :class:`~lion_nb.patterns.Delivery`. Iteration ends when
    the broker closes or the subscriber unsubscribes; ``recv()`` raises then.
    """

    __slots__ = ("_broker", "_member")

    def __init__(self, broker: "EventBroker", member: Member) -> None:
        self._broker = broker
        self._member = member

    @property
    def subscriber(self) -> str:
        """The subscriber id this receiver belongs to."""
        return self._member.id

    def recv(self) -> Any:
        """Awaitable of the next delivery (waits while nothing is ready)."""
        return self._broker._recv(self._member)

    def recv_nowait(self) -> Delivery:
        """The next delivery if one is ready, else raise ``asyncio.QueueEmpty``."""
        return self._broker._recv_nowait(self._member)

    def __aiter__(self) -> "EventReceiver":
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self._broker._recv(self._member)
        except (BrokerClosedError, SubscriberError):
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        return f"EventReceiver({self._member.id!r}, pattern={self._member.sub.pattern.pattern!r})"


class AckSender:
    """The acknowledging end: ``await ack_tx.send(EventAck.success(event.id, subscriber))``."""

    __slots__ = ("_broker", "_member")

    def __init__(self, broker: "EventBroker", member: Member) -> None:
        self._broker = broker
        self._member = member

    @property
    def subscriber(self) -> str:
        """The subscriber id this sender acks for."""
        return self._member.id

    def send(self, ack: EventAck) -> Any:
        """Awaitable that applies ``ack``; raises AckError if it is unknown or stale."""
        return self._broker._ack(ack, self._member)

    def send_many(self, acks: Any) -> Any:
        """Awaitable that applies several acks in one store write (one fsync when durable).

        Every ack is checked first; if one is unknown or stale, none applies.
        """
        return self._broker._ack_many(list(acks), self._member)

    def success(self, delivery: Delivery, *, effects: Effects | None = None) -> Any:
        """Shorthand for ``send(EventAck.success(delivery, <this subscriber>))``."""
        return self._broker._ack(EventAck.success(delivery, self._member.id, effects=effects),
                                 self._member)

    def failure(self, delivery: Delivery, error: object = "failed", *,
                delay: float | None = None) -> Any:
        """Shorthand for ``send(EventAck.failure(delivery, <this subscriber>, error))``."""
        return self._broker._ack(
            EventAck.failure(delivery, self._member.id, error, delay=delay), self._member)

    def __repr__(self) -> str:
        return f"AckSender({self._member.id!r})"
