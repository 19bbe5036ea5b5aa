"""Saga instances and their steps' states: a fold over the saga log's entries.

An instance changes only by applying *log entries* (small dicts). The run
applies each entry as it happens and the saga log persists the same entries,
so recovery after a crash is the same fold over what was committed: the
instance in memory and the instance rebuilt from the log cannot disagree.

An outcome entry carries the status it implies: the fold itself moves the
saga to ``compensating``/``failed`` when a stage ends with a final failure,
to ``completed`` after the last step, to ``compensated`` after the last
compensation and to ``compensation_failed`` when one gives up. So an outcome
and the status it implies are one entry, written in one transaction, and
there is no crash window between them.

Entries (``t`` is the time in each)::

    {"k": "status", "st": status, "e": error, "fs": failed step}   explicit change
    {"k": "abort", "e": reason}
    {"k": "start", "s": step, "p": phase, "a": attempt}
    {"k": "ok", "s": step, "p": phase, "r": result}
    {"k": "err", "s": step, "p": phase, "a": attempt, "e": error text, "final": bool}
    {"k": "retry" | "resolved", "s": step, "p": phase, "note": text}   operator
"""

from __future__ import annotations

from typing import Any, Mapping

from ... import _display
from ._definition import SagaDefinition
from ._status import RESTING, SagaStatus, StepStatus

__all__ = ["SagaInstance", "StepState", "FORWARD", "COMPENSATE"]

#: Phase markers used in log entries and commands.
FORWARD, COMPENSATE = "forward", "compensate"

# Members as globals: the fold reads them on every entry, and on Python 3.11 reading one
# off its enum class goes through EnumType.__getattr__.
(_STEP_PENDING, _STEP_RUNNING, _STEP_SUCCEEDED, _STEP_FAILED, _STEP_COMPENSATING,
 _STEP_COMPENSATED, _STEP_COMPENSATION_FAILED) = (
    StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUCCEEDED, StepStatus.FAILED,
    StepStatus.COMPENSATING, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED)
(_SAGA_CREATED, _SAGA_RUNNING, _SAGA_COMPENSATING, _SAGA_COMPLETED, _SAGA_COMPENSATED,
 _SAGA_COMPENSATION_FAILED, _SAGA_FAILED) = (
    SagaStatus.CREATED, SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPLETED,
    SagaStatus.COMPENSATED, SagaStatus.COMPENSATION_FAILED, SagaStatus.FAILED)
_UNDO = (_STEP_SUCCEEDED, _STEP_COMPENSATING, _STEP_COMPENSATION_FAILED)   # still to be undone
_STATUS = {s.value: s for s in SagaStatus}   # log text -> member, without an enum call


class StepState:
    """What happened to one step of one instance (forward and compensation)."""

    __slots__ = ("step_id", "name", "stage", "status", "attempts", "result", "error",
                 "comp_attempts", "comp_result", "comp_error", "inflight", "started_at",
                 "finished_at", "resolved", "exception")

    def __init__(self, step_id: str, name: str, stage: int = 0) -> None:
        self.step_id = step_id
        self.name = name
        self.stage = stage           # index of the stage holding the step
        self.status = _STEP_PENDING
        self.attempts = 0            # forward attempts started
        self.result: Any = None
        self.error: str | None = None
        self.comp_attempts = 0       # compensation attempts started
        self.comp_result: Any = None
        self.comp_error: str | None = None
        self.inflight = False        # an attempt was started and has no outcome yet
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.resolved: str | None = None   # operator's note when marked resolved
        #: The last failed attempt's error as an exception (this process only; the
        #: log keeps its text in ``error`` / ``comp_error``).
        self.exception: BaseException | None = None

    def to_dict(self) -> dict[str, Any]:
        """The state as a plain dict (for tables and tests)."""
        return {"step_id": self.step_id, "name": self.name, "status": self.status.value,
                "attempts": self.attempts, "result": self.result, "error": self.error,
                "compensation_attempts": self.comp_attempts,
                "compensation_result": self.comp_result, "compensation_error": self.comp_error,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "resolved": self.resolved}

    def __repr__(self) -> str:
        return f"<StepState {self.step_id!r} {self.status.value} attempts={self.attempts}>"


