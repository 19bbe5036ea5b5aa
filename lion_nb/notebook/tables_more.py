"""More history tables: events and deliveries, saga steps, capability audit, scheduler.

Same conventions as ``tables.py``: times ``datetime64[ns, UTC]``, durations
``timedelta64[ns]``, names and states ``category``, free text ``string``,
counts ``Int64``; pandas escapes the text when a frame is shown as HTML::

    event_history_frame(broker)          # one row per published/delivered/acked/... happening
    deliveries_frame(broker)             # one row per (event, subscriber): outcome, attempts
    saga_steps_frame(saga_manager)       # one row per step attempt, forward or compensating
    capability_audit_frame(authority)    # one row per grant, check, denial, revocation
    scheduler_statistics_frame({"fifo": stats1, "edf": stats2})
    scheduler_decisions_frame(scheduler_view)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "capability_audit_frame",
    "deliveries_frame",
    "event_history_frame",
    "saga_history_frame",
    "saga_steps_frame",
    "scheduler_decisions_frame",
    "scheduler_statistics_frame",
]

_TIME = "datetime64[ns, UTC]"
_SPAN = "timedelta64[ns]"


def _rows(source: Any, method: str) -> list[Any]:
    """``source.<method>()`` when it has one, else ``source`` itself as an iterable of rows."""
    getter = getattr(source, method, None)
    rows = getter() if callable(getter) else source
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise TypeError(f"expected an object with {method}() or an iterable of rows, "
                        f"not {type(source).__name__}")
    return list(rows)


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        value = row.get(name)
    else:
        value = getattr(row, name, None)
    return getattr(value, "value", value)  # StrEnum members -> their plain string


def _text(value: Any) -> str | None:
    """``str(value)``, or None for a missing value (None or a float NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _frame(rows: Sequence[Any], columns: Sequence[str], *, times: Sequence[str] = (),
           spans: Sequence[str] = (), categories: Sequence[str] = (),
           strings: Sequence[str] = (), counts: Sequence[str] = (),
           floats: Sequence[str] = ()) -> pd.DataFrame:
    """A frame of ``columns`` from rows (mappings or objects), each column given its dtype."""
    import pandas as pd

    data = {c: [_get(r, c) for r in rows] for c in columns}
    df = pd.DataFrame(data, columns=list(columns))
    for c in times:  # epoch seconds -> UTC instants
        df[c] = pd.to_datetime(pd.Series(df[c], dtype="float64"), unit="s",
                               utc=True).astype(_TIME)
    for c in spans:  # seconds -> durations
        df[c] = pd.to_timedelta(pd.Series(df[c], dtype="float64"), unit="s").astype(_SPAN)
    # pandas 3 may already have turned None into NaN in text columns: test both.
    for c in categories:
        df[c] = pd.Series([_text(v) for v in df[c]], dtype="object").astype("category")
    for c in strings:
        df[c] = pd.Series([_text(v) for v in df[c]], dtype="object").astype("string")
    for c in counts:
        df[c] = pd.array([None if v is None or pd.isna(v) else int(v) for v in df[c]],
                         dtype="Int64")
    for c in floats:
        df[c] = pd.Series(df[c], dtype="float64")
    return df


# --- events -----------------------------------------------------------------------------

_EVENT_COLUMNS = ("time", "kind", "topic", "event_id", "subscriber", "attempt", "error")


def event_history_frame(broker: Any) -> pd.DataFrame:
    """One row per broker happening: published, delivered, acked, failed, redelivered, dead."""
    return _frame(_rows(broker, "history"), _EVENT_COLUMNS, times=("time",),
                  categories=("kind", "topic", "subscriber"), strings=("event_id", "error"),
                  counts=("attempt",))


_DELIVERY_COLUMNS = ("topic", "event_id", "subscriber", "outcome", "attempts", "published_at",
                     "first_delivered_at", "finished_at", "latency", "last_error")


def deliveries_frame(broker: Any) -> pd.DataFrame:
    """One row per (event, subscriber): outcome (acked, dead_lettered, pending), attempts, latency.

    ``latency`` runs from publication to the ack or dead letter. Rows come
    from ``broker.history()``, so they cover what its ``history_limit`` kept.
    """
    published: dict[str, float] = {}
    deliveries: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _rows(broker, "history"):
        kind, eid, sub = _get(row, "kind"), str(_get(row, "event_id")), _get(row, "subscriber")
        t = _get(row, "time")
        if kind == "published":
            published[eid] = t
            continue
        if sub is None:
            continue
        d = deliveries.setdefault((eid, str(sub)), {
            "topic": _get(row, "topic"), "event_id": eid, "subscriber": str(sub),
            "outcome": "pending", "attempts": 0, "first_delivered_at": None,
            "finished_at": None, "last_error": None})
        attempt = _get(row, "attempt") or 0
        d["attempts"] = max(d["attempts"], int(attempt))
        if kind == "delivered" and d["first_delivered_at"] is None:
            d["first_delivered_at"] = t
        elif kind in ("acked", "dead_lettered"):
            d["outcome"], d["finished_at"] = kind, t
        if kind in ("failed", "redelivery", "dead_lettered") and _get(row, "error"):
            d["last_error"] = _get(row, "error")
    rows = []
    for d in deliveries.values():
        d["published_at"] = published.get(d["event_id"])
        end, start = d["finished_at"], d["published_at"]
        d["latency"] = end - start if end is not None and start is not None else None
        rows.append(d)
    return _frame(rows, _DELIVERY_COLUMNS,
                  times=("published_at", "first_delivered_at", "finished_at"),
                  spans=("latency",), categories=("topic", "subscriber", "outcome"),
                  strings=("event_id", "last_error"), counts=("attempts",))


# --- sagas -----------------------------------------------------------------------------

_SAGA_COLUMNS = ("time", "saga_id", "instance_id", "event", "status", "step_id", "step_name",
                 "phase", "attempt", "error")
_STEP_COLUMNS = ("instance_id", "saga_id", "step_id", "step_name", "phase", "attempt",
                 "outcome", "status", "started_at", "finished_at", "duration", "error")
_OUTCOME = {"succeeded": "succeeded", "attempt_failed": "failed",
            "operator_resolved": "resolved"}


def saga_history_frame(saga_manager: Any) -> pd.DataFrame:
    """One row per saga happening, as ``saga_manager.history()`` records them."""
    return _frame(_rows(saga_manager, "history"), _SAGA_COLUMNS, times=("time",),
                  categories=("saga_id", "instance_id", "event", "status", "step_id",
                              "step_name", "phase"),
                  strings=("error",), counts=("attempt",))


def saga_steps_frame(saga_manager: Any) -> pd.DataFrame:
    """One row per step attempt, forward or compensating, in the order they started.

    ``outcome`` is the attempt's (succeeded, failed, resolved, or running while
    open); ``status`` the step's status right after it (e.g. compensated).
    """
    rows: list[dict[str, Any]] = []
    open_: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for h in _rows(saga_manager, "history"):
        step = _get(h, "step_id")
        if step is None:
            continue
        key = (_get(h, "instance_id"), step, _get(h, "phase"))
        event = _get(h, "event")
        if event == "started":
            row = {"instance_id": key[0], "saga_id": _get(h, "saga_id"), "step_id": step,
                   "step_name": _get(h, "step_name"), "phase": key[2],
                   "attempt": _get(h, "attempt"), "outcome": "running",
                   "status": _get(h, "status"), "started_at": _get(h, "time"),
                   "finished_at": None, "error": None}
            rows.append(row)
            open_[key] = row
        elif event in _OUTCOME:
            row = open_.pop(key, None)
            if row is None:  # an operator resolving a step that was not running
                row = {"instance_id": key[0], "saga_id": _get(h, "saga_id"), "step_id": step,
                       "step_name": _get(h, "step_name"), "phase": key[2],
                       "attempt": _get(h, "attempt"), "started_at": None}
                rows.append(row)
            row.update(outcome=_OUTCOME[event], status=_get(h, "status"),
                       finished_at=_get(h, "time"), error=_get(h, "error"))
    for row in rows:
        start, end = row.get("started_at"), row.get("finished_at")
        row["duration"] = end - start if start is not None and end is not None else None
    return _frame(rows, _STEP_COLUMNS, times=("started_at", "finished_at"),
                  spans=("duration",),
                  categories=("instance_id", "saga_id", "step_id", "step_name", "phase",
                              "outcome", "status"),
                  strings=("error",), counts=("attempt",))


# --- security -----------------------------------------------------------------------------

_AUDIT_COLUMNS = ("time", "action", "decision", "capability", "node", "instance_id", "holder",
                  "token_id", "reason")


def capability_audit_frame(authority: Any) -> pd.DataFrame:
    """One row per audit record of ``authority.audit()``: grants, checks, denials, revocations."""
    return _frame(_rows(authority, "audit"), _AUDIT_COLUMNS, times=("time",),
                  categories=("action", "decision", "node", "instance_id", "holder"),
                  strings=("capability", "token_id", "reason"))


# --- scheduler -----------------------------------------------------------------------------

_STATS_COLUMNS = ("label", "policy", "queued", "running", "max_concurrent", "dispatched",
                  "completed", "deadline_misses", "wait_p50", "wait_p95", "throughput")


def scheduler_statistics_frame(snapshots: Any) -> pd.DataFrame:
    """One row per SchedulerStatistics snapshot: ``{label: stats}``, a list, or a scheduler."""
    if hasattr(snapshots, "statistics"):
        snapshots = {"now": snapshots.statistics()}
    if isinstance(snapshots, Mapping):
        pairs = list(snapshots.items())
    else:
        pairs = [(str(k), s) for k, s in enumerate(snapshots)]
    # A scheduler among the values stands for its statistics right now.
    pairs = [(label, s.statistics() if hasattr(s, "statistics") else s) for label, s in pairs]
    rows = [dict({c: _get(s, c) for c in _STATS_COLUMNS[1:]}, label=str(label))
            for label, s in pairs]
    return _frame(rows, _STATS_COLUMNS, spans=("wait_p50", "wait_p95"),
                  categories=("label", "policy"),
                  counts=("queued", "running", "max_concurrent", "dispatched", "completed",
                          "deadline_misses"),
                  floats=("throughput",))


_DECISION_COLUMNS = ("time", "kind", "node", "instance_id", "detail")


def scheduler_decisions_frame(view: Any) -> pd.DataFrame:
    """The notable decisions a SchedulerView saw: policy changes, deadline misses, yields."""
    rows = list(getattr(view, "decisions", view))
    return _frame(rows, _DECISION_COLUMNS, times=("time",),
                  categories=("kind", "node", "instance_id"), strings=("detail",))
