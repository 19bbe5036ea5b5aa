"""The saga ledger: instances per status, work counters, history rows and observe events."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from ...engine import EventKind, ExecEvent, ObserveStream
from ._instance import SagaInstance
from ._status import SagaStatus

__all__ = ["SagaLedger", "SagaStatistics"]

_HISTORY_FIELDS = ("time", "saga_id", "instance_id", "event", "status", "step_id",
                   "step_name", "phase", "attempt", "error")
_STAT_NAMES = ("steps_succeeded", "step_attempts_failed", "compensations_succeeded",
               "compensation_attempts_failed", "duplicate_replies", "malformed_replies",
               "rejected_replies")
_CREATED = SagaStatus.CREATED   # a global: see _instance
_ENTRY_EVENT = {"start": "started", "ok": "succeeded", "err": "attempt_failed",
                "retry": "operator_retry", "resolved": "operator_resolved", "abort": "abort",
                "status": "status"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStatistics:
    """Instances per state now, and counts of work since the manager started."""

    created: int
    running: int
    compensating: int
    completed: int
    compensated: int
    compensation_failed: int
    failed: int
    steps_succeeded: int
    step_attempts_failed: int
    compensations_succeeded: int
    compensation_attempts_failed: int
    duplicate_replies: int
    malformed_replies: int
    rejected_replies: int   # replies to commands this manager never issued, or unsigned

    @property
    def needs_attention(self) -> int:
        """Instances waiting for an operator (COMPENSATION_FAILED or FAILED)."""
        return self.compensation_failed + self.failed


class SagaLedger:
    """What a manager has seen: told about every applied log entry, never asked to decide."""

    def __init__(self, history_limit: int, observe: ObserveStream | None) -> None:
        self._history: deque[tuple[Any, ...]] | None = (
            deque(maxlen=history_limit) if history_limit else None)
        self._observe = observe
        #: No history and no stream: a step's start changes nothing here.
        self.silent = self._history is None and observe is None
        self._counts = dict.fromkeys(SagaStatus, 0)
        self._stats = dict.fromkeys(_STAT_NAMES, 0)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the work counter ``name``."""
        self._stats[name] += n

    def created(self, inst: SagaInstance) -> None:
        """A new (or recovered) instance is held."""
        self._counts[inst.status] += 1
        if self._history is not None and inst.status is _CREATED:
            self._history.append((inst.created_at, inst.saga_id, inst.id, "created",
                                  "created", None, None, "forward", None, None))

    def rejected(self, time: float, why: str) -> None:
        """A reply was rejected before it reached any instance."""
        if self._history is not None:
            self._history.append((time, None, None, "rejected_reply", None, None, None, None,
                                  None, why))

    def applied(self, inst: SagaInstance, entry: Mapping[str, Any], old: SagaStatus) -> None:
        """``entry`` was applied to ``inst``, whose status was ``old`` before."""
        kind = entry["k"]
        if inst.status is not old:
            self._counts[old] -= 1
            self._counts[inst.status] += 1
        if kind == "start":
            if self.silent:
                return
        elif kind in ("ok", "err"):
            fwd = entry["p"] == "forward"
            if kind == "ok":
                self._stats["steps_succeeded" if fwd else "compensations_succeeded"] += 1
            else:
                self._stats["step_attempts_failed" if fwd
                            else "compensation_attempts_failed"] += 1
        hist = self._history
        obs = self._observe
        watching = obs is not None and obs.active
        if hist is None and not watching:
            return
        step_id = entry.get("s")
        t = entry["t"]
        phase = entry.get("p") or inst.phase
        if step_id is not None:
            st = inst.steps[step_id]
            self._row(inst, _ENTRY_EVENT[kind], st.status.value, step_id, st.name, phase,
                      entry, old, t)
        elif kind != "status":
            self._row(inst, _ENTRY_EVENT[kind], inst.status.value, None, None, phase, entry,
                      old, t)
        if inst.status is not old:       # the status change (explicit, or implied by it)
            self._row(inst, "status", inst.status.value, None, None, inst.phase,
                      {"e": inst.error if kind != "status" else entry.get("e")}, old, t)

    def _row(self, inst: SagaInstance, event: str, status: str, step_id: str | None,
             name: str | None, phase: str, entry: Mapping[str, Any], old: SagaStatus,
             t: float) -> None:
        if self._history is not None:
            self._history.append((t, inst.saga_id, inst.id, event, status, step_id, name,
                                  phase, entry.get("a"), entry.get("e")))
        obs = self._observe
        if obs is None or not obs.active:
            return
        okind = EventKind.SAGA_STATE if step_id is None else EventKind.SAGA_STEP
        if not obs.wants(okind):
            return
        data: dict[str, Any] = {"saga_id": inst.saga_id, "instance_id": inst.id,
                                "status": status, "event": event, "phase": phase,
                                "error": entry.get("e")}
        if step_id is None:
            data["previous"] = old.value
            data["failed_step"] = inst.failed_step
        else:
            data.update(step_id=step_id, step_name=name,
                        service=inst.definition.step(step_id).service)
        obs.emit(ExecEvent(okind, t, inst.id, step_id, entry.get("a") or 0, data))

    def history(self) -> list[dict[str, Any]]:
        """One row per saga happening (created, status change, step start/outcome, ...)."""
        if self._history is None:
            return []
        return [dict(zip(_HISTORY_FIELDS, row)) for row in self._history]

    def statistics(self) -> SagaStatistics:
        """Instances per status now and work counts (frozen snapshot)."""
        c = self._counts
        return SagaStatistics(
            created=c[SagaStatus.CREATED], running=c[SagaStatus.RUNNING],
            compensating=c[SagaStatus.COMPENSATING], completed=c[SagaStatus.COMPLETED],
            compensated=c[SagaStatus.COMPENSATED],
            compensation_failed=c[SagaStatus.COMPENSATION_FAILED],
            failed=c[SagaStatus.FAILED], **self._stats)
