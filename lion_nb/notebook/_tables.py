"""History as pandas DataFrames with proper dtypes: attempts, instances, events, sagas, audit.

Times are ``datetime64[ns, UTC]``, durations ``timedelta64[ns]``, names and
states ``category``, free text ``string``, counts ``Int64``; rows are ready for
``groupby``, and pandas escapes the text when a frame is shown as HTML. What a
reader looks for comes first (node, state, duration, error; ids last), and the
frames display readably (durations in ms/s, times to the millisecond, ids
shortened, one missing-value marker) without changing the data::

    df = attempts_frame(executor)          # or executor.history, or a list of records
    df.groupby("node", observed=True)["duration"].sum()
    instances_frame(executor)              # one row per instance
    event_history_frame(broker)            # one row per published/delivered/acked/... happening
    deliveries_frame(broker)               # one row per (event, subscriber): outcome, attempts
    saga_steps_frame(saga_manager)         # one row per step attempt, forward or compensating
    capability_audit_frame(authority)      # one row per grant, check, denial, revocation
    scheduler_statistics_frame({"fifo": stats1, "edf": stats2})
    scheduler_decisions_frame(scheduler_view)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..errors import UnsupportedSourceError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ATTEMPT_COLUMNS", "attempts_frame", "capability_audit_frame", "deliveries_frame",
           "event_history_frame", "history_records", "instances_frame", "saga_history_frame",
           "saga_steps_frame", "scheduler_decisions_frame", "scheduler_statistics_frame"]

# Explicit units: pandas 3 infers microseconds or nanoseconds depending on the
# input, and tables that compare or concatenate should not depend on that.
_TIME: Final = "datetime64[ns, UTC]"
_SPAN: Final = "timedelta64[ns]"


# --- shared by every table -----------------------------------------------------------

def _rows(source: Any, method: str) -> list[Any]:
    """``source.<method>()`` when it has one, else ``source`` itself as an iterable of rows."""
    getter = getattr(source, method, None)
    rows = getter() if callable(getter) else source
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise UnsupportedSourceError(f"expected an object with {method}() or an iterable of "
                                     f"rows, not {type(source).__name__}", source=source)
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
           floats: Sequence[str] = ()) -> "pd.DataFrame":
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
    from ._readable import ReadableFrame

    return ReadableFrame(df)


# --- attempts and instances ----------------------------------------------------------

#: Fields read from every attempt record (attribute or mapping key), in column order.
ATTEMPT_COLUMNS = ("instance_id", "workflow", "node", "attempt", "state", "queued_at",
                   "started_at", "finished_at", "duration", "error", "reason",
                   "reason_detail")



def history_records(source: Any) -> list[Any]:
    """The attempt records of an executor, a history recorder, or an iterable of records."""
    history = getattr(source, "history", None)
    if history is not None and not callable(history):
        source = history
    records = getattr(source, "records", None)
    if records is not None and not callable(records):
        source = records
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise UnsupportedSourceError(f"expected an executor, a history or records, "
                                     f"not {type(source).__name__}", source=source)
    return list(source)


def _instance_records(source: Any) -> list[Any] | None:
    """The recorder's per-instance records (state, start, end), when the source has them."""
    for holder in (source, getattr(source, "history", None)):
        instances = getattr(holder, "instances", None)
        if isinstance(instances, Mapping):
            return list(instances.values())
    return None


def attempts_frame(source: Any) -> "pd.DataFrame":
    """One row per node attempt: ids, state, queued/started/finished, wait, duration, error.

    With a cache (or a re-run request), ``reason`` says why the node ran or was
    reused and ``reason_detail`` what changed; a reused node has attempt 0 and
    state "reused". After ``resume``, a node read back from storage has one row in
    state "restored" (reason "restored", its committed state in ``reason_detail``,
    its attempts as committed, no times: it did not run in this process).
    """
    df = _frame(history_records(source), ATTEMPT_COLUMNS,
                times=("queued_at", "started_at", "finished_at"), spans=("duration",),
                categories=("instance_id", "workflow", "node", "state", "reason"),
                strings=("error", "reason_detail"), counts=("attempt",))
    # Where the recorder left duration out, it is what the stamps say.
    missing = df["duration"].isna()
    if missing.any():
        df.loc[missing, "duration"] = (df.loc[missing, "finished_at"]
                                       - df.loc[missing, "started_at"])
    df["wait"] = df["started_at"] - df["queued_at"]
    # What a reader looks for first: which node, how it ended, how long, why.
    return df[["node", "state", "duration", "error", "reason", "reason_detail", "attempt",
               "wait", "queued_at", "started_at", "finished_at", "workflow", "instance_id"]]


def _instance_state(states: "pd.Series") -> str:
    # An instance's verdict from its nodes' last attempts: any failure wins.
    present = set(states.dropna().astype(str))
    for verdict in ("failed", "upstream_failed", "cancelled", "running", "retrying", "queued"):
        if verdict in present:
            return "failed" if verdict == "upstream_failed" else verdict
    return "succeeded" if present else "pending"


