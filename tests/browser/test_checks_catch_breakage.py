"""A test of the tests: a notebook broken on purpose, one way per cell, is caught cell by cell.

If a check stopped looking (a selector that no longer matches, a widget error
text that changed with an ipywidgets release), the tutorials would pass for the
wrong reason; this notebook would then miss an expected problem and fail here.
It is written into the server's temporary root, never into notebooks/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checks import explain, find_problems
from .driver import run_notebook
from .lab import LabServer

_SETUP = """\
import asyncio, sys, traceback
import ipywidgets as w
import traitlets
import lion_nb.notebook as nb
from lion_nb import Node, WorkflowBuilder, WorkflowExecutor

a, b = Node("a"), Node("b")
two = WorkflowBuilder("two").add_nodes(a, b).connect(a, b).build()
svg = nb.picture(two).svg
"""

# (what the cell does, the problem kind it must raise, or None: it must raise nothing)
_CELLS: list[tuple[str, str | None]] = [
    (_SETUP, None),
    # A good picture: the checks must not cry wolf.
    ("two", None),
    # A widget whose front-end module does not exist: "Error displaying widget".
    ("""\
class Broken(w.DOMWidget):
    _model_name = traitlets.Unicode("NopeModel").tag(sync=True)
    _model_module = traitlets.Unicode("lion-nb-no-such-module").tag(sync=True)
    _model_module_version = traitlets.Unicode("9.9.9").tag(sync=True)
    _view_name = traitlets.Unicode("NopeView").tag(sync=True)
    _view_module = traitlets.Unicode("lion-nb-no-such-module").tag(sync=True)
    _view_module_version = traitlets.Unicode("9.9.9").tag(sync=True)
Broken()""", "widget-error"),
    # A widget that renders as an empty box (Dask's progress bar in JupyterLab, once).
    ("w.VBox()", "widget-empty"),
    # A picture that shows fewer nodes than it claims.
    ("""display({"image/svg+xml": svg, "text/plain": "Workflow 'two' — 3 nodes, 1 edges"},
        raw=True)""", "picture-count"),
    # A picture the browser cannot draw (cut in half).
    ("""display({"image/svg+xml": svg[: len(svg) // 2],
         "text/plain": "Workflow 'two' — 2 nodes, 1 edges"}, raw=True)""", "picture-broken"),
    # No renderer: text instead of a picture.
    ("""display({"text/html": "<pre>no Graphviz</pre>",
         "text/plain": "Workflow 'two' — 2 nodes, 1 edges"}, raw=True)""", "picture-missing"),
    # A live view whose run never ends: not 100%, a node still painted "running".
    ("""\
async def hang(ctx):
    await asyncio.Event().wait()
ex = WorkflowExecutor()
await ex.start()
ex.add_handler("a", hang)
ex.add_handler("b", lambda ctx: None)
stuck = nb.RunView(ex)
display(stuck)
task = asyncio.ensure_future(ex.run(two))
for _ in range(100):  # until the view has drawn "a" running (5 s at most)
    if stuck.states.get("a") == "running" and stuck.pictures >= 2:
        break
    await asyncio.sleep(0.05)""", "runview-progress"),
    # A saga view (laid out as lion_nb's SagaView) listing its compensations in forward
    # order: reserve, then charge, were undone; the undoing must run charge first.
    ("""\
class FakeSagaView:
    def __init__(self):
        rows = "".join(f"<tr><td>{s}</td><td>↺ compensated</td></tr>"
                       for s in ("reserve", "charge"))
        path = "<ol><li>↺ reserve</li><li>↺ charge</li></ol>"
        self.html = w.HTML(f"<table><tr><th>step</th><th>status</th></tr>{rows}</table>"
                           f"<div><b>Compensation path</b>{path}</div>")
    def _repr_mimebundle_(self, **kwargs):
        bundle = self.html._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "SagaView(fake)"
        return bundle
FakeSagaView()""", "saga-order"),
    # A picture declared by a printed marker (as the tutorials do) that does not match.
    ('print("nodes=2 edges=5")\ndisplay(two)', "picture-count"),
    # A traceback printed to stderr by code that caught its own exception.
    ("""\
try:
    1 / 0
except ZeroDivisionError:
    traceback.print_exc()""", "traceback"),
    # An exception: JupyterLab stops here...
    ('raise RuntimeError("broken on purpose")', "error"),
    # ...so this cell never runs.
    ('print("never")', "not-run"),
]


def _write_broken_notebook(root: Path) -> str:
    import nbformat  # with jupyterlab; imported here so a bare install can still skip

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src, _ in _CELLS]
    name = "zz_broken_on_purpose.ipynb"
    nbformat.write(nb, root / name)
    return name


def test_checks_catch_a_notebook_broken_on_purpose(
        lab_server: LabServer, lab_root: Path, browser: Any, screenshots: Path) -> None:
    name = _write_broken_notebook(lab_root)
    run = run_notebook(browser, lab_server, name, screenshots / "zz_broken_on_purpose.png",
                       run_timeout=60.0)
    problems = find_problems(run.report)
    found = {(p.cell, p.kind) for p in problems}
    report = explain(name, problems)

    missed = [(i, kind) for i, (_, kind) in enumerate(_CELLS)
              if kind is not None and (i, kind) not in found]
    assert not missed, f"checks missed deliberate breakage {missed}\n{report}"
    false_alarms = [p for p in problems if _CELLS[p.cell][1] is None]
    assert not false_alarms, f"checks flagged healthy cells\n{report}"
    # The stuck live view is also caught by its colours, not only by its bar.
    assert (7, "runview-colours") in found, report
