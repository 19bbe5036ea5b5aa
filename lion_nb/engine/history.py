"""Execution history: one flat record per node attempt, kept by an observe subscriber."""

from __future__ import annotations

from typing import Any, Iterable

from .observe import EventKind as K
from .observe import ExecEvent, ObserveStream, Subscription

__all__ = ["AttemptRecord", "InstanceRecord", "HistoryRecorder"]


class AttemptRecord:
    """One attempt of one node: times are wall-clock seconds (None until known)."""

    __slots__ = ("instance_id", "workflow", "node", "attempt", "state", "queued_at",
                 "started_at", "finished_at", "error", "worker", "reason", "reason_detail")

    FIELDS = __slots__

    def __init__(self, instance_id: str, workflow: str, node: str, attempt: int,
                 queued_at: float | None) -> None:
        self.instance_id = instance_id
        self.workflow = workflow
        self.node = node
        self.attempt = attempt
        self.state = "queued"
        self.queued_at = queued_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.worker: str | None = None
        self.reason: str | None = None  # why it ran, or "reused" (runs with a cache)
        self.reason_detail: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def as_dict(self) -> dict[str, Any]:
        """Flat dict (for tables)."""
        d = {f: getattr(self, f) for f in self.FIELDS}
        d["duration"] = self.duration
        return d

    def __repr__(self) -> str:
        return f"AttemptRecord({self.node!r}#{self.attempt} {self.state})"


class InstanceRecord:
    """One instance: workflow, final state and times."""

    __slots__ = ("instance_id", "workflow", "state", "started_at", "finished_at", "error")

    def __init__(self, instance_id: str, workflow: str, started_at: float) -> None:
        self.instance_id = instance_id
        self.workflow = workflow
        self.state = "running"
        self.started_at = started_at
        self.finished_at: float | None = None
        self.error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Flat dict (for tables)."""
        d = {f: getattr(self, f) for f in self.__slots__}
        d["duration"] = (None if self.finished_at is None
                         else self.finished_at - self.started_at)
        return d


_NODE_END = {K.NODE_SUCCEEDED: "succeeded", K.NODE_FAILED: "failed", K.NODE_SKIPPED: "skipped",
             K.NODE_UPSTREAM_FAILED: "upstream_failed", K.NODE_CANCELLED: "cancelled",
             K.NODE_RETRIED: "failed", K.NODE_RESTORED: "restored"}
# One event per attempt: its end carries when it was queued and started, so the
# recorder needs neither NODE_QUEUED nor NODE_STARTED (not built unless a view asks).
KINDS = frozenset({K.INSTANCE_STARTED, K.INSTANCE_FINISHED,
                   K.CHECKPOINT_SAVED, K.NODES_REUSED, *_NODE_END})


class HistoryRecorder:
    """Keeps one record per ended attempt, plus instances and checkpoints, from a stream.

    An attempt is recorded when it ends (its end event carries when it was
    queued and started), so a running attempt is not listed yet.
    """

    def __init__(self) -> None:
        self.records: list[AttemptRecord] = []
        self.instances: dict[str, InstanceRecord] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self._sub: Subscription | None = None
        self._forgotten: set[str] = set()  # ids whose rows leave ``records`` at next compaction

    def attach(self, stream: ObserveStream) -> "HistoryRecorder":
        """Start recording ``stream``."""
        self._sub = stream.subscribe(self.on_event, KINDS)
        return self

    def detach(self) -> None:
        """Stop recording."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.records.clear()
        self.instances.clear()
        self.checkpoints.clear()
        self._forgotten.clear()

    def forget(self, instance_id: str) -> None:
        """Drop one instance's records (``retain_finished`` calls it for evicted ones)."""
        self.instances.pop(instance_id, None)
        self._forgotten.add(instance_id)
        # Rebuilding the list per instance would be quadratic in a long-running
        # process: rows leave in batches, and the readers below compact first.
        if len(self._forgotten) >= 32 + len(self.instances) // 8:
            self._compact()

    def _compact(self) -> None:
        gone = self._forgotten
        if gone:
            self.records[:] = [r for r in self.records if r.instance_id not in gone]
            self.checkpoints[:] = [c for c in self.checkpoints if c["instance_id"] not in gone]
            gone.clear()

    def on_event(self, ev: ExecEvent) -> None:
        """Fold one event into the records."""
        kind = ev.kind
        state = _NODE_END.get(kind)
        if state is not None:  # an attempt ended (or a node was decided without one)
            data = ev.data or {}
            inst = self.instances.get(ev.instance_id)  # type: ignore[arg-type]
            rec = AttemptRecord(ev.instance_id, inst.workflow if inst else "",  # type: ignore
                                ev.node, ev.attempt, data.get("queued_at"))  # type: ignore
            rec.started_at = data.get("started_at")
            rec.state = state
            rec.finished_at = ev.time
            rec.error = data.get("error")
            rec.worker = data.get("worker")
            reason = data.get("reason")
            if reason is not None:
                rec.reason = reason
                rec.reason_detail = data.get("reason_detail")
                if reason == "reused" and state == "succeeded":
                    rec.state = "reused"  # its handler did not run: no attempt, no duration
            self.records.append(rec)
        elif kind is K.NODES_REUSED:
            self._reused(ev)
        elif kind is K.INSTANCE_STARTED:
            if ev.instance_id in self._forgotten:  # the id is reused: keep its new rows
                self._compact()
            self.instances[ev.instance_id] = InstanceRecord(  # type: ignore[index]
                ev.instance_id, (ev.data or {}).get("workflow", ""), ev.time)  # type: ignore
        elif kind is K.INSTANCE_FINISHED:
            inst = self.instances.get(ev.instance_id)  # type: ignore[arg-type]
            if inst is not None:
                inst.state = (ev.data or {}).get("state", "")
                inst.finished_at = ev.time
                inst.error = (ev.data or {}).get("error")
        elif kind is K.CHECKPOINT_SAVED:
            self.checkpoints.append({"time": ev.time, "instance_id": ev.instance_id,
                                     **(ev.data or {})})

    def _reused(self, ev: ExecEvent) -> None:
        """Nodes reused from the cache: a row each, state "reused", no attempt."""
        data = ev.data or {}
        inst = self.instances.get(ev.instance_id)  # type: ignore[arg-type]
        iid, workflow, when = ev.instance_id, inst.workflow if inst else "", ev.time
        details = data.get("details") or {}
        append = self.records.append
        for name in data.get("nodes", ()):
            rec = AttemptRecord(iid, workflow, name, 0, None)  # type: ignore[arg-type]
            rec.state = rec.reason = "reused"
            rec.finished_at = when
            rec.reason_detail = details.get(name)
            append(rec)

    def attempts(self, instance_id: str | None = None) -> list[AttemptRecord]:
        """Attempt records, optionally of one instance."""
        self._compact()
        if instance_id is None:
            return list(self.records)
        return [r for r in self.records if r.instance_id == instance_id]

    def rows(self, records: Iterable[AttemptRecord] | None = None) -> list[dict[str, Any]]:
        """Attempt records as flat dicts."""
        self._compact()
        return [r.as_dict() for r in (self.records if records is None else records)]
