"""Per-subscription delivery state, and the two channel ends a subscriber holds.

A *subscription* is the unit of delivery state: one per subscriber, or one per
subscriber group (whose members compete for its events, so each event goes to
one member). Its events are *pending* from routing until acked or
dead-lettered; a pending event is READY (buffered, waiting for a ``recv``),
INFLIGHT (handed out, waiting for an ack), DELAYED (waiting out a backoff) or
FINISHING (its ack is being written).

As in trio's memory channels, the state object does the work and the two
endpoints (:class:`EventReceiver`, :class:`AckSender`) are thin handles on it:
the receiver takes deliveries from the subscription's buffer, the ack sender
passes verdicts to the broker through the callback it was built with.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Protocol

from ...clock import Clock
from ...errors import BrokerClosedError, SubscriberError
from ._filter import EventFilter
from ._ledger import Ledger
from ._model import Delivery, DeliveryMode, Effects, Event, EventAck
from ._topics import TopicPattern

__all__ = ["EventReceiver", "AckSender"]

READY, INFLIGHT, DELAYED, FINISHING = 0, 1, 2, 3
_RECENT_ACKS = 1024           # acked ids a subscription remembers, for repeated acks
_new = object.__new__


class Alarm(Protocol):
    """What hand-out needs of the redelivery timer: when it looks next, and a re-arm."""

    armed_at: float | None

    def arm(self, due: float) -> None:
        """Look at ``due`` (monotonic) at the latest."""


@dataclass(frozen=True, slots=True)
class HandOut:
    """What a subscription needs to hand out deliveries; one per broker, shared."""

    clock: Clock
    ledger: Ledger
    #: the redelivery timer, or None when the store runs ack timeouts itself
    alarm: Alarm | None
    #: exactly-once: finish an event whose effect committed but whose ack was lost
    finish_processed: Callable[["Subscription", "Pending"], None]


class Pending(Delivery):
    """One event's delivery state within one subscription: the Delivery a receiver gets.

    One object per attempt: routing makes it, hand-out fills in the attempt and
    the member, an ack drops it. A redelivery hands out a fresh copy
    (:meth:`Subscription.renew`), so the Delivery a receiver already holds keeps
    its attempt number.
    """

    __slots__ = ("member", "deadline", "last_error", "state", "processed", "handed_at",
                 "acked_at")

    member: Member | None
    deadline: float                   # monotonic ack deadline while INFLIGHT
    last_error: str | None
    state: int
    processed: bool                   # exactly-once: its effect is committed
    handed_at: float                  # wall times for the ledger's history rows
    acked_at: float | None


def pending(event: Event, attempt: int = 0, last_error: str | None = None,
            processed: bool = False) -> Pending:
    """A READY delivery state for ``event`` after ``attempt`` earlier deliveries."""
    # Filled in place: calling the class would build an argument tuple first
    # (CPython 3.11), and this runs once per event and subscription.
    p = _new(Pending)
    p.event = event
    p.id = event.id
    p.topic = event.topic
    p.payload = event.payload
    p.attempt = attempt               # deliveries handed out so far
    p.subscriber = None               # type: ignore[assignment]  # set at hand-out
    p.member = None
    p.deadline = 0.0
    p.last_error = last_error
    p.state = READY
    p.processed = processed
    return p


class Subscription:
    """Delivery state shared by a subscriber (or by all members of a group)."""

    __slots__ = ("name", "pattern", "filter", "ack_timeout", "max_deliveries",
                 "max_pending", "is_group", "members", "ready", "getters", "inflight",
                 "pending", "reserved", "closed", "shut", "filter_unknown", "recent_acks",
                 "older_acks", "_acks_kept", "_out", "_clock", "_alarm", "_ledger", "backoff",
                 "max_ack_pending", "exactly_once", "_mode")

    def __init__(self, name: str, pattern: TopicPattern, flt: EventFilter | None,
                 mode: DeliveryMode, ack_timeout: float, max_deliveries: int,
                 max_pending: int, is_group: bool, handout: HandOut) -> None:
        self._out = handout
        # hand-out runs per delivery: its collaborators one attribute away, not two
        self._clock, self._alarm, self._ledger = handout.clock, handout.alarm, handout.ledger
        self.name = name
        self.pattern = pattern
        self.filter = flt
        self.mode = mode              # also sets exactly_once
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
        self.closed = False               # unsubscribed for good: routing skips it
        self.shut = False                 # the broker closed: receivers get None
        # event id -> attempt of recent successful acks, so a repeated ack is a no-op:
        # two generations, the older dropped whole when the newer fills (O(1), one
        # dict store per ack); at least the last ``_acks_kept`` are known
        self.recent_acks: dict[str, int] = {}
        self.older_acks: dict[str, int] = {}
        self._acks_kept = min(max_pending, _RECENT_ACKS)
        # Restored from a store whose filter was a callable: route everything
        # matching the pattern until a member re-attaches with the callable.
        self.filter_unknown = False
        #: per-attempt redelivery delays (JetStream's BackOff); () uses the broker's policy
        self.backoff: tuple[float, ...] = ()
        #: at most this many deliveries in flight; hand-out pauses at it, publishing does not
        self.max_ack_pending: int | None = None

    # -- the receiving side -------------------------------------------------------

    async def receive(self, member: "Member") -> Delivery | None:
        """The next delivery for ``member``; None once it unsubscribed or the broker closed."""
        ready = self.ready
        while True:
            if self.shut or member.closed:
                return None
            if ready and (self.max_ack_pending is None
                          or len(self.inflight) < self.max_ack_pending):
                p = ready.popleft()
                if p.state != READY:
                    continue
                if p.processed:  # exactly-once: effect committed, only the ack was lost
                    self._out.finish_processed(self, p)
                    continue
                return self._hand_out(member, p)
            fut = asyncio.get_running_loop().create_future()
            self.getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.wake_one()  # pass our wake-up on to another receiver
                raise

    def receive_nowait(self, member: "Member") -> Delivery:
        """The next ready delivery, else ``asyncio.QueueEmpty``; raises once closed."""
        if self.shut:
            raise BrokerClosedError("broker is closed", subscriber=member.id)
        if member.closed:
            raise SubscriberError(f"subscriber {member.id!r} has unsubscribed",
                                  subscriber=member.id)
        while self.ready and (self.max_ack_pending is None
                              or len(self.inflight) < self.max_ack_pending):
            p = self.ready.popleft()
            if p.state != READY:
                continue
            if p.processed:
                self._out.finish_processed(self, p)
                continue
            return self._hand_out(member, p)
        raise asyncio.QueueEmpty(f"no event ready for subscriber {member.id!r}")

    def _hand_out(self, member: "Member", p: Pending) -> Pending:
        if p.attempt:
            p = self.renew(p)
        p.attempt += 1
        p.state = INFLIGHT
        p.member = member
        p.subscriber = member.id
        self.inflight[p.id] = p
        alarm = self._alarm
        if alarm is not None:
            deadline = p.deadline = self._clock.monotonic() + self.ack_timeout
            armed = alarm.armed_at
            if armed is None or deadline < armed:
                alarm.arm(deadline)
        self._ledger.on_delivered(p)
        return p

    def renew(self, p: Pending) -> Pending:
        """A fresh state object for the next attempt; ``p`` (held by a receiver) is left as is."""
        q = pending(p.event, p.attempt, p.last_error, p.processed)
        p.state = FINISHING
        self.pending[q.id] = q
        return q

    def add(self, event: Event) -> None:
        """Buffer a newly routed ``event`` and wake one waiting receiver."""
        p = pending(event)
        self.pending[p.id] = p
        self.ready.append(p)
        getters = self.getters
        while getters:  # inlined wake_one(): this is the hot path of every publish
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def acked(self, p: Pending) -> None:
        """``p`` is finished by an ack: forget it, remember its id against a repeated ack."""
        eid = p.id
        del self.pending[eid]
        recent = self.recent_acks
        recent[eid] = p.attempt
        if len(recent) >= self._acks_kept:
            self.older_acks, self.recent_acks = recent, {}
        if self.max_ack_pending is not None and self.ready:
            self.wake_one()

    def acked_attempt(self, event_id: str) -> int | None:
        """The attempt a recent successful ack of ``event_id`` finished, else None."""
        found = self.recent_acks.get(event_id)
        return self.older_acks.get(event_id) if found is None else found

    def shut_down(self) -> None:
        """The broker closed: receivers get None from now on."""
        self.shut = True
        self.wake_all()

    # -- the buffer -----------------------------------------------------------------

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

    def freed(self) -> None:
        """A delivery left flight: under ``max_ack_pending`` a waiting receiver may go on."""
        if self.max_ack_pending is not None and self.ready:
            self.wake_one()

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
    def mode(self) -> DeliveryMode:
        """The delivery guarantee; ``exactly_once`` follows it (read per ack, so a field)."""
        return self._mode

    @mode.setter
    def mode(self, mode: DeliveryMode) -> None:
        self._mode = mode
        self.exactly_once = mode is DeliveryMode.EXACTLY_ONCE


class Member:
    """One subscriber id attached to a subscription."""

    __slots__ = ("id", "sub", "closed")

    def __init__(self, subscriber_id: str, sub: Subscription) -> None:
        self.id = subscriber_id
        self.sub = sub
        self.closed = False


class EventReceiver:
    """The receiving end: ``await rx.recv()`` or ``async for delivery in rx``.

    Each item is a :class:`~lion_nb.patterns.Delivery`. When the broker
    closes or the subscriber unsubscribes, ``recv()`` returns None (like the
    seed's ``while let Some(event) = rx.recv().await``) and iteration ends.
    """

    __slots__ = ("_member",)

    def __init__(self, member: Member) -> None:
        self._member = member

    @property
    def subscriber(self) -> str:
        """The subscriber id this receiver belongs to."""
        return self._member.id

    def recv(self) -> Awaitable[Delivery | None]:
        """Awaitable of the next delivery (waits while nothing is ready); None once closed."""
        return self._member.sub.receive(self._member)

    def recv_nowait(self) -> Delivery:
        """The next delivery if one is ready, else raise ``asyncio.QueueEmpty``.

        Raises BrokerClosedError / SubscriberError once the channel is closed.
        """
        return self._member.sub.receive_nowait(self._member)

    def __aiter__(self) -> "EventReceiver":
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self._member.sub.receive(self._member)
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    def __repr__(self) -> str:
        return f"EventReceiver({self._member.id!r}, pattern={self._member.sub.pattern.pattern!r})"


Settle = Callable[[EventAck, Member], Awaitable[None]]
SettleMany = Callable[[list[EventAck], Member], Awaitable[None]]
Progress = Callable[[Delivery, Member], Awaitable[None]]


class AckSender:
    """The acknowledging end: ``await ack_tx.send(EventAck.success(event.id, subscriber))``."""

    __slots__ = ("_member", "_settle", "_settle_many", "_progress")

    def __init__(self, member: Member, settle: Settle, settle_many: SettleMany,
                 progress: Progress) -> None:
        self._member = member
        self._settle = settle
        self._settle_many = settle_many
        self._progress = progress

    @property
    def subscriber(self) -> str:
        """The subscriber id this sender acks for."""
        return self._member.id

    def send(self, ack: EventAck) -> Awaitable[None]:
        """Awaitable that applies ``ack``; raises AckError if it is unknown or stale."""
        return self._settle(ack, self._member)

    def send_many(self, acks: Iterable[EventAck]) -> Awaitable[None]:
        """Awaitable that applies several acks in one store write (one fsync when durable).

        Every ack is checked first; if one is unknown or stale, none applies.
        """
        return self._settle_many(list(acks), self._member)

    def success(self, delivery: Delivery, *, effects: Effects | None = None) -> Awaitable[None]:
        """Shorthand for ``send(EventAck.success(delivery, <this subscriber>))``."""
        return self._settle(EventAck.success(delivery, self._member.id, effects=effects),
                            self._member)

    def failure(self, delivery: Delivery, error: object = "failed", *,
                delay: float | None = None) -> Awaitable[None]:
        """Shorthand for ``send(EventAck.failure(delivery, <this subscriber>, error))``."""
        return self._settle(EventAck.failure(delivery, self._member.id, error, delay=delay),
                            self._member)

    def terminate(self, delivery: Delivery, reason: object = "terminated") -> Awaitable[None]:
        """Give up on ``delivery`` now: no redelivery, dead-lettered with ``reason``."""
        return self._settle(EventAck.terminate(delivery, self._member.id, reason),
                            self._member)

    def in_progress(self, delivery: Delivery) -> Awaitable[None]:
        """Still working on ``delivery``: its ack timeout starts again (JetStream's +WPI)."""
        return self._progress(delivery, self._member)

    def __repr__(self) -> str:
        return f"AckSender({self._member.id!r})"
