"""History as pandas DataFrames with proper dtypes, one tidy row per node attempt.

Times are ``datetime64[ns, UTC]``, durations ``timedelta64[ns]``, names and
states ``category``; rows are ready for ``groupby``::

    df = attempts_frame(executor)          # or executor.history, or a list of records
    df.groupby("node", observed=True)["duration"].sum()
    instances_frame(executor)              # one row per instance
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["history_records", "attempts_frame", "instances_frame", "ATTEMPT_COLUMNS"]

#: Fields read from every attempt record (attribute or mapping key), in column order.
ATTEMPT_COLUMNS = ("instance_id", "workflow", "node", "attempt", "state", "queued_at",
                   "started_at", "finished_at", "duration", "error")

_TIMES = ("queued_at", "started_at", "finished_at")
_CATEGORIES = ("instance_id", "workflow", "node", "state")
# Explicit units: pandas 3 infers microseconds or nanoseconds depending on the
# input, and tables that compare or concatenate should not depend on that.
_TIME_DTYPE = "datetime64[ns, UTC]"
_SPAN_DTYPE = "timedelta64[ns]"


def history_records(source: Any) -> list[Any]:
    """The attempt records of an executor, a history recorder, or an iterable of records."""
    history = getattr(source, "history", None)
    if history is not None and not callable(history):
        source = history
    records = getattr(source, "records", None)
    if records is not None and not callable(records):
        source = records
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise TypeError(f"expected an executor, a history or records, "
                        f"not {type(source).__name__}")
    return list(source)


def _instance_records(source: Any) -> list[Any] | None:
    """The recorder's per-instance records (state, start, end), when the source has them."""
    for holder in (source, getattr(source, "history", None)):
        instances = getattr(holder, "instances", None)
        if isinstance(instances, Mapping):
            return list(instances.values())
    return None


def _field(record: Any, name: str) -> Any:
    if isinstance(record, dict):
        return record.get(name)
    value = getattr(record, name, None)
    return getattr(value, "value", value)  # StrEnum members -> their plain string


def attempts_frame(source: Any) -> "pd.DataFrame":
    """One row per node attempt: ids, state, queued/started/finished, wait, duration, error."""
    import pandas as pd

    rows = history_records(source)
    data = {c: [_field(r, c) for r in rows] for c in ATTEMPT_COLUMNS}
    for c in ("instance_id", "workflow", "node", "state", "error"):
        data[c] = [None if v is None else str(v) for v in data[c]]
    df = pd.DataFrame(data, columns=list(ATTEMPT_COLUMNS))
    for c in _TIMES:
        df[c] = pd.to_datetime(pd.Series(df[c], dtype="float64"), unit="s",
                               utc=True).astype(_TIME_DTYPE)
    df["duration"] = pd.to_timedelta(pd.Series(df["duration"], dtype="float64"),
                                     unit="s").astype(_SPAN_DTYPE)
    # Where the recorder left duration out, it is what the stamps say.
    missing = df["duration"].isna()
    if missing.any():
        df.loc[missing, "duration"] = df.loc[missing, "finished_at"] - df.loc[missing,
                                                                              "started_at"]
    df["wait"] = df["started_at"] - df["queued_at"]
    df["attempt"] = pd.array(df["attempt"], dtype="Int64")
    for c in _CATEGORIES:
        df[c] = df[c].astype("category")
    df["error"] = df["error"].astype("string")
    cols = list(ATTEMPT_COLUMNS[:8]) + ["wait", "duration", "error"]
    return df[cols]


def _instance_state(states: "pd.Series") -> str:
    # An instance's verdict from its nodes' last attempts: any failure wins.
    present = set(states.dropna().astype(str))
    for verdict in ("failed", "upstream_failed", "cancelled", "running", "retrying", "queued"):
        if verdict in present:
            return "failed" if verdict == "upstream_failed" else verdict
    return "succeeded" if present else "pending"


def instances_frame(source: Any) -> "pd.DataFrame":
    """One row per instance: workflow, state, start, end, wall time, node and attempt counts."""
    import pandas as pd

    att = attempts_frame(source)
    columns = ["instance_id", "workflow", "state", "started_at", "finished_at", "wall_time",
               "busy_time", "nodes", "attempts", "retries", "failed_nodes"]
    known = {str(_field(r, "instance_id")): r for r in _instance_records(source) or ()}
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
        rows.append({
            "instance_id": iid, "workflow": grp["workflow"].iloc[0],
            "state": _instance_state(last["state"]), "started_at": start, "finished_at": end,
            "wall_time": end - start, "busy_time": grp["duration"].sum(),
            "nodes": int(grp["node"].nunique()), "attempts": len(grp),
            "retries": len(grp) - int(grp["node"].nunique()),
            "failed_nodes": int((last["state"].astype(str) == "failed").sum()),
        })
        rec = known.pop(str(iid), None)
        if rec is not None:  # the engine's own verdict and times beat our reconstruction
            _overlay_instance(rows[-1], rec)
    for iid, rec in known.items():  # instances that ended before any node was queued
        rows.append(_overlay_instance({"instance_id": iid, "nodes": 0, "attempts": 0,
                                       "retries": 0, "failed_nodes": 0, "busy_time": 0.0},
                                      rec))
    return _instance_dtypes(pd.DataFrame(rows, columns=columns))


def _overlay_instance(row: dict[str, Any], rec: Any) -> dict[str, Any]:
    import pandas as pd

    started, finished = _field(rec, "started_at"), _field(rec, "finished_at")
    row["workflow"] = _field(rec, "workflow") or row.get("workflow")
    row["state"] = _field(rec, "state") or row.get("state")
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
        df[c] = pd.to_datetime(df[c], utc=True).astype(_TIME_DTYPE)
    df["busy_time"] = df["busy_time"].map(
        lambda v: pd.Timedelta(seconds=v) if isinstance(v, float) else v)
    for c in ("wall_time", "busy_time"):
        df[c] = pd.to_timedelta(df[c]).astype(_SPAN_DTYPE)
    for c in ("nodes", "attempts", "retries", "failed_nodes"):
        df[c] = df[c].astype("int64")
    for c in ("instance_id", "workflow", "state"):
        df[c] = df[c].astype("category")
    return df
