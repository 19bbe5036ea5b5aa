"""Nodes that ``resume`` read back from storage are marked "restored" (issue 18).

A child process runs a durable instance and dies (``os._exit``) inside ``clean``,
after ``extract`` and ``audit`` committed: ``audit`` committed a failure. This
process resumes it. ``extract`` did not run again: pictures, the live view, the text
summary and the tables say it was restored, not that it succeeded here; the restored
failure stays a failure, marked restored.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lion_nb.engine import WorkflowExecutor
from lion_nb.model import Node, TriggerRule, WorkflowBuilder
from lion_nb.notebook import (STATE_STYLE, TERMINAL_STATES, RunView, attempts_frame, describe,
                              instances_frame, picture)
from lion_nb.state import SqliteStorage, StateMachineManager

IID = "night-2"


def build():
    # clean runs after audit whatever audit did: audit's failure is committed by then.
    extract, audit, load = Node("extract"), Node("audit"), Node("load")
    clean = Node("clean", trigger_rule=TriggerRule.ALL_DONE)
    return (WorkflowBuilder("nightly").add_nodes(extract, audit, clean, load)
            .connect(extract, audit).connect(audit, clean).connect(clean, load).build())


def register(ex, died: bool) -> None:
    async def clean(ctx):
        if died:
            import os
            os._exit(3)  # the process dies mid-node: no finally, nothing written
        return "clean"

    async def audit(ctx):
        raise ValueError("ledger mismatch")

    ex.add_handler("extract", lambda ctx: {"rows": 3})
    ex.add_handler("audit", audit)
    ex.add_handler("clean", clean)
    ex.add_handler("load", lambda ctx: "loaded")


_CHILD = textwrap.dedent(f"""
    import asyncio, sys
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from test_restored import IID, build, register
    from lion_nb.engine import WorkflowExecutor
    from lion_nb.state import SqliteStorage, StateMachineManager

    async def main():
        ex = WorkflowExecutor(state_manager=StateMachineManager(SqliteStorage(sys.argv[1])))
        register(ex, died=True)
        await ex.start()
        await ex.run(build(), instance_id=IID)

    asyncio.run(main())
""")


@pytest.fixture
async def resumed(tmp_path, frontend):
    """(executor, RunView that followed the resume, result) after the child died."""
    db = tmp_path / "state.db"
    child = subprocess.run([sys.executable, "-c", _CHILD, str(db)], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 3, child.stderr
    storage = SqliteStorage(db)
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage))
    register(ex, died=False)
    await ex.start()
    try:
        view = RunView(ex)
        await ex.resume(IID, workflow=build())
        result = await ex.wait(IID)
        await view.drawn()
        yield ex, view, result
    finally:
        await ex.stop()
        await storage.close()


async def test_the_result_names_the_nodes_read_back_from_storage(resumed):
    _, _, result = resumed
    assert result.restored == {"extract", "audit"}
    assert result.node_states["extract"].value == "succeeded"  # the engine's state as is
    assert result["extract"] == {"rows": 3} and result["load"] == "loaded"


async def test_pictures_draw_restored_nodes_in_their_own_style_with_a_legend_entry(resumed):
    _, _, result = resumed
    pic = picture(result)
    restored = STATE_STYLE["restored"]
    assert "restored" in TERMINAL_STATES
    assert f'fillcolor="{restored.fill}"' in pic.dot and "⤓ restored" in pic.dot
    # The restored failure stays red, and says it was restored.
    audit = next(line for line in pic.dot.splitlines() if 'label="audit' in line)
    assert "✘ failed" in audit and "committed before the restart" in audit
    assert "⤓ restored" in pic.svg.split('class="lion-nb-legend"', 1)[1]
    text = describe(result)
    assert "extract  : restored" in text and "audit  ← extract  : failed" in text


async def test_the_live_view_marks_restored_nodes_as_they_are_read_back(resumed):
    _, view, result = resumed
    assert view.states["extract"] == "restored" and view.states["audit"] == "failed"
    assert view.progress.value == view.progress.max == 4
    assert "restored 1" in view.stats.value
    assert "⤓ restored" in view.svg
    assert "restored" in view.snapshot_html()


async def test_tables_mark_restored_rows_with_their_committed_state(resumed):
    ex, _, _ = resumed
    att = attempts_frame(ex)
    rows = att.set_index("node")
    assert rows.loc["extract", "state"] == "restored"
    assert rows.loc["extract", "reason"] == "restored"
    assert rows.loc["extract", "reason_detail"] == "succeeded before the restart"
    assert rows.loc["audit", "reason_detail"] == "failed before the restart"
    assert "ledger mismatch" in rows.loc["audit", "error"]
    assert rows.loc["load", "state"] == "succeeded"  # ran here
    inst = instances_frame(ex).set_index("instance_id")
    assert inst.loc[IID, "restored"] == 2 and inst.loc[IID, "failed_nodes"] == 1


async def test_an_instance_followed_from_storage_shows_what_the_resuming_executor_shows(
        resumed, tmp_path):
    # Another executor on the same storage, following the instance after the resume
    # (follow) or only reading its end (wait): the same restored nodes, rows and view.
    ex, view, result = resumed
    storage = SqliteStorage(tmp_path / "state.db")
    watcher = WorkflowExecutor(state_manager=StateMachineManager(storage))
    await watcher.start()
    try:
        followed_view = RunView(watcher, picture=False)
        followed = await watcher.follow(IID, interval=0.02)
        for _ in range(500):  # the final flush closes the view
            if followed_view.closed:
                break
            await asyncio.sleep(0.01)
        assert followed.restored == result.restored == {"extract", "audit"}
        assert "failed before the restart" in str(followed.exceptions["audit"])
        assert followed_view.states == view.states
        assert "restored 1" in followed_view.stats.value

        def restored_rows(source):
            rows = attempts_frame(source)
            rows = rows[rows["state"].astype(str) == "restored"].set_index("node").sort_index()
            return rows[["state", "reason", "reason_detail", "error"]].astype(str)

        assert restored_rows(watcher).equals(restored_rows(ex))
        columns = ["state", "nodes", "restored", "failed_nodes"]
        mine = instances_frame(ex).set_index("instance_id").loc[IID, columns]
        theirs = instances_frame(watcher).set_index("instance_id").loc[IID, columns]
        assert list(theirs) == list(mine)
    finally:
        await watcher.stop()
    reader = WorkflowExecutor(state_manager=StateMachineManager(storage))
    await reader.start()
    try:
        assert (await reader.wait(IID, timeout=10)).restored == result.restored
    finally:
        await reader.stop()
        await storage.close()
