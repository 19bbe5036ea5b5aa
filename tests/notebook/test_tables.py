"""History tables: one tidy row per attempt with real dtypes; instances; the SVG timeline."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from lion_nb.notebook import attempts_frame, instances_frame
from lion_nb.notebook import timeline

T0 = 1_700_000_000.0


def rec(iid, node, attempt, state, q, s, f, error=None, duration="auto"):
    return SimpleNamespace(instance_id=iid, workflow="etl", node=node, attempt=attempt,
                           state=state, queued_at=T0 + q, started_at=T0 + s,
                           finished_at=T0 + f, duration=(f - s) if duration == "auto" else duration,
                           error=error)


RECORDS = [
    rec("i1", "extract", 1, "succeeded", 0.0, 0.1, 0.5),
    rec("i1", "transform", 1, "failed", 0.5, 0.6, 0.7, error="ValueError: bad row"),
    rec("i1", "transform", 2, "succeeded", 0.8, 0.8, 1.2),
    rec("i1", "load", 1, "succeeded", 1.2, 1.3, 2.0, duration=None),
    rec("i2", "extract", 1, "failed", 5.0, 5.0, 5.5, error="IOError"),
]


def test_attempts_frame_has_one_row_per_attempt_with_proper_dtypes():
    df = attempts_frame(RECORDS)
    assert len(df) == 5
    assert str(df["queued_at"].dtype) == "datetime64[ns, UTC]"
    assert str(df["started_at"].dtype) == "datetime64[ns, UTC]"
    assert df["duration"].dtype == "timedelta64[ns]"
    assert df["wait"].dtype == "timedelta64[ns]"
    for c in ("instance_id", "workflow", "node", "state"):
        assert isinstance(df[c].dtype, pd.CategoricalDtype), c
    assert str(df["attempt"].dtype) == "Int64"
    # Filled from the stamps (epoch floats carry ~0.1 µs of rounding).
    assert abs(df.loc[3, "duration"] - pd.Timedelta(seconds=0.7)) < pd.Timedelta(microseconds=1)
    assert df.loc[1, "error"] == "ValueError: bad row"
    assert abs(df.loc[0, "started_at"] - pd.Timestamp(T0 + 0.1, unit="s", tz="UTC")) \
        < pd.Timedelta(microseconds=1)
    busy = df.groupby("node", observed=True)["duration"].sum()
    assert abs(busy["transform"] - pd.Timedelta(seconds=0.5)) < pd.Timedelta(microseconds=1)


def test_attempts_frame_accepts_executor_history_and_dicts():
    executor = SimpleNamespace(history=SimpleNamespace(records=RECORDS))
    assert len(attempts_frame(executor)) == 5
    assert len(attempts_frame(executor.history)) == 5
    dicts = [vars(r) for r in RECORDS]
    assert attempts_frame(dicts)["node"].tolist() == attempts_frame(RECORDS)["node"].tolist()
    assert len(attempts_frame(iter(RECORDS))) == len(RECORDS)


def test_empty_history_gives_empty_frames_with_dtypes():
    df = attempts_frame([])
    assert df.empty and str(df["started_at"].dtype) == "datetime64[ns, UTC]"
    inst = instances_frame([])
    assert inst.empty and inst["wall_time"].dtype == "timedelta64[ns]"


def test_instances_frame_summarises_each_instance():
    df = instances_frame(RECORDS).set_index("instance_id")
    assert df.loc["i1", "state"] == "succeeded"
    assert df.loc["i1", "attempts"] == 4 and df.loc["i1", "retries"] == 1
    assert df.loc["i1", "nodes"] == 3 and df.loc["i1", "failed_nodes"] == 0
    assert abs(df.loc["i1", "wall_time"] - pd.Timedelta(seconds=2.0)) < pd.Timedelta("1us")
    assert df.loc["i2", "state"] == "failed" and df.loc["i2", "failed_nodes"] == 1
    assert isinstance(df["state"].dtype, pd.CategoricalDtype)


def test_timeline_draws_one_row_per_node_and_one_bar_per_attempt():
    tl = timeline(RECORDS, instance_id="i1")
    assert tl.svg.startswith("<svg") and tl.svg.endswith("</svg>")
    assert tl.svg.count('rx="2"') == 4  # the attempt bars
    assert tl.svg.count("stroke-dasharray") == 3  # queue waits, where there was one
    for name in ("extract", "transform", "load"):
        assert f">{name}</text>" in tl.svg
    assert ">failed</text>" in tl.svg and ">succeeded</text>" in tl.svg  # legend
    assert "Timeline('i1': 4 attempts of 3 nodes)" == repr(tl)
    assert timeline(RECORDS).instance_id == "i2"  # default: the latest instance
    assert set(tl._repr_mimebundle_()) == {"image/svg+xml", "text/html", "text/plain"}


def test_timeline_reads_in_readable_units_with_durations_on_wide_bars():
    tl = timeline(RECORDS, instance_id="i1")
    assert ">0.5 s</text>" in tl.svg or ">0 s</text>" in tl.svg  # the axis has a unit
    assert ">700.0 ms</text>" in tl.svg  # load's 0.7 s bar is wide enough to say so
    assert 'fill="#ffffff"' in tl.svg.split("<text", 1)[0]  # its own background: dark mode
    fast = [rec("f", f"n{i}", 1, "succeeded", i * 1e-4, i * 1e-4, (i + 1) * 1e-4)
            for i in range(5)]
    assert " µs</text>" in timeline(fast).svg


def test_timeline_of_thousands_of_nodes_groups_rows():
    records = [rec("big", f"crunch-{i}", 1, "failed" if i == 7 else "succeeded",
                   i * 0.001, i * 0.001, i * 0.001 + 0.01) for i in range(3000)]
    records += [rec("big", "combine", 1, "succeeded", 3.0, 3.0, 3.2)]
    tl = timeline(records)
    rows = tl.svg.count('text-anchor="end"')
    assert 10 <= rows <= 70  # about GROUP_ROWS rows, not 3,001
    assert "crunch-# 1–" in tl.svg and ">combine</text>" in tl.svg
    assert "3,001 nodes in" in tl.svg
    assert "failed 1" in tl.svg  # a group's tooltip counts its states
    assert len(tl.svg) < 200_000  # spans are merged: not one rect per attempt
    assert "more rows not drawn" not in tl.svg


def test_timeline_of_nothing_is_still_an_svg():
    tl = timeline([])
    assert tl.svg.startswith("<svg") and "no attempts" in tl.svg


def test_frames_keep_their_dtypes_but_display_for_reading():
    queued_only = {"instance_id": "run-0123456789abcdef0123-1f", "workflow": "w", "node": "x",
                   "attempt": 1, "state": "cancelled", "queued_at": T0 - 86_400}
    df = attempts_frame([vars(r) for r in RECORDS] + [queued_only])
    assert list(df.columns[:4]) == ["node", "state", "duration", "error"]
    assert df.columns[-1] == "instance_id"
    assert df["duration"].dtype == "timedelta64[ns]"  # the data is untouched
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        text = repr(df[["node", "duration", "queued_at", "error", "instance_id"]])
    assert "500.0 ms" in text and "0 days" not in text  # durations in ms/s
    assert "run-…ef0123-1f" in text  # generated ids shortened ...
    assert "i1" in text  # ... ids people chose are not
    assert "NaN" not in text and "NaT" not in text and "<NA>" not in text and "—" in text
    stamp = df["queued_at"].iloc[0]
    assert stamp.strftime("%H:%M:%S.%f")[:-3] in text  # to the millisecond
    assert stamp.strftime("%Y-%m-%d") in text  # rows span two days: the date is shown
    html = df._repr_html_()
    assert "500.0 ms" in html and "—" in html
    assert "0 days" in df.to_string()  # pandas' own rendering is still there
