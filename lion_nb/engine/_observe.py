"""The engine's observe stream: typed execution events and their subscribers.

Views and the history recorder learn what happens only through this stream;
the engine never imports them. Emitters check ``stream.active`` first, so with
no subscriber an event is never even built::

    stream = ObserveStream()
    seen = []
    sub = stream.subscribe(seen.append)
    ...
    sub.close()
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Callable, Iterable, NamedTuple

__all__ = ["EventKind", "ExecEvent", "ObserveStream", "Subscription"]

_log = logging.getLogger("lion_nb.observe")


class EventKind(enum.StrEnum):
    """What an :class:`ExecEvent` reports."""

    INSTANCE_STARTED = "instance_started"
    INSTANCE_FINISHED = "instance_finished"
    NODE_QUEUED = "node_queued"
    NODE_STARTED = "node_started"
    NODE_SUCCEEDED = "node_succeeded"
    NODE_FAILED = "node_failed"
    NODE_SKIPPED = "node_skipped"
    NODE_UPSTREAM_FAILED = "node_upstream_failed"
    NODE_CANCELLED = "node_cancelled"
    NODE_RETRIED = "node_retried"
    NODE_YIELDED = "node_yielded"
    NODE_RESTORED = "node_restored"
    #: Many nodes whose cached result was reused, in one event (opt-in: ObserveStream).
    NODES_REUSED = "nodes_reused"
    QUEUE_DEPTH = "queue_depth"
    POLICY_CHANGED = "policy_changed"
    DEADLINE_MISSED = "deadline_missed"
    CHECKPOINT_SAVED = "checkpoint_saved"
    EVENT_PUBLISHED = "event_published"
    EVENT_DELIVERED = "event_delivered"
    EVENT_ACKED = "event_acked"
    EVENT_REDELIVERED = "event_redelivered"
    EVENT_DEAD_LETTERED = "event_dead_lettered"
    SAGA_STATE = "saga_state"
    SAGA_STEP = "saga_step"
    CAPABILITY = "capability"


class ExecEvent(NamedTuple):
    """One thing that happened. ``data`` holds kind-specific details.

    A NamedTuple because the executor builds several per node: it is the
    cheapest immutable record Python has.
    """

    kind: EventKind
    time: float
    instance_id: str | None = None
    node: str | None = None
    attempt: int = 0
    data: dict[str, Any] | None = None


Callback = Callable[[ExecEvent], None]
#: ``on_attempt(kind, time, instance_id, node, attempt, queued_at, started_at, extra)``:
#: the end of a node attempt as plain arguments (``extra``: a dict of further details, or
#: None), for a subscriber such as the history recorder that keeps fields, not events.
AttemptCallback = Callable[[EventKind, float, str, str, int, "float | None", "float | None",
                            "dict[str, Any] | None"], None]


class Subscription:
    """Handle returned by :meth:`ObserveStream.subscribe`; ``close()`` ends it."""

    __slots__ = ("_stream", "callback")

    def __init__(self, stream: "ObserveStream", callback: Callback) -> None:
        self._stream = stream
        self.callback = callback

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._stream._remove(self.callback)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ObserveStream:
    """Synchronous publish/subscribe of :class:`ExecEvent`, filtered by kind.

    Callbacks run inline on the emitting thread (the event loop) and must be
    cheap; a live view marks itself dirty and flushes on its own timer. A
    callback that raises is logged and never breaks the engine. Emitters ask
    ``wants(kind)`` first, so an event nobody listens to is never built.

    Batch kinds are opt-in: ``NODES_REUSED`` reaches only subscribers that name it,
    and they get no ``NODE_SUCCEEDED`` per reused node; every other subscriber of
    ``NODE_SUCCEEDED`` still gets one per node (``wants_singles``/``emit_singles``).
    """

    __slots__ = ("_subs", "_by_kind", "_singles", "_attempt_subs", "active", "wanted", "sinks")

    def __init__(self) -> None:
        self._subs: list[tuple[Callback, frozenset[EventKind] | None,
                               AttemptCallback | None]] = []
        self._by_kind: dict[EventKind, tuple[Callback, ...]] = {}
        self._singles: dict[EventKind, tuple[Callback, ...]] = {}
        self._attempt_subs: dict[EventKind,
                                 tuple[tuple[AttemptCallback | None, Callback], ...]] = {}
        self.active = False
        #: The kinds some subscriber listens to: ``kind in stream.wanted`` is ``wants(kind)``
        #: without a call, for the engine's per-node paths.
        self.wanted: frozenset[EventKind] = frozenset()
        #: Kind -> the ``on_attempt`` callback of its only subscriber, where it has one
        #: subscriber and that one takes fields: the engine calls it without
        #: ``attempt_ended`` in between (it runs once per node).
        self.sinks: dict[EventKind, AttemptCallback] = {}

    def subscribe(self, callback: Callback, kinds: Iterable[EventKind] | None = None, *,
                  on_attempt: AttemptCallback | None = None) -> Subscription:
        """Call ``callback(event)`` for every event (of ``kinds``, if given) from now on.

        ``on_attempt``, if given, receives the ends of node attempts reported with
        :meth:`attempt_ended` as plain arguments instead, so no event is built for it.
        """
        self._subs.append((callback, None if kinds is None else frozenset(kinds), on_attempt))
        self._rebuild()
        return Subscription(self, callback)

    def _remove(self, callback: Callback) -> None:
        self._subs = [s for s in self._subs if s[0] is not callback]
        self._rebuild()

    def _rebuild(self) -> None:
        self._by_kind = {
            kind: cbs for kind in EventKind
            if (cbs := tuple(cb for cb, ks, _ in self._subs
                             if (kind not in _BATCHES if ks is None else kind in ks)))
        }
        self._singles = {
            batch: cbs for batch, single in _BATCHES.items()
            if (cbs := tuple(cb for cb, ks, _ in self._subs
                             if ks is None or (single in ks and batch not in ks)))
        }
        self._attempt_subs = {
            kind: pairs for kind in EventKind
            if (pairs := tuple((fast, cb) for cb, ks, fast in self._subs
                               if ks is None or kind in ks))
        }
        self.active = bool(self._subs)
        self.wanted = frozenset(self._by_kind)
        self.sinks = {kind: pairs[0][0] for kind, pairs in self._attempt_subs.items()
                      if len(pairs) == 1 and pairs[0][0] is not None}

    def wants(self, kind: EventKind) -> bool:
        """Whether any subscriber listens to ``kind``."""
        return kind in self._by_kind

    def attempt_ended(self, kind: EventKind, time: float, instance_id: str, node: str,
                      attempt: int, queued_at: float | None, started_at: float | None,
                      extra: dict[str, Any] | None = None) -> None:
        """Report how a node attempt ended (or a node ended without one).

        Subscribers with ``on_attempt`` get the fields; the others one ExecEvent
        whose data holds ``queued_at``, ``started_at`` and the ``extra`` items.
        """
        event = None
        for fast, cb in self._attempt_subs.get(kind, ()):
            try:
                if fast is not None:
                    fast(kind, time, instance_id, node, attempt, queued_at, started_at, extra)
                    continue
                if event is None:
                    data = {"queued_at": queued_at, "started_at": started_at}
                    if extra:
                        data.update(extra)
                    event = ExecEvent(kind, time, instance_id, node, attempt, data)
                cb(event)
            except Exception:  # a broken view must not break a run
                _log.exception("observe subscriber %r failed on %s", cb, kind)

    def emit(self, event: ExecEvent) -> None:
        """Deliver ``event`` to its subscribers."""
        for cb in self._by_kind.get(event.kind, ()):
            try:
                cb(event)
            except Exception:  # a broken view must not break a run
                _log.exception("observe subscriber %r failed on %s", cb, event.kind)

    def wants_singles(self, batch: EventKind) -> bool:
        """Whether a subscriber wants the per-node events a ``batch`` event stands for."""
        return batch in self._singles

    def emit_singles(self, batch: EventKind, events: Iterable[ExecEvent]) -> None:
        """Deliver per-node ``events`` to the subscribers that did not take ``batch``."""
        callbacks = self._singles.get(batch, ())
        for event in events:
            for cb in callbacks:
                try:
                    cb(event)
                except Exception:  # a broken view must not break a run
                    _log.exception("observe subscriber %r failed on %s", cb, event.kind)


#: Batch kind -> the per-node kind it stands for (see ObserveStream).
_BATCHES = {EventKind.NODES_REUSED: EventKind.NODE_SUCCEEDED}
