"""The broker's ledger: counters, history rows and observe events, one place for all three."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Mapping, Protocol, Sequence, Union

from ...clock import Clock
from ...engine import EventKind, ExecEvent, ObserveStream
from ._model import BrokerStatistics, Event

__all__ = ["Ledger", "Handed"]

_HISTORY_FIELDS = ("time", "kind", "topic", "event_id", "subscriber", "attempt", "error")


class Handed(Protocol):
    """A delivery attempt as the ledger keeps it: it carries its own row times."""

    id: str
    topic: str
    subscriber: str
    attempt: int
    handed_at: float                  # wall time of the hand-out
    acked_at: float | None            # wall time of the ack, once acked


#: A kept row: the Event itself (published), a Handed (delivered; acked when it
#: is in the deque twice or its earlier entry fell off) or a plain 7-tuple.
Row = Union[Event, Handed, tuple[Any, ...]]


class Ledger:
    """What happened to events: counts since start, the last ``history_limit`` rows, observe.

    ``observe`` (optional) receives EVENT_* execution events; nothing is built
    for it while it has no subscriber. The three rows of a plain round trip
    (published, delivered, acked) are kept as the objects that already exist
    and made into dicts only when :meth:`history` is read.
    """

    __slots__ = ("published", "duplicates", "delivered", "acked", "failed", "redelivered",
                 "dead_lettered", "rows", "_clock", "observe")

    def __init__(self, clock: Clock, observe: ObserveStream | None, history_limit: int) -> None:
        self.published = self.duplicates = self.delivered = self.acked = 0
        self.failed = self.redelivered = self.dead_lettered = 0
        self.rows: deque[Row] | None = deque(maxlen=history_limit) if history_limit else None
        self._clock = clock
        self.observe = observe

    # Each method below is on the per-event hot path: counters and rows inline.

    def on_published(self, event: Event, subscribers: Sequence[Any]) -> None:
        """A stored event was routed to ``subscribers`` (subscriptions: ``.name`` each)."""
        self.published += 1
        if self.rows is not None:
            self.rows.append(event)
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_PUBLISHED, event, None, 0,
                       subscribers=[s.name for s in subscribers])

    def on_delivered(self, handed: Handed) -> None:
        """An attempt was handed to its subscriber."""
        self.delivered += 1
        if self.rows is not None:
            handed.handed_at = self._clock.time()
            handed.acked_at = None
            self.rows.append(handed)
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_DELIVERED, handed, handed.subscriber, handed.attempt)

    def on_acked(self, handed: Handed) -> None:
        """The subscriber acked the attempt."""
        self.acked += 1
        if self.rows is not None:
            handed.acked_at = self._clock.time()
            self.rows.append(handed)
        obs = self.observe
        if obs is not None and obs.active:
            self._emit(EventKind.EVENT_ACKED, handed, handed.subscriber, handed.attempt)

    def on_finished(self, event: Event, subscriber: str, attempt: int, note: str) -> None:
        """The delivery is finished successfully without an ack (``note`` says why)."""
        self.acked += 1
        if self.rows is not None:
            self.rows.append((self._clock.time(), "acked", event.topic, event.id, subscriber,
                              attempt, note))

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
        rows = list(self.rows)
        # A Handed is in the deque twice once acked (delivered, then acked);
        # alone, it is its acked row if the delivered one fell off the end.
        twice = {k for k, n in Counter(id(r) for r in rows
                                       if not isinstance(r, (tuple, Event))).items() if n > 1}
        seen: set[int] = set()
        out = []
        for r in rows:
            if isinstance(r, tuple):
                row = r
            elif isinstance(r, Event):
                row = (r.timestamp, "published", r.topic, r.id, None, 0, None)
            else:
                acked = id(r) in seen if id(r) in twice else r.acked_at is not None
                seen.add(id(r))
                row = (r.acked_at if acked else r.handed_at, "acked" if acked else "delivered",
                       r.topic, r.id, r.subscriber, r.attempt, None)
            out.append(dict(zip(_HISTORY_FIELDS, row)))
        return out

    def _emit(self, kind: EventKind, event: Event | Handed, subscriber: str | None,
              attempt: int, **extra: Any) -> None:
        data = {"topic": event.topic, "event_id": event.id, "subscriber": subscriber}
        data.update(extra)
        assert self.observe is not None
        self.observe.emit(ExecEvent(kind, self._clock.time(), None, subscriber, attempt, data))
