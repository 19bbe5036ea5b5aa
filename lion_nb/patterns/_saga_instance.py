"""Saga instances, their steps' states, and the commands services receive.

An instance changes only by applying *log entries* (small dicts). The runner
applies each entry as it happens and the saga log persists the same entries,
so recovery after a crash is the same fold over what was committed: the
instance in memory and the instance rebuilt from the log cannot disagree.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from .. import _display
from ._saga_model import SagaDefinition, SagaStatus, StepStatus

__all__ = ["SagaInstance", "StepState", "SagaCommand", "FORWARD", "COMPENSATE"]

#: Phase markers used in log entries and commands.
FORWARD, COMPENSATE = "forward", "compensate"

_S = StepStatus


class StepState:
    """What happened to one step of one instance (forward and compensation)."""

    __slots__ = ("step_id", "name", "status", "attempts", "result", "error",
                 "comp_attempts", "comp_result", "comp_error", "inflight", "started_at",
                 "finished_at", "resolved")

    def __init__(self, step_id: str, name: str) -> None:
        self.step_id = step_id
        self.name = name
        self.status = _S.PENDING
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
        self.status = SagaStatus.CREATED
        self.steps: dict[str, StepState] = {s.id: StepState(s.id, s.name)
                                            for s in definition.steps}
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
        # Entries applied but not yet in the saga log: (sequence number, entry).
        self._unsaved: list[tuple[int, dict[str, Any]]] = []

    # -- derived -----------------------------------------------------------------

    @property
    def pivot_passed(self) -> bool:
        """True once a step without compensation succeeded: the saga only goes forward."""
        steps = self.steps
        return any(s.pivot and steps[s.id].status is _S.SUCCEEDED
                   for s in self.definition.steps)

    @property
    def phase(self) -> str:
        """``"forward"`` or ``"compensating"`` (for live views)."""
        return COMPENSATE if self.status in (SagaStatus.COMPENSATING,
                                             SagaStatus.COMPENSATION_FAILED,
                                             SagaStatus.COMPENSATED) else FORWARD

    @property
    def completed_steps(self) -> list[str]:
        """Steps that succeeded and are not undone, in execution order."""
        return [sid for sid, st in self.steps.items() if st.status is _S.SUCCEEDED]

    # -- the fold ------------------------------------------------------------------

    def apply(self, entry: Mapping[str, Any]) -> None:
        """Apply one log entry (see the module docstring)."""
        self.entries += 1
        kind = entry["k"]
        t = entry.get("t")
        if kind == "status":
            status = SagaStatus(entry["st"])
            self.status = status
            if "e" in entry:
                self.error = entry["e"]
                self.failed_step = entry.get("fs")
                if status is SagaStatus.COMPENSATING and self.reason is None:
                    self.reason, self.reason_step = self.error, self.failed_step
            if status is SagaStatus.RUNNING and self.started_at is None:
                self.started_at = t
            self.finished_at = t if status.resting else None
            return
        if kind == "abort":
            self.abort_reason = entry["e"]
            return
        st = self.steps[entry["s"]]
        forward = entry["p"] == FORWARD
        if kind == "start":
            st.inflight = True
            if forward:
                st.status, st.attempts = _S.RUNNING, entry["a"]
                if st.started_at is None:
                    st.started_at = t
            else:
                st.status, st.comp_attempts = _S.COMPENSATING, entry["a"]
        elif kind == "ok":
            st.inflight = False
            st.finished_at = t
            if forward:
                st.status, st.result, st.error = _S.SUCCEEDED, entry.get("r"), None
                self.results[st.step_id] = st.result
            else:
                st.status, st.comp_result, st.comp_error = _S.COMPENSATED, entry.get("r"), None
                self.results.pop(st.step_id, None)
                self.compensation_path.append(st.step_id)
        elif kind == "err":
            st.inflight = False
            if forward:
                st.error = entry["e"]
                st.attempts = max(st.attempts, entry["a"])
                if entry.get("final"):
                    st.status, st.finished_at = _S.FAILED, t
            else:
                st.comp_error = entry["e"]
                st.comp_attempts = max(st.comp_attempts, entry["a"])
                if entry.get("final"):
                    st.status, st.finished_at = _S.COMPENSATION_FAILED, t
        elif kind == "retry":      # operator: try this step (or compensation) afresh
            st.inflight = False
            if forward:
                st.status, st.attempts = _S.PENDING, 0
            else:
                st.status, st.comp_attempts = _S.SUCCEEDED, 0
        elif kind == "resolved":   # operator: done by hand
            st.inflight = False
            st.resolved = entry.get("note") or "resolved by operator"
            st.finished_at = t
            if forward:
                st.status, st.error = _S.SUCCEEDED, None
                self.results[st.step_id] = st.result
            else:
                st.status, st.comp_error = _S.COMPENSATED, None
                self.results.pop(st.step_id, None)
                self.compensation_path.append(st.step_id)
        else:
            raise ValueError(f"unknown saga log entry kind {kind!r} in instance {self.id!r}")

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


class SagaCommand:
    """What a service gets: do (or undo) one step of one saga instance.

    ``kind`` is ``"step"`` or ``"compensate"``; ``action`` is the step's
    action payload or its compensation payload; ``results`` maps earlier
    steps to their results; for a compensation ``result`` is what this very
    step returned. ``command_id`` is the same for every delivery of the same
    attempt, and stable across a manager restart: use it to de-duplicate.
    """

    __slots__ = ("command_id", "kind", "saga_id", "instance_id", "step_id", "step_name",
                 "service", "attempt", "action", "data", "results", "result", "deadline",
                 "tokens")

    def __init__(self, command_id: str, kind: str, saga_id: str, instance_id: str,
                 step_id: str, step_name: str, service: str, attempt: int, action: Any,
                 data: Any, results: Mapping[str, Any], result: Any = None,
                 deadline: float | None = None, tokens: tuple[str, ...] = ()) -> None:
        self.command_id = command_id
        self.kind = kind
        self.saga_id = saga_id
        self.instance_id = instance_id
        self.step_id = step_id
        self.step_name = step_name
        self.service = service
        self.attempt = attempt
        self.action = action
        self.data = data
        self.results = results
        self.result = result
        self.deadline = deadline
        self.tokens = tokens  # capability tokens narrowed to this step (serialized)

    @property
    def compensating(self) -> bool:
        """True for a compensation command."""
        return self.kind == "compensate"

    def to_dict(self, reply_to: str) -> dict[str, Any]:
        """The command as an event payload, with the topic to reply on."""
        return {"command_id": self.command_id, "kind": self.kind, "saga_id": self.saga_id,
                "instance_id": self.instance_id, "step_id": self.step_id,
                "step_name": self.step_name, "service": self.service,
                "attempt": self.attempt, "action": self.action, "data": self.data,
                "results": dict(self.results), "result": self.result,
                "deadline": self.deadline, "tokens": list(self.tokens), "reply_to": reply_to}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SagaCommand":
        """Rebuild a command from an event payload."""
        return cls(d["command_id"], d["kind"], d["saga_id"], d["instance_id"], d["step_id"],
                   d.get("step_name", d["step_id"]), d.get("service", ""),
                   int(d.get("attempt", 1)), d.get("action"), d.get("data"),
                   MappingProxyType(dict(d.get("results") or {})), d.get("result"),
                   d.get("deadline"), tuple(d.get("tokens") or ()))

    def __repr__(self) -> str:
        return (f"SagaCommand({self.kind} {self.step_id!r} of {self.saga_id!r}/"
                f"{self.instance_id}, attempt={self.attempt})")
