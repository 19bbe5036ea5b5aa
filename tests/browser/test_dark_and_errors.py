"""Views, pictures and a failing run in JupyterLab Dark: readable, and the error points at
the user's line.

A notebook written here (never into notebooks/) shows every kind of lion_nb output
a tutorial shows: a definition picture, a live RunView that retries and finishes,
the timeline, a readable table, a SchedulerView, then a run that fails with
``check=True``. In the dark theme every text must pass WCAG AA (4.5:1) against what
is behind it, computed from the page's computed styles; the failure must show the
handler's own line within the first screen of its error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checks import explain, find_problems
from .driver import DARK_THEME as DARK
from .driver import run_notebook, write_notebook
from .lab import LabServer

_CELLS = [
    """\
import asyncio
import lion_nb
import lion_nb.notebook as nb
from lion_nb import Node, WorkflowBuilder, WorkflowExecutor

ex = WorkflowExecutor()
await ex.start()
tries = {"clean": 0}

async def clean(ctx):
    tries["clean"] += 1
    await asyncio.sleep(0.3)
    if tries["clean"] == 1:
        raise ConnectionError("database busy")
    return "ok"

ex.add_handler("fetch", lambda ctx: {"rows": 3})
ex.add_handler("clean", clean)
ex.add_handler("load", lambda ctx: None)
ex.add_handler("report", lambda ctx: None)
fetch, cl, load, report = Node("fetch"), Node("clean", retry=2), Node("load"), Node("report")
etl = (WorkflowBuilder("etl").add_nodes(fetch, cl, load, report)
       .connect(fetch, cl).connect(cl, load).connect(fetch, report, "result.rows > 5")
       .build())
etl""",
    """\
view = nb.RunView(ex)
display(view)
result = await ex.run(etl)
result""",
    "nb.timeline(ex)",
    "nb.attempts_frame(ex)",
    "nb.SchedulerView(ex)",
    """\
flow = lion_nb.Flow("report")

@flow.step
def rows(ctx):
    return {"rows": 3}

@flow.step(after=rows)
def ratio(ctx):
    rows = ctx.results["rows"]["rows"]
    return 10 / (rows - 3)  # the handler's line

await flow.run(check=True)""",
]


def test_views_are_readable_in_dark_and_a_failure_shows_the_handler_line(
        lab_server: LabServer, lab_root: Path, browser: Any, screenshots: Path) -> None:
    name = write_notebook(lab_root, "zz_views_dark.ipynb", _CELLS)
    run = run_notebook(browser, lab_server, name, screenshots / "zz_views_dark.png",
                       run_timeout=90.0, theme=DARK)
    assert run.report["theme"] == DARK
    problems = find_problems(run.report, run.broken_images)
    last = len(_CELLS) - 1
    # The last cell fails on purpose: its error is expected, nothing else is.
    unexpected = [p for p in problems if (p.cell, p.kind) != (last, "error")]
    assert not unexpected, explain(f"{name} ({DARK})", problems)
    assert (last, "error") in {(p.cell, p.kind) for p in problems}, "the failing run did not fail"
    lines = run.report["cells"][last]["handlerLines"]
    assert lines and lines[0]["at"] is not None, lines
    # Every kind of output was there to be judged.
    outputs = [o for c in run.report["cells"] for o in c["outputs"]]
    assert sum(bool(o["dom"] and o["dom"]["images"]) for o in outputs) >= 2, "pictures missing"
