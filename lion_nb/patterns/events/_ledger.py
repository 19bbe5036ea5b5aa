"""The broker's ledger: counters, history rows and observe events, one place for all three."""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

from ...clock import Clock
from ...engine.observe import EventKind, ExecEvent, ObserveStream
from ._model import BrokerStatistics, Event

__all__ = ["Ledger"]

_HISTORY_FIELDS = ("time", "kind", "topic", "event_id", "subscriber", "attempt", "error")


class Ledger:
    """What happened to events: counts since start, the last ``history_limit`` rows, observe.

    ``observe`` (optional) receives EVENT_* execution events; nothing is built
    for it while it has no subscriber.
    """

    __slots__ = ("published", "duplicates", "delivered", "acked", "failed", "redelivered",
                 "dead_lettered", "rows", "_clock", "observe")

    def __init__(self, clock: Clock, observe: ObserveStream | None, history_limit: int) -> None:
        self.published = self.duplicates = self.delivered = self.acked = 0
        self.failed = self.redelivered = self.dead_lettered = 0
        self.rows: deque[tuple[Any, ...]] | None = \
            deque(maxlen=history_limit) if history_limit else None
        self._clock = clock
        self.observe = observe

    # Each method below is on the per-event hot path: counters and rows inline.

    def on_published(self, event: Event, subscribers: Sequence[Any]) -> None:
        """A stored event was routed to ``subscribers`` (subscriptions: ``.name`` each)."""
        self.published += 1
        if self.rows is not None:
            self.rows.append((event.timestamp, "published", event.topic, event.id, None, 0,
                              None))
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_PUBLISHED, event, None, 0,
                       subscribers=[s.name for s in subscribers])

    def on_delivered(self, event: Event, subscriber: str, attempt: int) -> None:
        """An attempt was handed to ``subscriber``."""
        self.delivered += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "delivered", event.topic, event.id,
                              subscriber, attempt, None))
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_DELIVERED, event, subscriber, attempt)

    def on_acked(self, event: Event, subscriber: str, attempt: int,
                 note: str | None = None) -> None:
        """The delivery is finished successfully (``note`` says why, if not by an ack)."""
        self.acked += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "acked", event.topic, event.id, subscriber,
                              attempt, note))
        obs = self.observe
        if obs is not None and obs.active and note is None:
            self._emit(EventKind.EVENT_ACKED, event, subscriber, attempt)

    def on_failed(self, event: Event, subscriber: str, attempt: int, error: str | None) -> None:
        """The subscriber reported a failure."""
        self.failed += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "failed", event.topic, event.id, subscriber,
                              attempt, error))

    def on_redelivery(self, event: Event, subscriber: str, attempt: int, error: str | None,
                      reason: str, delay: float) -> None:
        """The event will be delivered again after ``delay`` seconds."""
        self.redelivered += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "redelivery", event.topic, event.id,
                              subscriber, attempt, error))
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_REDELIVERED, event, subscriber, attempt,
                       reason=reason, delay=delay, error=error)

    def on_dead_lettered(self, event: Event, subscriber: str, attempt: int,
                         error: str | None) -> None:
        """The subscriber will not get the event again."""
        self.dead_lettered += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "dead_lettered", event.topic, event.id,
                              subscriber, attempt, error))
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_DEAD_LETTERED, event, subscriber, attempt, error=error)

    def statistics(self, pending: Mapping[str, int], keys: int) -> BrokerStatistics:
        """A frozen snapshot of the counters."""
        return BrokerStatistics(
            published=self.published, duplicates=self.duplicates, delivered=self.delivered,
            acked=self.acked, failed=self.failed, redelivered=self.redelivered,
            dead_lettered=self.dead_lettered, pending=dict(pending), idempotency_keys=keys)

    def history(self) -> list[dict[str, Any]]:
        """The kept rows as dicts (time, kind, topic, event_id, subscriber, attempt, error)."""
        if self.rows is None:
            return []
        return [dict(zip(_HISTORY_FIELDS, row)) for row in self.rows]

    def _emit(self, kind: EventKind, event: Event, subscriber: str | None, attempt: int,
              **extra: Any) -> None:
        data = {"topic": event.topic, "event_id": event.id, "subscriber": subscriber}
        data.update(extra)
        assert self.observe is not None
        self.observe.emit(ExecEvent(kind, self._clock.time(), None, subscriber, attempt, data))
