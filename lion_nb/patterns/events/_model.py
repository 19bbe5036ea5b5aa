"""Value types of the event broker: events, deliveries, acks, configuration, statistics."""

from __future__ import annotations

import enum
import itertools
import os
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from ...errors import AckError, ConfigError
from ...model import RetryPolicy

__all__ = [
    "Event", "Delivery", "EventAck", "DeliveryMode", "RetryBackoff", "EventBrokerConfig",
    "BrokerStatistics", "new_event_id",
]


def _fresh_prefix() -> None:
    global _IDS
    # A C-level iterator: next(_IDS) mints an id without a Python frame.
    _IDS = map(f"{uuid.uuid4().hex[:20]}%012x".__mod__, itertools.count(1))


_IDS: Iterator[str] = iter(())
_fresh_prefix()
# A forked child must not mint the parent's ids.
os.register_at_fork(after_in_child=_fresh_prefix)
_new = object.__new__


def new_event_id() -> str:
    """A unique event id: a random per-process prefix plus a counter.

    uuid4() costs more than the rest of a publish; 80 random bits per process
    and a counter are just as unique and six times cheaper.
    """
    return next(_IDS)


class Event:
    """One published fact: a topic and a JSON-able payload (the seed's ``Event::new``).

    ``id`` is minted when not given; ``timestamp`` (wall seconds) and
    ``offset`` (position in the store's log) are filled in by ``publish``.
    ``idempotency_key`` lets a publisher retry safely: within the broker's
    ``dedup_window`` a second event with the same key is not stored again.
    """

    __slots__ = ("topic", "payload", "id", "headers", "idempotency_key", "timestamp", "offset")

    def __init__(
        self,
        topic: str,
        payload: Any = None,
        *,
        id: str | None = None,  # noqa: A002 - the seed's field name
        headers: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timestamp: float | None = None,
        offset: int | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.id = next(_IDS) if id is None else id
        self.headers = dict(headers) if headers else None
        self.idempotency_key = idempotency_key
        self.timestamp = timestamp
        self.offset = offset

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-able dict (what dead letters carry)."""
        return {"id": self.id, "topic": self.topic, "payload": self.payload,
                "headers": self.headers, "idempotency_key": self.idempotency_key,
                "timestamp": self.timestamp, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Event":
        """Rebuild an event from :meth:`to_dict` output."""
        return cls(data["topic"], data.get("payload"), id=data["id"], headers=data.get("headers"),
                   idempotency_key=data.get("idempotency_key"),
                   timestamp=data.get("timestamp"), offset=data.get("offset"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Event({self.topic!r}, {self.payload!r}, id={self.id!r})"


class Delivery:
    """What a receiver gets: one delivery attempt of an event to one subscriber.

    Reads like the event (``.id``, ``.topic``, ``.payload``, ...) and adds
    ``.attempt`` (1 for the first delivery) and ``.subscriber``. Acking with
    the delivery itself (``EventAck.success(delivery, ...)``) lets the broker
    reject the ack if this attempt has gone stale.
    """

    # id, topic and payload are copied: every handler reads them, and a slot
    # reads several times faster than a property.
    __slots__ = ("event", "attempt", "subscriber", "id", "topic", "payload")

    def __init__(self, event: Event, attempt: int, subscriber: str) -> None:
        self.event = event
        self.attempt = attempt
        self.subscriber = subscriber
        self.id = event.id
        self.topic = event.topic
        self.payload = event.payload

    headers = property(lambda self: self.event.headers, doc="The event's headers.")
    timestamp = property(lambda self: self.event.timestamp, doc="When it was published.")
    offset = property(lambda self: self.event.offset, doc="Its position in the store's log.")
    idempotency_key = property(lambda self: self.event.idempotency_key, doc="Publisher's key.")

    @property
    def redelivered(self) -> bool:
        """True from the second attempt on."""
        return self.attempt > 1

    def __repr__(self) -> str:
        return (f"Delivery({self.topic!r}, id={self.id!r}, "
                f"attempt={self.attempt}, subscriber={self.subscriber!r})")


Effects = Mapping[str, Any] | Callable[[dict[str, Any]], None]


class EventAck:
    """A subscriber's verdict on a delivery: ``success`` finishes it, ``failure`` retries it."""

    __slots__ = ("event_id", "subscriber", "ok", "error", "delay", "attempt", "effects",
                 "final")

    def __init__(self, event_id: str, subscriber: str, ok: bool, *, error: str | None = None,
                 delay: float | None = None, attempt: int | None = None,
                 effects: Effects | None = None, final: bool = False) -> None:
        self.event_id = event_id
        self.subscriber = subscriber
        self.ok = ok
        self.error = error
        self.delay = delay
        self.attempt = attempt
        self.effects = effects
        self.final = final                # terminate: no redelivery, dead-lettered now

    @classmethod
    def success(cls, event: "str | Delivery", subscriber: str, *, attempt: int | None = None,
                effects: Effects | None = None) -> "EventAck":
        """Acknowledge ``event`` (an id, or the received delivery to pin its attempt).

        ``effects`` (exactly-once subscriptions only) are written to the
        subscriber's state in the same transaction as the ack: a mapping of
        keys to JSON values, or a function that edits the state dict.
        """
        if type(event) is str or not isinstance(event, Delivery):
            event_id = event
        else:
            event_id = event.id
            if attempt is None:
                attempt = event.attempt
        if cls is not EventAck:
            return cls(event_id, subscriber, True, attempt=attempt, effects=effects)
        # Every consumer builds one per event: filled in place, a keyword call to
        # the class costs twice as much (CPython 3.11 builds an args tuple and dict).
        ack = _new(EventAck)
        ack.event_id = event_id
        ack.subscriber = subscriber
        ack.ok = True
        ack.error = ack.delay = None
        ack.attempt = attempt
        ack.effects = effects
        ack.final = False
        return ack

    @classmethod
    def failure(cls, event: "str | Delivery", subscriber: str, error: object = "failed", *,
                delay: float | None = None, attempt: int | None = None) -> "EventAck":
        """Report that handling failed: redeliver after ``delay`` (default: the backoff)."""
        if delay is not None and not delay >= 0:
            raise AckError(f"failure delay must be >= 0 seconds, got {delay!r}",
                           event_id=getattr(event, "id", event), subscriber=subscriber)
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if isinstance(event, Delivery):
            return cls(event.id, subscriber, False, error=text, delay=delay,
                       attempt=event.attempt if attempt is None else attempt)
        return cls(event, subscriber, False, error=text, delay=delay, attempt=attempt)

    @classmethod
    def terminate(cls, event: "str | Delivery", subscriber: str, reason: object = "terminated",
                  *, attempt: int | None = None) -> "EventAck":
        """Give up on ``event`` now (JetStream's term): dead-lettered with ``reason``, no retry."""
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        if isinstance(event, Delivery):
            attempt = event.attempt if attempt is None else attempt
            event = event.id
        return cls(event, subscriber, False, error=text, attempt=attempt, final=True)

    def __repr__(self) -> str:
        verdict = "success" if self.ok else \
            f"{'terminate' if self.final else 'failure'}({self.error!r})"
        return f"EventAck.{verdict}[{self.event_id!r}, {self.subscriber!r}, attempt={self.attempt}]"


class DeliveryMode(enum.StrEnum):
    """Delivery guarantee of a subscription (see docs/events.md for what each covers)."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class RetryBackoff(RetryPolicy):
    """Deprecated: use :class:`~lion_nb.model.RetryPolicy` (``backoff``, ``multiplier``,
    ``max_backoff``); ``RetryBackoff(initial, multiplier, maximum)`` builds one."""

    def __init__(self, initial: float = 0.0, multiplier: float = 2.0,
                 maximum: float = 60.0) -> None:
        warnings.warn("RetryBackoff is deprecated; use lion_nb.model.RetryPolicy(backoff=..., "
                      "multiplier=..., max_backoff=...)", DeprecationWarning, stacklevel=2)
        RetryPolicy.__init__(self, backoff=initial, multiplier=multiplier,
                             max_backoff=maximum)

    @property
    def initial(self) -> float:
        """The first delay (RetryPolicy's ``backoff``)."""
        return self.backoff

    @property
    def maximum(self) -> float:
        """The longest delay (RetryPolicy's ``max_backoff``)."""
        return self.max_backoff


def _refuse(name: str, why: str, value: object) -> ConfigError:
    return ConfigError(f"EventBrokerConfig: {name} {why}, got {value!r}", field=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBrokerConfig:
    """Broker-wide defaults (keyword-only, frozen); ``subscribe`` overrides per subscriber.

    ``backoff`` is the delay policy between deliveries; the number of
    deliveries is ``max_deliveries`` (``backoff.max_attempts`` is not used).
    ``dedup_max_keys`` caps how many idempotency keys are held: past it the
    oldest are forgotten before their ``dedup_window`` ends.
    ``retention`` (seconds, None = keep all) lets ``compact()`` drop finished
    events older than that from the store, automatically every
    ``retention / 4`` seconds while publishing.
    """

    ack_timeout: float = 30.0            # seconds a delivery may stay unacked
    max_deliveries: int = 5              # attempts before the dead-letter topic
    backoff: RetryPolicy = field(default_factory=RetryPolicy)
    delivery_mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE
    max_pending: int = 1_000             # per subscriber: buffered + unacked
    on_full: str = "wait"                # "wait" or "raise" (SubscriberFullError)
    dedup_window: float = 300.0          # seconds an idempotency key is remembered
    dedup_max_keys: int = 1_000_000      # hard cap on idempotency keys held
    dead_letter_prefix: str = "$dlq"     # dead letters go to f"{prefix}.{topic}"
    advisory_topic: str = "$advisory.dead_letter"
    history_limit: int = 10_000          # rows kept for history(); 0 keeps none
    retention: float | None = None       # seconds finished events stay in the store

    def __post_init__(self) -> None:
        _positive("ack_timeout", self.ack_timeout)
        for name in ("max_deliveries", "max_pending", "dedup_max_keys"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _refuse(name, "must be an int >= 1", value)
        if not isinstance(self.backoff, RetryPolicy):
            raise _refuse("backoff", "must be a RetryPolicy", self.backoff)
        if self.on_full not in ("wait", "raise"):
            raise _refuse("on_full", "must be 'wait' or 'raise'", self.on_full)
        if not isinstance(self.dedup_window, (int, float)) or not self.dedup_window >= 0:
            raise _refuse("dedup_window", "must be >= 0 seconds", self.dedup_window)
        if not isinstance(self.history_limit, int) or self.history_limit < 0:
            raise _refuse("history_limit", "must be an int >= 0", self.history_limit)
        if self.retention is not None:
            _positive("retention", self.retention)
        for name in ("dead_letter_prefix", "advisory_topic"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("$"):
                raise _refuse(name, "must be a topic starting with '$'", value)
        try:
            object.__setattr__(self, "delivery_mode", DeliveryMode(self.delivery_mode))
        except ValueError:
            raise _refuse("delivery_mode", f"must be one of {[m.value for m in DeliveryMode]}",
                          self.delivery_mode) from None


def _positive(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 \
            or value == float("inf"):
        raise _refuse(name, "must be a finite number > 0", value)


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """Counts since the broker started; ``pending`` maps subscriber to unfinished events."""

    published: int
    duplicates: int
    delivered: int
    acked: int
    failed: int
    redelivered: int
    dead_lettered: int
    pending: Mapping[str, int]
    idempotency_keys: int = 0          # keys held for de-duplication right now
