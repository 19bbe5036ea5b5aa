"""SchedulerView: a live view of a WorkflowScheduler's queue, slots, waits and policy.

What it shows comes from ``scheduler.statistics()`` (the engine's own frozen
snapshot) read at each flush, so the picture can lag by one ``interval`` but
is never wrong. While work is queued or running the view re-reads every
``interval``; idle, every ``idle_poll`` seconds. Instance starts wake it at
once; policy changes, deadline misses and yields also go to its log. It does
not subscribe to QUEUE_DEPTH on purpose: that would make the scheduler build
an event per enqueue and per dispatch, which measured 1.5-2x the time of a
10k no-op run; a re-read every ``interval`` costs nothing by comparison::

    view = SchedulerView(executor.scheduler)   # or SchedulerView(executor)
    view                                       # display it, then run things
    await executor.scheduler.change_policy("edf")
    view.close()                               # stop following, final flush
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..engine import EventKind as K
from ..engine import ExecEvent
from ._text import html_text
from ._live_view import LiveView
from ._html import bar_html, chip, figure_html, items_html, table_html

__all__ = ["SchedulerDecision", "SchedulerView", "sparkline"]

_RATE_WINDOW = 2.0  # seconds of history behind the "recent" throughput
_SAMPLE_EVERY = 0.25  # seconds between two points of the depth/throughput history
_SPARK = "▁▂▃▄▅▆▇█"
#: What a deadline miss did to its task, by SchedulerConfig.deadline_miss.
_MISS_ACTION = {"record": "ran late", "fail": "failed (DeadlineMissedError)",
                "demote": "demoted behind on-time work"}


class SchedulerDecision(NamedTuple):
    """One notable scheduler decision seen on the observe stream."""

    time: float
    kind: str            # "policy_changed", "deadline_missed" or "yielded"
    node: str | None
    instance_id: str | None
    detail: str


class SchedulerView(LiveView):
    """Queue depth per policy class, running slots, throughput, waits, misses and the policy."""

    kinds = frozenset({K.INSTANCE_STARTED, K.INSTANCE_FINISHED, K.POLICY_CHANGED,
                       K.DEADLINE_MISSED, K.NODE_YIELDED})

    def __init__(self, scheduler: Any, *, interval: float = 0.1, idle_poll: float = 1.0,
                 max_log: int = 5, keep: int = 10_000, history: int = 60) -> None:
        import ipywidgets as w

        # An executor is accepted too: it runs on one scheduler.
        self.scheduler = getattr(scheduler, "scheduler", scheduler)
        self.max_log = max_log
        self.idle_poll = idle_poll
        self.stats = self.scheduler.statistics()
        self.previous_policy: str | None = None
        self.policy_changes = 0
        self.yields = 0
        #: Notable decisions (policy changes, deadline misses, yields), oldest first.
        self.decisions: deque[SchedulerDecision] = deque(maxlen=keep)
        self.recent_rate = 0.0
        self._rates: deque[tuple[float, int]] = deque()
        #: (monotonic time, queued, recent throughput) samples: what stays after the run.
        self.history: deque[tuple[float, int, float]] = deque(maxlen=max(history, 2))
        self._peak = 0
        self.title = w.HTML()
        self.slots = w.IntProgress(min=0, max=1, value=0, description="slots",
                                   layout=w.Layout(width="60%"))
        self.queue = w.HTML()
        self.figures = w.HTML()
        self.log = w.HTML()
        self._widgets = [self.title, self.slots, self.queue, self.figures, self.log]
        self.widget = w.VBox(self._widgets)
        super().__init__(self.scheduler.observe, interval=interval)
        self.flush()
        self._start_polling()

    # --- model -------------------------------------------------------------------------------

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        for kind, t, inst, node, _attempt, data in events:
            data = data or {}
            if kind is K.POLICY_CHANGED:
                self.policy_changes += 1
                self.previous_policy = data.get("from")
                detail = f"{data.get('from')} → {data.get('to')}, " \
                         f"{data.get('requeued', 0)} re-queued"
            elif kind is K.DEADLINE_MISSED:
                late = float(data.get("late_by") or 0.0)
                action = str(data.get("action") or "record")
                detail = f"late by {_ms(late)}: {_MISS_ACTION.get(action, action)}"
            elif kind is K.NODE_YIELDED:
                self.yields += 1
                detail = "yielded its slot"
            else:
                continue  # instance start/finish: a wake-up only, numbers come from statistics()
            self.decisions.append(SchedulerDecision(t, str(kind), node,
                                                     None if inst is None else str(inst), detail))
        self.stats = self.scheduler.statistics()
        now = time.monotonic()
        rates = self._rates
        rates.append((now, self.stats.completed))
        while len(rates) > 2 and now - rates[1][0] >= _RATE_WINDOW:
            rates.popleft()
        t0, c0 = rates[0]
        self.recent_rate = (self.stats.completed - c0) / (now - t0) if now > t0 else 0.0
        # Each point keeps the peak depth of its window: a burst between samples still shows.
        self._peak = max(self._peak, self.stats.queued + self.stats.running)
        if not self.history or now - self.history[-1][0] >= _SAMPLE_EVERY:
            self.history.append((now, self._peak, self.recent_rate))
            self._peak = 0

    def _next_poll(self) -> float | None:
        if getattr(self.scheduler, "closed", False):
            return None
        busy = self.stats.running or self.stats.queued
        # Idle, a slow heartbeat still notices work submitted straight to the scheduler.
        return self.interval if busy else self.idle_poll

    # --- widgets -------------------------------------------------------------------------------

    def _render(self) -> None:
        s = self.stats
        was = f" <small>(was {html_text(self.previous_policy)})</small>" \
            if self.previous_policy else ""
        closed = " — <i>closed</i>" if getattr(self.scheduler, "closed", False) else ""
        self.title.value = f"<b>Scheduler</b> — policy <b>{html_text(s.policy)}</b>{was}{closed}"
        self.slots.max = max(s.max_concurrent, 1)
        self.slots.value = s.running
        self.slots.description = f"{s.running}/{s.max_concurrent} slots"
        self.slots.bar_style = "warning" if s.running >= s.max_concurrent else "info"
        scale = max(s.queued, 1)
        rows = [(html_text(name), bar_html(n, scale), f"{n:,}")
                for name, n in s.queued_by_class.items()]
        shown = sum(s.queued_by_class.values())
        held = f" ({s.queued - shown:,} held back: overflow, group or pool limits)" \
            if s.queued > shown else ""
        self.queue.value = (f"<small>queued <b>{s.queued:,}</b>{held}</small>"
                            + table_html(("class", "", "queued"), rows))
        # A rate "now" only means something while work is on; idle, say so instead.
        now = f"{self.recent_rate:,.1f}/s now" if s.running or s.queued else "idle"
        self.figures.value = "".join((
            figure_html("dispatched", f"{s.dispatched:,}"),
            figure_html("completed", f"{s.completed:,}"),
            figure_html("throughput", f"{s.throughput:,.1f}/s avg, {now}"),
            figure_html("wait p50", _ms(s.wait_p50)),
            figure_html("p95", _ms(s.wait_p95)),
            figure_html("deadline misses", f"{s.deadline_misses:,}",
                        alarm=s.deadline_misses > 0),
            figure_html("yields", f"{self.yields:,}"))) + self._history_html()
        recent = list(self.decisions)[-self.max_log:] if self.max_log else []
        self.log.value = items_html([_decision_html(d) for d in recent])

    def _history_html(self) -> str:
        """Sparklines of depth and throughput: the run's shape, still there once it is idle."""
        if len(self.history) < 2:
            return ""
        depth = [d for _, d, _ in self.history]
        rate = [r for _, _, r in self.history]
        span = self.history[-1][0] - self.history[0][0]
        return (f"<div><small>last {span:,.0f}s — depth <code>{sparkline(depth)}</code> "
                f"max {max(depth):,} · throughput <code>{sparkline(rate)}</code> "
                f"max {max(rate):,.1f}/s</small></div>")

    def __repr__(self) -> str:
        s = self.stats
        return (f"SchedulerView({s.policy}, queued={s.queued}, running={s.running}/"
                f"{s.max_concurrent}, completed={s.completed}, "
                f"deadline_misses={s.deadline_misses})")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def sparkline(values: list[float] | list[int]) -> str:
    """Values as a line of block characters, scaled to the largest (all zero: the lowest)."""
    top = max(values, default=0)
    if top <= 0:
        return _SPARK[0] * len(values)
    last = len(_SPARK) - 1
    return "".join(_SPARK[min(last, round(v / top * last))] for v in values)


def _decision_html(d: SchedulerDecision) -> str:
    # A policy change is news, not work: a neutral chip, not a node state's colours.
    state = {"deadline_missed": "failed", "yielded": "running"}.get(d.kind, "policy")
    who = f" <b>{html_text(d.node, 60)}</b>" if d.node else ""
    return f"{chip(state, d.kind.replace('_', ' '))}{who} {html_text(d.detail, 120)}"
