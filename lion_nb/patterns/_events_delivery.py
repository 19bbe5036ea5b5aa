"""The broker's delivery half: hand-out, acks, redelivery and dead letters."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from typing import Any

from ..clock import Clock
from ..engine.observe import EventKind, ExecEvent, ObserveStream
from ..errors import AckError, BrokerClosedError, SubscriberError
from ._events_model import Delivery, EventAck, EventBrokerConfig, Event
from ._events_subscription import (
    DELAYED, FINISHING, INFLIGHT, READY, Member, Pending, Subscription,
)
from ._events_timer import TimerMixin
from .event_store import ACKED, DEAD, PENDING, EventStore

__all__: list[str] = []

_log = logging.getLogger("lion_nb.events")


class DeliveryMixin(TimerMixin):
    """Hand-out, ack handling, redelivery and dead-lettering for :class:`EventBroker`."""

    _config: EventBrokerConfig
    _clock: Clock
    _observe: ObserveStream | None
    _store: EventStore
    _immediate: bool
    _tracks: bool
    _closed: bool
    _subs: dict[str, Subscription]
    _members: dict[str, Member]
    _history: deque[tuple[Any, ...]] | None
    _n_delivered: int
    _n_acked: int
    _n_failed: int
    _n_redelivered: int
    _n_dead: int

    def _init_delivery(self) -> None:
        self._delayed: list[tuple[float, int, Subscription, Pending]] = []
        self._seq = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._armed_at: float | None = None
        self._sleeper: asyncio.Future[None] | None = None
        self._timer_wake: asyncio.Future[None] | None = None
        self._space_waiters: list[asyncio.Future[None]] = []

    # -- hand-out ---------------------------------------------------------------

    async def _recv(self, member: Member) -> Delivery:
        sub = member.sub
        ready = sub.ready
        while True:
            if self._closed:
                raise BrokerClosedError(f"broker is closed; subscriber {member.id!r} can "
                                        "receive no more events", subscriber=member.id)
            if member.closed:
                raise SubscriberError(f"subscriber {member.id!r} has unsubscribed",
                                      subscriber=member.id)
            if ready:
                p = ready.popleft()
                if p.state != READY:
                    continue
                if p.processed:  # exactly-once: effect committed, only the ack was lost
                    self._finish_processed(sub, p)
                    continue
                return self._hand_out(sub, member, p)
            fut = asyncio.get_running_loop().create_future()
            sub.getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    sub.wake_one()  # pass our wake-up on to another receiver
                raise

    def _recv_nowait(self, member: Member) -> Delivery:
        sub = member.sub
        if self._closed:
            raise BrokerClosedError("broker is closed", subscriber=member.id)
        if member.closed:
            raise SubscriberError(f"subscriber {member.id!r} has unsubscribed",
                                  subscriber=member.id)
        while sub.ready:
            p = sub.ready.popleft()
            if p.state != READY:
                continue
            if p.processed:
                self._finish_processed(sub, p)
                continue
            return self._hand_out(sub, member, p)
        raise asyncio.QueueEmpty(f"no event ready for subscriber {member.id!r}")

    def _hand_out(self, sub: Subscription, member: Member, p: Pending) -> Delivery:
        p.attempts += 1
        p.state = INFLIGHT
        p.member = member
        deadline = p.deadline = self._clock.monotonic() + sub.ack_timeout
        event = p.event
        sub.inflight[event.id] = p
        armed = self._armed_at
        if armed is None or deadline < armed:
            self._rearm(deadline)
        self._n_delivered += 1
        if self._history is not None:
            self._history.append((self._clock.time(), "delivered", event.topic, event.id,
                                  member.id, p.attempts, None))
        obs = self._observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_DELIVERED, event, member.id, p.attempts)
        return Delivery(event, p.attempts, member.id)

    # -- acks -------------------------------------------------------------------

    def _check_ack(self, ack: EventAck, member: Member | None) -> tuple[Subscription, Pending]:
        """The delivery ``ack`` refers to, or AckError naming why it cannot apply."""
        if self._closed:
            raise BrokerClosedError("broker is closed; acks are no longer accepted",
                                    subscriber=getattr(ack, "subscriber", None))
        if not isinstance(ack, EventAck):
            raise TypeError(f"expected an EventAck, got {type(ack).__name__}")
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
            raise AckError(f"event {eid!r} is not pending for subscriber {sid!r} (unknown, "
                           "already acknowledged or dead-lettered)", event_id=eid, subscriber=sid)
        if p.state != INFLIGHT or p.member is not member or (
                ack.attempt is not None and ack.attempt != p.attempts):
            raise AckError(self._stale_reason(ack, p, member), event_id=eid, subscriber=sid)
        if ack.effects is not None and not sub.exactly_once:
            raise AckError(f"ack effects need an exactly-once subscription; {sub.name!r} is "
                           f"{sub.mode.value}", event_id=eid, subscriber=sid)
        return sub, p

    async def _ack(self, ack: EventAck, member: Member | None = None) -> None:
        # Fast path: the common valid ack on its own channel; anything unusual
        # goes through _check_ack, which raises the precise error.
        sub = member.sub if member is not None else None
        p = sub.pending.get(ack.event_id) if sub is not None and type(ack) is EventAck else None
        if (p is None or self._closed or member.closed or p.state != INFLIGHT  # type: ignore
                or p.member is not member or ack.subscriber != member.id  # type: ignore
                or (ack.attempt is not None and ack.attempt != p.attempts)
                or (ack.effects is not None and not sub.exactly_once)):  # type: ignore
            sub, p = self._check_ack(ack, member)
        if not ack.ok:
            self._fail(sub, p, ack)
            return
        offset = p.event.offset
        update = ((sub.name, offset, ACKED, p.attempts, None),)
        fx = ((sub.name, offset, ack.effects or {}),) if sub.exactly_once else ()
        # Out of inflight first, so the timer cannot redeliver while the store writes.
        del sub.inflight[p.event.id]
        p.state = FINISHING
        if self._tracks or fx:
            try:
                result = self._store.write((), update, fx)
                if not self._immediate:
                    await result
            except BaseException:
                self._unfinish(sub, p)
                raise
        self._acked(sub, p, ack.subscriber)

    async def _ack_many(self, acks: Any, member: Member | None = None) -> None:
        """Apply several acks with one store write; all are checked before any applies."""
        checked = []
        seen: set[int] = set()
        for ack in acks:
            sub, p = self._check_ack(ack, member)
            if id(p) in seen:
                raise AckError(f"two acks for event {ack.event_id!r} in one batch",
                               event_id=ack.event_id, subscriber=ack.subscriber)
            seen.add(id(p))
            checked.append((ack, sub, p))
        done = [(a, s, p) for a, s, p in checked if a.ok]
        updates = [(s.name, p.event.offset, ACKED, p.attempts, None) for _, s, p in done]
        fx = [(s.name, p.event.offset, a.effects or {}) for a, s, p in done if s.exactly_once]
        for _, s, p in done:
            del s.inflight[p.event.id]
            p.state = FINISHING
        try:
            result = self._store.write((), updates, fx)
            if not self._immediate:
                await result
        except BaseException:
            for _, s, p in done:
                self._unfinish(s, p)
            raise
        for a, s, p in checked:
            if a.ok:
                self._acked(s, p, a.subscriber)
            else:
                self._fail(s, p, a)

    def _unfinish(self, sub: Subscription, p: Pending) -> None:
        """The ack did not become durable: deliver again rather than lose the event."""
        if not self._closed and not sub.closed:
            sub.put(p)

    def _fail(self, sub: Subscription, p: Pending, ack: EventAck) -> None:
        self._n_failed += 1
        if self._history is not None:
            self._history.append((self._clock.time(), "failed", p.event.topic, ack.event_id,
                                  ack.subscriber, p.attempts, ack.error))
        self._retry(sub, p, ack.error, ack.delay, "failure")

    def _stale_reason(self, ack: EventAck, p: Pending, member: Member) -> str:
        where = {READY: "waiting to be redelivered" if p.attempts else "not delivered yet",
                 DELAYED: "waiting out a retry delay",
                 FINISHING: "being acknowledged"}.get(p.state)
        if where is None and p.member is not member:
            where = f"in flight to {p.member.id if p.member else None!r}"
        elif where is None:
            where = f"in flight as attempt {p.attempts}"
        attempt = f"attempt {ack.attempt}" if ack.attempt is not None else "an earlier attempt"
        return (f"stale ack from subscriber {ack.subscriber!r} for event {ack.event_id!r} "
                f"({attempt}); the event is now {where}")

    def _acked(self, sub: Subscription, p: Pending, subscriber: str) -> None:
        event = p.event
        del sub.pending[event.id]
        self._n_acked += 1
        if self._space_waiters:
            self._wake_publishers()
        if self._history is not None:
            self._history.append((self._clock.time(), "acked", event.topic, event.id,
                                  subscriber, p.attempts, None))
        obs = self._observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_ACKED, event, subscriber, p.attempts)

    def _finish_processed(self, sub: Subscription, p: Pending) -> None:
        """Exactly-once: the effect committed but no ack came; finish without redelivery."""
        sub.inflight.pop(p.event.id, None)
        sub.pending.pop(p.event.id, None)
        p.state = FINISHING
        self._n_acked += 1
        self._write_bg((), ((sub.name, p.event.offset, ACKED, p.attempts, None),))
        if self._history is not None:
            self._history.append((self._clock.time(), "acked", p.event.topic, p.event.id,
                                  sub.name, p.attempts, "effect already committed"))
        if self._space_waiters:
            self._wake_publishers()

    # -- redelivery and dead letters ----------------------------------------------

    def _retry(self, sub: Subscription, p: Pending, error: str | None,
               delay: float | None, reason: str) -> None:
        event = p.event
        sub.inflight.pop(event.id, None)
        p.last_error = error
        p.member = None
        if p.attempts >= sub.max_deliveries:
            self._dead_letter(sub, p)
            return
        if delay is None:
            delay = self._config.backoff.delay(p.attempts)
        self._n_redelivered += 1
        self._write_bg((), ((sub.name, event.offset, PENDING, p.attempts, error),))
        if self._history is not None:
            self._history.append((self._clock.time(), "redelivery", event.topic, event.id,
                                  sub.name, p.attempts, error))
        obs = self._observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_REDELIVERED, event, sub.name, p.attempts,
                       reason=reason, delay=delay, error=error)
        if delay <= 0:
            sub.put(p)  # to the back of the buffer: a poison event never blocks the rest
            return
        p.state = DELAYED
        due = self._clock.monotonic() + delay
        heapq.heappush(self._delayed, (due, next(self._seq), sub, p))
        if self._armed_at is None or due < self._armed_at:
            self._rearm(due)

    def _dead_letter(self, sub: Subscription, p: Pending) -> None:
        event = p.event
        sub.pending.pop(event.id, None)
        p.state = FINISHING
        self._n_dead += 1
        now = self._clock.time()
        update = ((sub.name, event.offset, DEAD, p.attempts, p.last_error),)
        appends: list[tuple[Event, Any]] = []
        if event.topic.startswith("$"):
            # A dead letter of a dead letter would loop; record it and stop here.
            _log.warning("event %s on broker topic %r dead-lettered by %r after %d attempts",
                         event.id, event.topic, sub.name, p.attempts)
        else:
            cfg = self._config
            dlq = Event(f"{cfg.dead_letter_prefix}.{event.topic}",
                        {"event": event.to_dict(), "subscriber": sub.name,
                         "attempts": p.attempts, "last_error": p.last_error},
                        headers={"dead_letter_of": event.id}, timestamp=now)
            advisory = Event(cfg.advisory_topic,
                             {"event_id": event.id, "topic": event.topic,
                              "subscriber": sub.name, "attempts": p.attempts,
                              "last_error": p.last_error, "dead_letter_id": dlq.id},
                             timestamp=now)
            appends = [(e, self._targets(e)) for e in (dlq, advisory)]
        result = self._store.write([(e, [s.name for s in t]) for e, t in appends], update)
        if self._immediate:
            self._route_written(appends, result[0])
        else:
            result.add_done_callback(lambda f: self._route_written(appends, f.result()[0])
                                     if not f.cancelled() and f.exception() is None
                                     else _log_failure(f))
        if self._history is not None:
            self._history.append((now, "dead_lettered", event.topic, event.id, sub.name,
                                  p.attempts, p.last_error))
        obs = self._observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_DEAD_LETTERED, event, sub.name, p.attempts,
                       error=p.last_error)
        if self._space_waiters:
            self._wake_publishers()

    def _route_written(self, appends: list[tuple[Event, Any]], offsets: list[int | None]) -> None:
        for (event, targets), offset in zip(appends, offsets):
            if offset is not None:
                event.offset = offset
                self._route(event, targets)

    def _write_bg(self, appends: Any, updates: Any) -> None:
        """A store write nobody waits for (bookkeeping); failures are logged."""
        if not self._tracks or (self._closed and not self._immediate):
            return
        result = self._store.write(appends, updates)
        if not self._immediate:
            result.add_done_callback(_log_failure)

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

    # -- observe ----------------------------------------------------------------------

    def _emit(self, kind: EventKind, event: Event, subscriber: str | None, attempt: int,
              **extra: Any) -> None:
        data = {"topic": event.topic, "event_id": event.id, "subscriber": subscriber}
        data.update(extra)
        self._observe.emit(ExecEvent(kind, self._clock.time(), None, subscriber,  # type: ignore
                                     attempt, data))

    # provided by EventBroker
    def _targets(self, event: Event) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _route(self, event: Event, targets: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _log_failure(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled() and fut.exception() is not None:
        _log.error("event store bookkeeping write failed", exc_info=fut.exception())
