"""Execution history: one row per node attempt, kept by an observe subscriber.

Rows are stored as columns (lists of shared strings, a byte per state, a
float array for the times): about 60 bytes a row instead of a record object
with its own floats, and nothing for the cyclic garbage collector to track.
``records`` makes :class:`AttemptRecord` objects from them when they are read.
"""

from __future__ import annotations

import math
from array import array
from itertools import repeat
from typing import Any, Iterable, Iterator, Sequence, overload

from ._observe import EventKind as K
from ._observe import ExecEvent, ObserveStream, Subscription

__all__ = ["AttemptRecord", "AttemptRows", "InstanceRecord", "HistoryRecorder"]


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
_STATES = ("succeeded", "failed", "skipped", "upstream_failed", "cancelled", "restored",
           "reused")
_STATE_CODE = {s: i for i, s in enumerate(_STATES)}
_KIND_CODE = {kind: _STATE_CODE[state] for kind, state in _NODE_END.items()}
_REUSED = _STATE_CODE["reused"]
_NAN = math.nan
# One event per attempt: its end carries when it was queued and started, so the
# recorder needs neither NODE_QUEUED nor NODE_STARTED (not built unless a view asks).
KINDS = frozenset({K.INSTANCE_STARTED, K.INSTANCE_FINISHED,
                   K.CHECKPOINT_SAVED, K.NODES_REUSED, *_NODE_END})


def _time(value: float) -> float | None:
    return None if value != value else value  # NaN (only NaN != NaN) stands for None


class _Columns:
    """The attempt rows, one list per field; rare fields live in a side table."""

    __slots__ = ("instance", "workflow", "node", "attempt", "state", "times", "extra")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop every row."""
        self.instance: list[str] = []
        self.workflow: list[str] = []
        self.node: list[str] = []
        self.attempt: list[int] = []
        self.state = bytearray()
        self.times = array("d")  # queued, started, finished per row; NaN for None
        # row -> (error, worker, reason, reason_detail): set on few rows only
        self.extra: dict[int, tuple[Any, Any, Any, Any]] = {}

    def record(self, row: int) -> AttemptRecord:
        times = self.times
        rec = AttemptRecord(self.instance[row], self.workflow[row], self.node[row],
                            self.attempt[row], _time(times[3 * row]))
        rec.started_at = _time(times[3 * row + 1])
        rec.finished_at = _time(times[3 * row + 2])
        rec.state = _STATES[self.state[row]]
        extra = self.extra.get(row)
        if extra is not None:
            rec.error, rec.worker, rec.reason, rec.reason_detail = extra
        elif self.state[row] == _REUSED:  # a reused row without a detail has no extra
            rec.reason = "reused"
        return rec

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in order)."""
        times = self.times
        self.instance = [self.instance[r] for r in rows]
        self.workflow = [self.workflow[r] for r in rows]
        self.node = [self.node[r] for r in rows]
        self.attempt = [self.attempt[r] for r in rows]
        self.state = bytearray(self.state[r] for r in rows)
        self.times = array("d", (times[3 * r + j] for r in rows for j in range(3)))
        self.extra = {new: self.extra[old] for new, old in enumerate(rows)
                      if old in self.extra}


class AttemptRows(Sequence[AttemptRecord]):
    """The attempt records of a recorder: a read-only sequence, made from its rows on read.

    Each read makes a fresh AttemptRecord (changing one changes no row); the
    sequence compares equal to a list of records with the same fields.
    """

    __slots__ = ("_recorder",)

    def __init__(self, recorder: "HistoryRecorder") -> None:
        self._recorder = recorder

    def __len__(self) -> int:
        return len(self._recorder.columns().state)

    @overload
    def __getitem__(self, index: int) -> AttemptRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[AttemptRecord]: ...

    def __getitem__(self, index: int | slice) -> AttemptRecord | list[AttemptRecord]:
        cols = self._recorder.columns()
        n = len(cols.state)
        if isinstance(index, slice):
            return [cols.record(r) for r in range(*index.indices(n))]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("attempt record index out of range")
        return cols.record(index)

    def __iter__(self) -> Iterator[AttemptRecord]:
        cols = self._recorder.columns()
        return (cols.record(r) for r in range(len(cols.state)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (AttemptRows, list, tuple)):
            return NotImplemented
        theirs = list(other)
        return len(self) == len(theirs) and all(
            a.as_dict() == (b.as_dict() if isinstance(b, AttemptRecord) else b)
            for a, b in zip(self, theirs))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} attempt records>"


