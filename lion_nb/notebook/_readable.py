"""ReadableFrame: a DataFrame that keeps its real dtypes but shows itself for people.

pandas prints a duration as ``0 days 00:00:00.150898218``, a UTC timestamp
with nanoseconds that wraps over two lines, and mixes ``NaN``, ``NaT`` and
``<NA>``. The history tables return this subclass instead: the data (and every
frame derived from it) is untouched; only ``repr`` and the notebook HTML use a
formatted copy with durations in µs/ms/s, timestamps to the millisecond (the
date only when the rows span several days), generated ids shortened
and one missing-value marker. ``frame.to_string()`` and ``pd.DataFrame(frame)``
give pandas' own rendering.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ._text import format_seconds, short_id

__all__ = ["MISSING", "ReadableFrame", "format_span"]

#: What every missing value (None, NaN, NaT, <NA>) looks like in a displayed table.
MISSING = "—"


def format_span(value: Any) -> str:
    """A duration as people read it: ``420 µs``, ``150.9 ms``, ``2.35 s``, ``3 min 4.0 s``."""
    if value is None or pd.isna(value):
        return MISSING
    return format_seconds(pd.Timedelta(value).total_seconds())


def _display_copy(frame: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        missing = column.isna()
        if pd.api.types.is_timedelta64_dtype(column.dtype):
            text = column.map(format_span)
        elif pd.api.types.is_datetime64_any_dtype(column.dtype):
            stamps = column.dropna()
            one_day = stamps.empty or stamps.dt.normalize().nunique() == 1
            pattern = "%H:%M:%S.%f" if one_day else "%Y-%m-%d %H:%M:%S.%f"
            text = column.dt.strftime(pattern).str[:-3]  # microseconds -> milliseconds
        elif str(name).endswith("_id"):
            text = column.map(short_id, na_action="ignore")
        elif pd.api.types.is_float_dtype(column.dtype):
            text = column.map(lambda v: f"{v:,.2f}", na_action="ignore")
        else:
            text = column.astype(object)
        shown[name] = text.astype(object).where(~missing, MISSING)
    return shown


class ReadableFrame(pd.DataFrame):
    """A DataFrame with real dtypes whose repr and notebook HTML are made for reading."""

    @property
    def _constructor(self) -> Any:
        return ReadableFrame

    def __repr__(self) -> str:
        return repr(pd.DataFrame(_display_copy(self)))

    def _repr_html_(self) -> str | None:
        # IPython's display protocol, which pandas implements (with its display options).
        html: str | None = getattr(pd.DataFrame(_display_copy(self)), "_repr_html_")()
        return html
