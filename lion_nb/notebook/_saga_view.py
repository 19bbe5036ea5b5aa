"""SagaView: a live view of one saga instance — its steps in order and the compensation path.

SAGA_STATE and SAGA_STEP events wake the view and feed its log of
transitions; the steps' statuses come from the instance itself (the
manager's authoritative fold of the saga log), read at each flush. When the
instance reaches a final status (completed, compensated) the view stops
following and flushes at once, so ``await saga_manager.wait(...)`` returns to
a view that already shows the end::

    instance = await saga_manager.create_instance("order-saga", data)
    view = SagaView(saga_manager, instance.id)    # or SagaView(saga_manager): the next start
    view                                          # display it, then
    await saga_manager.start_instance(instance.id)

Without an observe stream on the manager (``SagaManager(..., observe=...)``)
the view re-reads the instance every ``poll`` seconds instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..engine import EventKind as K
from ..engine import ExecEvent
from ..errors import LionError
from ._text import html_text
from ._live_view import LiveView, observe_of
from ._html import chip, items_html, table_html

__all__ = ["SAGA_STATUS_STYLE", "SagaTransition", "SagaView"]

#: Saga instance status -> the STATE_STYLE entry it is drawn with.
SAGA_STATUS_STYLE = {"created": "pending", "running": "running", "completed": "succeeded",
                     "compensating": "compensating", "compensated": "compensated",
                     "compensation_failed": "compensation_failed", "failed": "failed"}
_FINAL = frozenset({"completed", "compensated"})
# The saga turned back (or stopped): a step still "pending" then never runs.
_TURNED_BACK = frozenset({"compensating", "compensated", "compensation_failed", "failed"})
_UNDO_STATES = frozenset({"compensating", "compensated", "compensation_failed"})
_BAR = {"completed": "success", "compensated": "warning", "compensating": "warning",
        "failed": "danger", "compensation_failed": "danger"}


class SagaTransition(NamedTuple):
    """One change seen on the observe stream: the saga's status or one step's."""

    time: float
    step_id: str | None   # None for a change of the saga's own status
    name: str | None
    status: str
    event: str
    phase: str
    attempt: int
    error: str | None


class SagaView(LiveView):
    """Steps in order with status colours, the compensation path as it unfolds, a log."""

    kinds = frozenset({K.SAGA_STATE, K.SAGA_STEP})

    def __init__(self, saga_manager: Any, instance_id: str | None = None, *,
                 interval: float = 0.1, poll: float = 0.2, observe: Any = None,
                 max_log: int = 8) -> None:
        import ipywidgets as w

        self.manager = saga_manager
        self.instance_id = instance_id
        self.instance: Any = None
        self.max_log = max_log
        self.status: str | None = None
        self.steps: dict[str, str] = {}          # step id -> status, in execution order
        self.compensation_path: list[str] = []   # step ids, in the order they were undone
        #: Step ids in the order the stream reported them compensated (the unfolding).
        self.compensated_seen: list[str] = []
        self.transitions: deque[SagaTransition] = deque(maxlen=1000)
        stream = observe if observe is not None else observe_of(saga_manager)
        self.title = w.HTML()
        self.progress = w.IntProgress(min=0, max=1, value=0, description="0/0",
                                      layout=w.Layout(width="60%"))
        self.steps_html = w.HTML()
        self.compensation = w.HTML()
        self.log = w.HTML()
        self._widgets = [self.title, self.progress, self.steps_html, self.compensation,
                         self.log]
        self.widget = w.VBox(self._widgets)
        super().__init__(stream, interval=interval, poll=None if stream is not None else poll)
        if instance_id is not None:
            self.instance = saga_manager.get_instance(instance_id)  # unknown id: raise now
        self.flush()
        if self.status in _FINAL:
            self.close()
        else:
            self._start_polling()

    # --- events ------------------------------------------------------------------------------

    def _on_event(self, ev: ExecEvent) -> None:
        super()._on_event(ev)
        # The end of the saga: flush now (on the loop), not a timer tick later, so
        # code that awaited the saga's end finds the view already final.
        if ev.kind is not K.SAGA_STATE or not ev.data or ev.data.get("status") not in _FINAL \
                or threading.get_ident() != self._thread or self.closed:
            return
        if self.instance_id is None:
            self._fold(self._take())  # did the buffer hold the start of this very saga?
        if str(ev.instance_id) == self.instance_id:
            self.close()

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        for kind, t, inst, step, attempt, data in events:
            data = data or {}
            if self.instance_id is None:
                # Follow the next instance that starts.
                if kind is K.SAGA_STATE and data.get("previous") == "created":
                    self.instance_id = str(inst)
                    with_instance = self._lookup()
                    if with_instance is None:
                        self.instance_id = None
                        continue
                else:
                    continue
            if str(inst) != self.instance_id:
                continue
            status = str(data.get("status"))
            self.transitions.append(SagaTransition(
                t, step, data.get("step_name"), status, str(data.get("event")),
                str(data.get("phase")), attempt, data.get("error")))
            if kind is K.SAGA_STEP and status == "compensated" and step is not None:
                self.compensated_seen.append(step)
        if self.instance_id is not None and self.instance is None:
            self._lookup()
        self._read()

    def _lookup(self) -> Any:
        try:
            self.instance = self.manager.get_instance(self.instance_id)
        except LionError:  # an instance the manager already forgot
            self.instance = None
        return self.instance

    def _read(self) -> None:
        """Take statuses from the instance (authoritative; it replaces ours)."""
        inst = self.instance
        if inst is None:
            return
        self.status = _value(inst.status)
        self.steps = {sid: _value(st.status) for sid, st in inst.steps.items()}
        self.compensation_path = list(inst.compensation_path)

    def _next_poll(self) -> float | None:
        if self._poll is None or self.status in _FINAL:
            return None
        return self._poll

    # --- widgets -------------------------------------------------------------------------

    def _render(self) -> None:
        inst = self.instance
        if inst is None:
            self.title.value = "<b>waiting for a saga to start…</b>"
            self.progress.description = "0/0"
            return
        definition = inst.definition
        status = self.status or "created"
        self.title.value = (f"<b>{html_text(definition.name, 80)}</b> — "
                            f"{chip(SAGA_STATUS_STYLE.get(status, status), status)} "
                            f"<small>{html_text(inst.id, 40)}</small>")
        total = len(self.steps)
        done = sum(1 for s in self.steps.values() if s == "succeeded")
        undone = len(self.compensation_path)
        if status in _UNDO_STATES or undone:
            # Turned back: the bar measures the undoing (full once every step that had
            # run is undone) and says so; it never silently changes meaning.
            pivots = {step.id for step in definition.steps if step.pivot}
            to_undo = sum(1 for sid, s in self.steps.items()
                          if s in _UNDO_STATES or (s == "succeeded" and sid not in pivots))
            self.progress.max = max(to_undo, 1)
            self.progress.value = undone
            self.progress.description = f"{undone}/{to_undo} undone"
        else:
            self.progress.max = max(total, 1)
            self.progress.value = done
            self.progress.description = f"{done}/{total} done"
        self.progress.bar_style = _BAR.get(status, "info")
        self.steps_html.value = table_html(("#", "step", "service", "status", "tries", "error"),
                                           self._step_rows(inst))
        self.compensation.value = self._compensation_html(inst)
        recent = list(self.transitions)[-self.max_log:] if self.max_log else []
        self.log.value = items_html([_transition_html(tr) for tr in recent])

    def _step_rows(self, inst: Any) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for k, stage in enumerate(inst.definition.stages, 1):
            for step in stage:
                st = inst.steps[step.id]
                status = self.steps.get(step.id, "pending")
                shown = chip(status)
                if status == "pending" and self.status in _TURNED_BACK:
                    shown = chip("skipped", "not run")
                tries = str(st.attempts)
                if st.comp_attempts:
                    tries += f" / undo {st.comp_attempts}"
                error = st.comp_error or st.error
                rows.append((str(k), html_text(step.name, 60), html_text(step.service, 40),
                             shown + (" ◆ pivot" if step.pivot else ""), tries,
                             f"<code>{html_text(error, 160)}</code>" if error else ""))
        return rows

    def _compensation_html(self, inst: Any) -> str:
        if not self.compensation_path and self.status not in ("compensating",
                                                              "compensation_failed"):
            return ""
        names = {s.id: s.name for s in inst.definition.steps}
        items = [f"{chip('compensated', names.get(sid, sid))}" for sid in self.compensation_path]
        for sid, status in self.steps.items():  # undoing now, or stuck undoing
            if status in ("compensating", "compensation_failed"):
                items.append(chip(status, f"{names.get(sid, sid)} ({status})"))
        why = f" <small>— {html_text(inst.reason or inst.error, 160)}</small>" \
            if (inst.reason or inst.error) else ""
        return f"<b>Compensation path</b>{why}" + items_html(items, ordered=True)

    def __repr__(self) -> str:
        undone = ", ".join(self.compensation_path)
        tail = f", compensated: {undone}" if undone else ""
        return f"SagaView({self.instance_id}, {self.status}{tail})"


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _transition_html(tr: SagaTransition) -> str:
    state = SAGA_STATUS_STYLE.get(tr.status, tr.status) if tr.step_id is None else tr.status
    what = "saga" if tr.step_id is None else html_text(tr.name or tr.step_id, 60)
    error = f": <code>{html_text(tr.error, 120)}</code>" if tr.error else ""
    attempt = f" (attempt {tr.attempt})" if tr.attempt > 1 else ""
    event = tr.event.replace("_", " ")
    if tr.step_id is not None and tr.phase == "compensate":
        event = f"undo {event}"  # "succeeded" alone would read as the step's own success
    return f"<b>{what}</b> {html_text(event)} {chip(state, tr.status)}{attempt}{error}"
