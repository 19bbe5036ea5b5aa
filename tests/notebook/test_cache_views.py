"""Incremental re-runs in the notebook layer: Flow(cache=...), the reason column, the picture
marking reused nodes, RunView (issue 19)."""

from __future__ import annotations

import pytest

import lion_nb
import lion_nb.notebook as nb
from lion_nb.engine import CacheReason
from lion_nb.errors import DefinitionError, RerunError
from lion_nb.notebook import RunView, describe, instance_dot, picture

R = CacheReason


CELLS = {
    "extract": "@f.step\ndef extract(ctx):\n    note('extract')\n    return {'rows': [1, 2, 3]}\n",
    "transform": "@f.step(after='extract')\ndef transform(ctx):\n    note('transform')\n"
                 "    return [r * {factor} for r in ctx.results['extract']['rows']]\n",
    "load": "@f.step(after='transform')\ndef load(ctx):\n    note('load')\n"
            "    return len(ctx.results['transform'])\n",
}


def run_cell(f, name, factor=2):
    """Execute a step's cell the way a kernel does: in one shared __main__-like namespace."""
    exec(CELLS[name].replace("{factor}", str(factor)), f.cells)


@pytest.fixture
async def flow():
    f = lion_nb.Flow("iterate", cache=True)
    f.seen = []
    # The handlers close over a bound method, so calls do not change their version.
    f.cells = {"__name__": "notebook_cells", "f": f, "note": f.seen.append}
    for name in CELLS:
        run_cell(f, name)
    yield f
    ex = await f.executor()
    await ex.stop()


def redefine_transform(f, factor):
    run_cell(f, "transform", factor)


async def test_flow_reuses_unchanged_steps_and_reruns_an_edited_one(flow):
    await flow.run()
    again = await flow.run()
    assert again.reused == ["extract", "transform", "load"]
    assert flow.seen == ["extract", "transform", "load"]
    redefine_transform(flow, 3)
    edited = await flow.run()
    assert {n: v.reason for n, v in edited.reasons.items()} == {
        "extract": R.REUSED, "transform": R.CODE_CHANGED, "load": R.INPUT_CHANGED}
    assert edited["transform"] == [3, 6, 9] and flow.seen.count("extract") == 1


async def test_a_different_function_under_a_taken_step_name_is_still_refused(flow):
    with pytest.raises(DefinitionError, match="already has a step 'load'"):
        @flow.step(name="load")
        def other(ctx):
            return 0


async def test_rerun_and_start_from_through_flow(flow):
    with pytest.raises(RerunError):
        await flow.run(start_from="transform")
    await flow.run()
    forced = await flow.run(rerun="transform")
    assert forced.reasons["extract"].reason is R.REUSED
    assert forced.reasons["load"] == (R.FORCED, "downstream of transform")
    started = await flow.run(start_from="load")
    assert started.reasons["transform"] == (R.REUSED, "from the last run")


async def test_start_from_works_on_a_flow_without_a_cache():
    f = lion_nb.Flow("plain")
    calls = []
    note = calls.append

    @f.step
    def a(ctx):
        note("a")
        return 1

    @f.step(after=a)
    def b(ctx):
        note("b")
        return ctx.results["a"] + 1

    try:
        await f.run()
        assert f.cache is None
        result = await f.run(start_from="b")
        assert result["b"] == 2 and calls == ["a", "b", "b"]
    finally:
        await (await f.executor()).stop()


async def test_clear_and_invalidate_through_flow_cache(flow):
    await flow.run()
    flow.cache.invalidate("load")
    assert (await flow.run()).reasons["load"].reason is R.FIRST_RUN
    flow.cache.clear()
    assert set(v.reason for v in (await flow.run()).reasons.values()) == {R.FIRST_RUN}


async def test_attempts_frame_has_the_reason_and_reused_rows(flow):
    await flow.run()
    redefine_transform(flow, 5)
    await flow.run()
    df = nb.attempts_frame(flow)
    assert str(df["reason"].dtype) == "category"
    last = df.tail(3).set_index("node")
    assert last.loc["extract", "state"] == "reused" and last.loc["extract", "attempt"] == 0
    assert last.loc["transform", "reason"] == "code_changed"
    assert last.loc["load", "reason"] == "input_changed"
    assert last.loc["load", "reason_detail"] == "transform"
    assert df.groupby("reason", observed=True).size()["first_run"] == 3


async def test_picture_and_text_mark_reused_nodes_with_their_reason(flow):
    await flow.run()
    redefine_transform(flow, 7)
    result = await flow.run()
    source = instance_dot(result).source
    assert "♻ reused" in source and "code changed" in source
    assert "input changed: transform" in source
    svg = picture(result).svg
    assert svg is not None and svg.count("reused") > source.count("reused")  # the legend
    text = describe(result)
    lines = text.splitlines()
    assert lines[1].strip() == "extract  : reused"
    assert lines[2].endswith(": succeeded (code changed)")


async def test_runview_shows_reused_nodes(flow, frontend):
    await flow.run()
    view = RunView(await flow.executor(), picture=False)
    await flow.run()
    view.finish()
    assert view.states == {"extract": "reused", "transform": "reused", "load": "reused"}
    assert view.progress.value == 3 and "reused" in view.stats.value
    assert view.reasons["load"] == "reused"