def instances_frame(source: Any) -> "pd.DataFrame":
    """One row per instance: workflow, state, start, end, wall time, node and attempt counts.

    ``restored`` counts the nodes ``resume`` read back from storage (not run again).
    """
    import pandas as pd

    att = attempts_frame(source)
    columns = ["workflow", "state", "wall_time", "failed_nodes", "nodes", "restored", "attempts",
               "retries", "busy_time", "started_at", "finished_at", "instance_id"]
    known = {str(_get(r, "instance_id")): r for r in _instance_records(source) or ()}
    if att.empty and not known:
        empty = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
        return _instance_dtypes(empty)
    rows = []
    for iid, grp in att.groupby("instance_id", observed=True, sort=False):
        last = grp.sort_values("attempt").groupby("node", observed=True).tail(1)
        start = grp["queued_at"].min()
        if pd.isna(start):
            start = grp["started_at"].min()
        end = grp["finished_at"].max()
        # Read back by resume: ended before the restart (how, in reason_detail).
        restored = grp["state"].astype(str) == "restored"
        detail = grp["reason_detail"].astype(str)
        rows.append({
            "instance_id": iid, "workflow": grp["workflow"].iloc[0],
            "state": _instance_state(last["state"]), "started_at": start, "finished_at": end,
            "wall_time": end - start, "busy_time": grp["duration"].sum(),
            "nodes": int(grp["node"].nunique()), "attempts": len(grp),
            "retries": len(grp) - int(grp["node"].nunique()),
            "failed_nodes": int((last["state"].astype(str) == "failed").sum()
                                + (restored & detail.str.startswith("failed")).sum()),
            "restored": int(restored.sum()),
        })
        rec = known.pop(str(iid), None)
        if rec is not None:  # the engine's own verdict and times beat our reconstruction
            _overlay_instance(rows[-1], rec)
    for iid, rec in known.items():  # instances that ended before any node was queued
        rows.append(_overlay_instance({"instance_id": iid, "nodes": 0, "attempts": 0,
                                       "retries": 0, "failed_nodes": 0, "restored": 0,
                                       "busy_time": 0.0},
                                      rec))
    return _instance_dtypes(pd.DataFrame(rows, columns=columns))


def _overlay_instance(row: dict[str, Any], rec: Any) -> dict[str, Any]:
    import pandas as pd

    started, finished = _get(rec, "started_at"), _get(rec, "finished_at")
    row["workflow"] = _get(rec, "workflow") or row.get("workflow")
    row["state"] = _get(rec, "state") or row.get("state")
    if started is not None:
        row["started_at"] = pd.Timestamp(started, unit="s", tz="UTC")
    row["finished_at"] = (pd.Timestamp(finished, unit="s", tz="UTC") if finished is not None
                          else pd.NaT)
    row["wall_time"] = row["finished_at"] - row["started_at"] \
        if started is not None and finished is not None else pd.NaT
    return row


def _instance_dtypes(df: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    for c in ("started_at", "finished_at"):
        df[c] = pd.to_datetime(df[c], utc=True).astype(_TIME)
    df["busy_time"] = df["busy_time"].map(
        lambda v: pd.Timedelta(seconds=v) if isinstance(v, float) else v)
    for c in ("wall_time", "busy_time"):
        df[c] = pd.to_timedelta(df[c]).astype(_SPAN)
    for c in ("nodes", "restored", "attempts", "retries", "failed_nodes"):
        df[c] = df[c].astype("int64")
    for c in ("instance_id", "workflow", "state"):
        df[c] = df[c].astype("category")
    from ._readable import ReadableFrame

    return ReadableFrame(df)


# --- events -----------------------------------------------------------------------------

_EVENT_COLUMNS = ("time", "kind", "topic", "subscriber", "attempt", "error", "event_id")


def event_history_frame(broker: Any) -> pd.DataFrame:
    """One row per broker happening: published, delivered, acked, failed, redelivered, dead."""
    return _frame(_rows(broker, "history"), _EVENT_COLUMNS, times=("time",),
                  categories=("kind", "topic", "subscriber"), strings=("event_id", "error"),
                  counts=("attempt",))


_DELIVERY_COLUMNS = ("subscriber", "topic", "outcome", "attempts", "latency", "last_error",
                     "published_at", "first_delivered_at", "finished_at", "event_id")


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

_SAGA_COLUMNS = ("time", "event", "step_name", "phase", "status", "attempt", "error",
                 "step_id", "saga_id", "instance_id")
_STEP_COLUMNS = ("step_name", "phase", "outcome", "duration", "error", "status", "attempt",
                 "started_at", "finished_at", "step_id", "saga_id", "instance_id")
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
            found = open_.pop(key, None)
            if found is not None:
                row = found
            else:  # an operator resolving a step that was not running
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

_AUDIT_COLUMNS = ("time", "action", "decision", "capability", "node", "reason", "holder",
                  "instance_id", "token_id")


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


_DECISION_COLUMNS = ("time", "kind", "node", "detail", "instance_id")


def scheduler_decisions_frame(view: Any) -> pd.DataFrame:
    """The notable decisions a SchedulerView saw: policy changes, deadline misses, yields."""
    rows = list(getattr(view, "decisions", view))
    return _frame(rows, _DECISION_COLUMNS, times=("time",),
                  categories=("kind", "node", "instance_id"), strings=("detail",))
