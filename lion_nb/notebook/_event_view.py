"""EventView: a live view of an EventBroker — counts, and pending / dead-lettered per subscriber.

Broker events (EVENT_* on the observe stream) wake the view and count
redeliveries and dead letters per subscriber; the totals and per-subscription
pending / in-flight numbers come from ``broker.statistics()`` and
``broker.subscriptions()``, read at each flush::

    broker = EventBroker(config, observe=ObserveStream())
    view = EventView(broker)       # display it, then publish and consume
    ...
    view.close()                   # stop following, final flush

A broker built without ``observe=`` is re-read every ``poll`` seconds instead,
its dead letters counted from ``broker.history()``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..engine import EventKind as K
from ..engine import ExecEvent
from ._text import html_text, short_id
from ._live_view import LiveView, observe_of
from ._html import chip, figure_html, items_html, table_html

__all__ = ["DeliveryTrouble", "EventView"]


class DeliveryTrouble(NamedTuple):
    """A redelivery or a dead letter seen by the view."""

    time: float
    kind: str             # "redelivered" or "dead_lettered"
    subscriber: str
    topic: str
    event_id: str
    attempt: int
    error: str | None


class EventView(LiveView):
    """Broker statistics, and pending, in-flight, redelivered and dead-lettered per subscriber."""

    kinds = frozenset({K.EVENT_PUBLISHED, K.EVENT_DELIVERED, K.EVENT_ACKED,
                       K.EVENT_REDELIVERED, K.EVENT_DEAD_LETTERED})

    def __init__(self, broker: Any, *, interval: float = 0.1, poll: float = 0.5,
                 observe: Any = None, max_log: int = 5) -> None:
        import ipywidgets as w

        self.broker = broker
        self.max_log = max_log
        self.stats = broker.statistics()
        self.subscriptions: list[dict[str, Any]] = broker.subscriptions()
        self.dead_lettered: Counter[str] = Counter()
        self.redelivered: Counter[str] = Counter()
        self.last_error: dict[str, str] = {}
        self.trouble: deque[DeliveryTrouble] = deque(maxlen=1000)
        stream = observe if observe is not None else observe_of(broker)
        self.title = w.HTML()
        self.figures = w.HTML()
        self.table = w.HTML()
        self.log = w.HTML()
        #: The store's own figures (a stream and its consumers on NATS), when it has any.
        self.store_figures: dict[str, Any] | None = None
        self.store_table = w.HTML()
        self._store_fetch: asyncio.Future[Any] | None = None
        self._store_fetched = 0.0
        self._widgets = [self.title, self.figures, self.table, self.store_table, self.log]
        self.widget = w.VBox(self._widgets)
        super().__init__(stream, interval=interval, poll=None if stream is not None else poll)
        # What happened before the view existed: from the broker's own history.
        self._counted_dead = -1
        self._recount()
        self.flush()
        self._start_polling()

    # --- model ---------------------------------------------------------------------------------

    def _recount(self) -> None:
        """Per-subscriber redeliveries, dead letters and last errors from ``broker.history()``."""
        dead: Counter[str] = Counter()
        again: Counter[str] = Counter()
        errors: dict[str, str] = {}
        trouble: deque[DeliveryTrouble] = deque(maxlen=self.trouble.maxlen)
        for row in self.broker.history():
            sub, kind = row.get("subscriber"), row.get("kind")
            if sub is None or kind not in ("dead_lettered", "redelivery"):
                continue
            (dead if kind == "dead_lettered" else again)[sub] += 1
            if row.get("error"):
                errors[sub] = str(row["error"])
            trouble.append(DeliveryTrouble(
                row.get("time") or 0.0, "dead_lettered" if kind == "dead_lettered"
                else "redelivered", str(sub), str(row.get("topic")), str(row.get("event_id")),
                int(row.get("attempt") or 0), row.get("error")))
        self.dead_lettered, self.redelivered, self.last_error = dead, again, errors
        self.trouble = trouble
        self._counted_dead = self.stats.dead_lettered

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        for kind, t, _inst, sub, attempt, data in events:
            if kind is not K.EVENT_DEAD_LETTERED and kind is not K.EVENT_REDELIVERED:
                continue  # published / delivered / acked: the counts come from statistics()
            data = data or {}
            name = str(sub)
            counter = self.dead_lettered if kind is K.EVENT_DEAD_LETTERED else self.redelivered
            counter[name] += 1
            if data.get("error"):
                self.last_error[name] = str(data["error"])
            self.trouble.append(DeliveryTrouble(
                t, "dead_lettered" if kind is K.EVENT_DEAD_LETTERED else "redelivered", name,
                str(data.get("topic")), str(data.get("event_id")), attempt, data.get("error")))
        self.stats = self.broker.statistics()
        self.subscriptions = self.broker.subscriptions()
        if self._poll is not None and self.stats.dead_lettered != self._counted_dead:
            self._recount()  # no stream: the history is the only per-subscriber record
        self._maybe_fetch_store_figures()

    async def refresh_store(self) -> dict[str, Any] | None:
        """Ask the store for its own figures (stream, consumers) now and redraw the view."""
        figures = getattr(getattr(self.broker, "store", None), "figures", None)
        if figures is None or getattr(self.broker, "closed", False):
            return None
        self._store_fetched = time.monotonic()
        self.store_figures = await figures()
        self.flush()
        return self.store_figures

    def _maybe_fetch_store_figures(self) -> None:
        # A server round trip: at most once a second, never two at a time, and only from
        # inside a running loop (the view's flushes come from the loop or from close()).
        if getattr(getattr(self.broker, "store", None), "figures", None) is None:
            return
        if self._store_fetch is not None and not self._store_fetch.done():
            return
        if time.monotonic() - self._store_fetched < 1.0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._store_fetched = time.monotonic()
        self._store_fetch = loop.create_task(self._fetch_quietly())

    async def _fetch_quietly(self) -> None:
        try:
            await self.refresh_store()
        except Exception as exc:  # a view must never break the run it watches
            self.store_figures = {"error": f"{type(exc).__name__}: {exc}"}

    def _next_poll(self) -> float | None:
        return None if getattr(self.broker, "closed", False) else self._poll

    # --- widgets ---------------------------------------------------------------------------------

    def _render(self) -> None:
        s = self.stats
        state = "closed" if getattr(self.broker, "closed", False) else "open"
        store = type(getattr(self.broker, "store", None)).__name__
        self.title.value = (f"<b>Event broker</b> — {html_text(state)} "
                            f"<small>{html_text(store)}</small>")
        self.figures.value = "".join((
            figure_html("published", f"{s.published:,}"),
            figure_html("delivered", f"{s.delivered:,}"),
            figure_html("acked", f"{s.acked:,}"),
            figure_html("failed", f"{s.failed:,}", alarm=s.failed > 0),
            figure_html("redelivered", f"{s.redelivered:,}"),
            figure_html("dead-lettered", f"{s.dead_lettered:,}", alarm=s.dead_lettered > 0),
            figure_html("duplicates", f"{s.duplicates:,}")))
        rows = []
        for sub in self.subscriptions:
            name = sub["name"]
            members = sub.get("members") or []
            who = html_text(name, 60)
            if sub.get("group"):
                who += f" <small>({len(members)} members)</small>"
            dead = self.dead_lettered.get(name, 0)
            pending = int(sub.get("pending", 0))
            error = self.last_error.get(name)
            rows.append((who, f"<code>{html_text(sub.get('pattern'), 60)}</code>",
                         html_text(sub.get("mode")),
                         chip("queued", f"{pending:,}") if pending else "0",
                         f"{int(sub.get('in_flight', 0)):,}",
                         f"{self.redelivered.get(name, 0):,}",
                         chip("failed", f"{dead:,}") if dead else "0",
                         f"<code>{html_text(error, 120)}</code>" if error else ""))
        self.table.value = table_html(("subscriber", "pattern", "mode", "pending", "in flight",
                                       "redelivered", "dead-lettered", "last error"), rows)
        self.store_table.value = _store_html(self.store_figures)
        recent = list(self.trouble)[-self.max_log:] if self.max_log else []
        self.log.value = items_html([_trouble_html(x) for x in recent])

    def __repr__(self) -> str:
        s = self.stats
        pending = sum(s.pending.values())
        return (f"EventView(published={s.published}, acked={s.acked}, pending={pending}, "
                f"dead_lettered={s.dead_lettered})")


def _store_html(figures: dict[str, Any] | None) -> str:
    """The store's stream and consumer figures as a small table (empty without any)."""
    if not figures:
        return ""
    if "error" in figures:
        return f"<small>store figures unavailable: {html_text(figures['error'], 200)}</small>"
    head = (f"<small>stream <code>{html_text(figures.get('stream'), 60)}</code>: "
            f"{int(figures.get('messages', 0)):,} messages, "
            f"{int(figures.get('bytes', 0)):,} bytes, sequence "
            f"{int(figures.get('first_seq', 0)):,}–{int(figures.get('last_seq', 0)):,}</small>")
    rows = [(html_text(c.get("name"), 60), f"{int(c.get('pending', 0)):,}",
             f"{int(c.get('ack_pending', 0)):,}", f"{int(c.get('redelivered', 0)):,}",
             f"{int(c.get('acked_to', 0)):,}")
            for c in figures.get("consumers", [])]
    return head + table_html(("consumer", "not yet delivered", "awaiting ack", "redelivered",
                              "acked up to"), rows)


def _trouble_html(x: DeliveryTrouble) -> str:
    # Time and event id make each line tell one delivery apart from its neighbours.
    state = "failed" if x.kind == "dead_lettered" else "retrying"
    error = f": <code>{html_text(x.error, 120)}</code>" if x.error else ""
    when = time.strftime("%H:%M:%S", time.localtime(x.time)) + f".{int(x.time % 1 * 1000):03d}" \
        if x.time else "?"
    return (f"<small style='font-variant-numeric:tabular-nums'>{when}</small> "
            f"{chip(state, x.kind.replace('_', ' '))} <b>{html_text(x.subscriber, 60)}</b> "
            f"{html_text(x.topic, 60)} event <code title='{html_text(x.event_id)}'>"
            f"{html_text(short_id(x.event_id))}</code> attempt {x.attempt}{error}")