class SagaInstance:
    """One run of a saga definition: its data, status and per-step states.

    Read it, don't change it: the manager applies log entries to it. ``steps``
    maps step id to :class:`StepState` in execution order; ``results`` maps
    each succeeded step to its result; ``compensation_path`` lists the steps
    compensated so far, in the order they were undone.
    """

    _display_kind = "saga_instance"

    def __init__(self, instance_id: str, definition: SagaDefinition, data: Any,
                 created_at: float) -> None:
        self.id = instance_id
        self.definition = definition
        self.saga_id = definition.id
        self.data = data
        self.status = _SAGA_CREATED
        self.steps: dict[str, StepState] = {
            s.id: StepState(s.id, s.name, k)
            for k, stage in enumerate(definition.stages) for s in stage}
        self.results: dict[str, Any] = {}
        self.compensation_path: list[str] = []
        self.error: str | None = None          # why it compensates / failed / needs attention
        self.failed_step: str | None = None    # the step (or compensation) that failed
        self.abort_reason: str | None = None
        self.reason: str | None = None         # why it started compensating (kept to the end)
        self.reason_step: str | None = None    # the step whose failure started it, if any
        self.created_at = created_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.entries = 0                       # log entries applied (next sequence number)
        self._cursor = 0                       # see next_stage
        self._stage_count = len(definition.stages)

    # -- derived -----------------------------------------------------------------

    @property
    def pivot_passed(self) -> bool:
        """True once a step without compensation succeeded: the saga only goes forward."""
        steps = self.steps
        for sid in self.definition.pivots:
            if steps[sid].status is _STEP_SUCCEEDED:
                return True
        return False

    @property
    def phase(self) -> str:
        """``"forward"`` or ``"compensating"`` (for live views)."""
        return COMPENSATE if self.status in (_SAGA_COMPENSATING, _SAGA_COMPENSATION_FAILED,
                                             _SAGA_COMPENSATED) else FORWARD

    @property
    def completed_steps(self) -> list[str]:
        """Steps that succeeded and are not undone, in execution order."""
        return [sid for sid, st in self.steps.items() if st.status is _STEP_SUCCEEDED]

    def inflight_steps(self) -> list[str]:
        """Forward steps started and without an outcome in the log, in definition order."""
        return [sid for sid, st in self.steps.items()
                if st.inflight and st.status is _STEP_RUNNING]

    def next_undo(self) -> str | None:
        """The next step to compensate (the last one not yet undone), or None."""
        steps = self.steps
        for s in reversed(self.definition.steps):
            if steps[s.id].status in _UNDO and not s.pivot:
                return s.id
        return None

    def next_stage(self) -> int | None:
        """Index of the first stage with a step that has not succeeded, or None."""
        steps = self.steps
        stages = self.definition.stages
        # Stages before the cursor all succeeded (apply moves it back when one no
        # longer has); plain loops, as this runs on every outcome.
        k = self._cursor
        end = self._stage_count
        while k < end:
            for s in stages[k]:
                if steps[s.id].status is not _STEP_SUCCEEDED:
                    self._cursor = k
                    return k
            k += 1
        self._cursor = end
        return None

    # -- the fold ------------------------------------------------------------------

    def apply(self, entry: Mapping[str, Any]) -> None:
        """Apply one log entry (see the module docstring)."""
        self.entries += 1
        kind = entry["k"]
        t = entry.get("t")
        if kind == "status":
            st_text = entry["st"]
            self._set(_STATUS.get(st_text) or SagaStatus(st_text), t, entry)
            return
        if kind == "abort":
            if self.status is _SAGA_CREATED:
                reason = f"aborted: {entry['e']}"
                self._set(_SAGA_COMPENSATED, t, {"e": reason, "fs": None})
            elif not self.pivot_passed:     # after a pivot an abort is refused
                self.abort_reason = entry["e"]
            return
        sid = entry["s"]
        st = self.steps[sid]
        forward = entry["p"] == FORWARD
        if st.status is _STEP_SUCCEEDED and st.stage < self._cursor:
            self._cursor = st.stage         # may stop being so: next_stage looks again
        if kind == "start":
            st.inflight = True
            if forward:
                st.status, st.attempts = _STEP_RUNNING, entry["a"]
                if st.started_at is None:
                    st.started_at = t
            else:
                st.status, st.comp_attempts = _STEP_COMPENSATING, entry["a"]
            return
        st.inflight = False
        if kind == "ok":
            st.finished_at = t
            if forward:
                st.status, st.result, st.error = _STEP_SUCCEEDED, entry.get("r"), None
                self.results[sid] = st.result
            else:
                st.status, st.comp_result, st.comp_error = (_STEP_COMPENSATED, entry.get("r"),
                                                            None)
                self.results.pop(sid, None)
                self.compensation_path.append(sid)
        elif kind == "err":
            if forward:
                st.error = entry["e"]
                st.attempts = max(st.attempts, entry["a"])
            else:
                st.comp_error = entry["e"]
                st.comp_attempts = max(st.comp_attempts, entry["a"])
            if not entry.get("final"):
                return
            st.finished_at = t
            if not forward:
                st.status = _STEP_COMPENSATION_FAILED
                self._set(_SAGA_COMPENSATION_FAILED, t, {
                    "e": f"compensation of step {sid!r} of saga {self.saga_id!r} failed after "
                         f"{st.comp_attempts} attempt(s): {st.comp_error}; call retry() or "
                         "mark_resolved()", "fs": sid})
                return
            st.status = _STEP_FAILED
        elif kind == "retry":      # operator: try this step (or compensation) afresh
            if forward:
                st.status, st.attempts = _STEP_PENDING, 0
                self._set(_SAGA_RUNNING, t, {"e": None, "fs": None})
            else:
                st.status, st.comp_attempts = _STEP_SUCCEEDED, 0
                self._set(_SAGA_COMPENSATING, t, {"e": self.reason, "fs": self.reason_step})
            return
        elif kind == "resolved":   # operator: done by hand
            st.resolved = entry.get("note") or "resolved by operator"
            st.finished_at = t
            if forward:
                st.status, st.error = _STEP_SUCCEEDED, None
                self.results[sid] = st.result
                self._set(_SAGA_RUNNING, t, {"e": None, "fs": None})
            else:
                st.status, st.comp_error = _STEP_COMPENSATED, None
                self.results.pop(sid, None)
                self.compensation_path.append(sid)
                self._set(_SAGA_COMPENSATING, t, {"e": self.reason, "fs": self.reason_step})
        else:
            raise ValueError(f"unknown saga log entry kind {kind!r} in instance {self.id!r}")
        if forward:
            self._settle_stage(st.stage, t)
        elif self.status is _SAGA_COMPENSATING:
            self._settle_undo(t)

    def _set(self, status: SagaStatus, t: Any, fields: Mapping[str, Any]) -> None:
        self.status = status
        if "e" in fields:
            self.error = fields["e"]
            self.failed_step = fields.get("fs")
            if status is _SAGA_COMPENSATING and self.reason is None:
                self.reason, self.reason_step = self.error, self.failed_step
        if status is _SAGA_RUNNING and self.started_at is None:
            self.started_at = t
        self.finished_at = t if status in RESTING else None
        if status is _SAGA_COMPENSATING:
            self._settle_undo(t)

    def _settle_stage(self, k: int, t: Any) -> None:
        """The status a forward outcome in stage ``k`` implies once that stage has ended."""
        if self.status is not _SAGA_RUNNING:
            return
        steps = self.steps
        failed = []
        for s in self.definition.stages[k]:
            status = steps[s.id].status
            if status is _STEP_FAILED:
                failed.append(s.id)
            elif status is not _STEP_SUCCEEDED:
                return                              # a sibling is still running
        if failed:
            msg = f"step {failed[0]!r} of saga {self.saga_id!r} failed: " \
                  f"{steps[failed[0]].error}"
            if self.pivot_passed:
                self._set(_SAGA_FAILED, t, {
                    "e": msg + " (after a pivot step: retry it or mark_resolved)",
                    "fs": failed[0]})
            else:
                self._set(_SAGA_COMPENSATING, t, {"e": msg, "fs": failed[0]})
            return
        if self.abort_reason is not None:
            if self.pivot_passed:      # a pivot passed meanwhile: it only goes forward
                self.abort_reason = None
            else:
                self._set(_SAGA_COMPENSATING, t, {"e": f"aborted: {self.abort_reason}",
                                                  "fs": None})
                return
        if self.next_stage() is None:
            self._set(_SAGA_COMPLETED, t, {"e": None, "fs": None})

    def _settle_undo(self, t: Any) -> None:
        """Compensating with nothing left to undo: compensated."""
        if self.next_undo() is None:
            self._set(_SAGA_COMPENSATED, t, {"e": self.reason, "fs": self.reason_step})

    # -- showing it ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain summary (status, error, per-step states)."""
        return {"id": self.id, "saga_id": self.saga_id, "status": self.status.value,
                "data": self.data, "error": self.error, "failed_step": self.failed_step,
                "abort_reason": self.abort_reason, "reason": self.reason,
                "results": dict(self.results),
                "compensation_path": list(self.compensation_path),
                "steps": [st.to_dict() for st in self.steps.values()],
                "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)

    def __repr__(self) -> str:
        steps = " ".join(f"{sid}={st.status.value}" for sid, st in self.steps.items())
        extra = f" error={self.error!r}" if self.error else ""
        return f"<SagaInstance {self.id} of {self.saga_id!r} {self.status.value}: {steps}{extra}>"