class HistoryRecorder:
    """Keeps one row per ended attempt, plus instances and checkpoints, from a stream.

    An attempt is recorded when it ends (its end carries when it was queued and
    started), so a running attempt is not listed yet.
    """

    def __init__(self) -> None:
        self._cols = _Columns()
        self.instances: dict[str, InstanceRecord] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self._sub: Subscription | None = None
        self._forgotten: set[str] = set()  # ids whose rows leave the columns at next compaction

    @property
    def records(self) -> AttemptRows:
        """Every attempt recorded, oldest first (records are made as they are read)."""
        return AttemptRows(self)

    def columns(self) -> _Columns:
        """The rows, with those of forgotten instances gone."""
        self._compact()
        return self._cols

    def attach(self, stream: ObserveStream) -> "HistoryRecorder":
        """Start recording ``stream``."""
        self._sub = stream.subscribe(self.on_event, KINDS, on_attempt=self.on_attempt)
        return self

    def detach(self) -> None:
        """Stop recording."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self._cols.clear()
        self.instances.clear()
        self.checkpoints.clear()
        self._forgotten.clear()

    def forget(self, instance_id: str) -> None:
        """Drop one instance's records (``retain_finished`` calls it for evicted ones)."""
        self.instances.pop(instance_id, None)
        self._forgotten.add(instance_id)
        # Rebuilding the columns per instance would be quadratic in a long-running
        # process: rows leave in batches, and the readers compact first.
        if len(self._forgotten) >= 32 + len(self.instances) // 8:
            self._compact()

    def _compact(self) -> None:
        gone = self._forgotten
        if gone:
            cols = self._cols
            cols.keep([r for r, iid in enumerate(cols.instance) if iid not in gone])
            self.checkpoints[:] = [c for c in self.checkpoints if c["instance_id"] not in gone]
            gone.clear()

    def on_attempt(self, kind: K, time: float, instance_id: str, node: str, attempt: int,
                   queued_at: float | None, started_at: float | None,
                   extra: dict[str, Any] | None) -> None:
        """Add the row of an attempt that ended (the stream's ``on_attempt`` hook)."""
        cols = self._cols
        state = _KIND_CODE[kind]
        if extra:
            reason, error, worker = extra.get("reason"), extra.get("error"), extra.get("worker")
            if reason == "reused" and state == 0:
                state = _REUSED  # its handler did not run: no attempt, no duration
            if reason is not None or error is not None or worker is not None:
                cols.extra[len(cols.state)] = (
                    error, worker, reason, None if reason is None else extra.get("reason_detail"))
        inst = self.instances.get(instance_id)
        cols.instance.append(instance_id)
        cols.workflow.append(inst.workflow if inst is not None else "")
        cols.node.append(node)
        cols.attempt.append(attempt)
        cols.state.append(state)
        cols.times.extend((_NAN if queued_at is None else queued_at,
                           _NAN if started_at is None else started_at, time))

    def on_event(self, ev: ExecEvent) -> None:
        """Fold one event into the records."""
        kind = ev.kind
        if kind in _KIND_CODE:  # an attempt ended (or a node was decided without one)
            data = ev.data or {}
            self.on_attempt(kind, ev.time, ev.instance_id or "", ev.node or "", ev.attempt,
                            data.get("queued_at"), data.get("started_at"), data)
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
        iid = ev.instance_id or ""
        inst = self.instances.get(iid)
        workflow = inst.workflow if inst else ""
        names = data.get("nodes", ())
        k = len(names)
        cols = self._cols
        details = data.get("details")
        if details:  # only rows with a detail get an extra; record() reads the rest's reason
            for row, name in enumerate(names, len(cols.state)):
                detail = details.get(name)
                if detail is not None:
                    cols.extra[row] = (None, None, "reused", detail)
        # Whole columns at once: a fully cached run reports thousands of rows per event.
        cols.instance.extend(repeat(iid, k))
        cols.workflow.extend(repeat(workflow, k))
        cols.node.extend(names)
        cols.attempt.extend(repeat(0, k))
        cols.state.extend(bytes((_REUSED,)) * k)
        cols.times.extend(array("d", (_NAN, _NAN, ev.time)) * k)

    def attempts(self, instance_id: str | None = None) -> list[AttemptRecord]:
        """Attempt records, optionally of one instance."""
        cols = self.columns()
        if instance_id is None:
            return [cols.record(r) for r in range(len(cols.state))]
        return [cols.record(r) for r, iid in enumerate(cols.instance) if iid == instance_id]

    def rows(self, records: Iterable[AttemptRecord] | None = None) -> list[dict[str, Any]]:
        """Attempt records as flat dicts."""
        return [r.as_dict() for r in (self.records if records is None else records)]
