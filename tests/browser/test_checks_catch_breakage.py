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
from .driver import run_notebook, write_notebook
from .lab import LabServer

_SETUP = """\
import asyncio, base64, sys, traceback
import ipywidgets as w
import traitlets
import lion_nb.notebook as nb
from lion_nb import Node, WorkflowBuilder, WorkflowExecutor

a, b = Node("a"), Node("b")
two = WorkflowBuilder("two").add_nodes(a, b).connect(a, b).build()
svg = nb.picture(two).svg
"""

# (what the cell does, the problem kind(s) it must raise, or None: it must raise nothing)
_CELLS: list[tuple[str, str | tuple[str, ...] | None]] = [
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
    # A finished view that never left its static snapshot: its widget stays in the
    # saved notebook, which then reads "Error displaying widget: model not found".
    ("""\
class UnsnappedView:
    def _repr_mimebundle_(self, **kwargs):
        bundle = w.IntProgress(value=2, max=2, description="2/2")._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "RunView(run-1, succeeded, 2/2 done)"
        return bundle
UnsnappedView()""", "view-not-static"),
    # An image the browser cannot decode: the broken-image icon.
    ("""display({"text/html": '<img src="data:image/png;base64,iVBORw0KGgoAAAA">',
         "text/plain": "broken"}, raw=True)""", "image-broken"),
    # Light grey text on the light theme's white: 1.9:1, far below WCAG AA.
    ("""display({"text/html": '<span style="color:#bbbbbb">hard to read</span>',
         "text/plain": "faint"}, raw=True)""", "contrast"),
    # The same in an SVG shown through <img> (as JupyterLab shows image/svg+xml).
    ("""display({"image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg" width="120" '
         'height="20"><text x="2" y="14" fill="#cccccc">hard to read</text></svg>',
         "text/plain": "faint svg"}, raw=True)""", "contrast"),
    # A picture as an <img> alone (lion_nb's HTML form before its tooltip boxes): an
    # <img> shows none of its SVG's titles, so hovering a node shows nothing.
    ("""display({"text/html": '<img src="data:image/svg+xml;base64,'
         + base64.b64encode(svg.encode()).decode() + '">',
         "text/plain": "Workflow 'two' — 2 nodes, 1 edges"}, raw=True)""", "picture-tooltips"),
    # Tooltip boxes pushed off the picture (as a sanitizer dropping their position would).
    ("""display({"text/html": nb.picture(two).mimebundle()["text/html"].replace(
             "position:absolute;left:", "position:absolute;left:3"),
         "text/plain": "Workflow 'two' — 2 nodes, 1 edges"}, raw=True)""", "picture-tooltips"),
    # An exception whose handler line is buried under 40 frames: JupyterLab stops here...
    ("""\
def handler():
    raise ValueError("bad row")  # the handler's line
call = handler
for k in range(40):
    call = (lambda inner: lambda: inner())(call)
call()""", ("error", "error-buried")),
    # ...so this cell never runs.
    ('print("never")', "not-run"),
]


def test_checks_catch_a_notebook_broken_on_purpose(
        lab_server: LabServer, lab_root: Path, browser: Any, screenshots: Path) -> None:
    name = write_notebook(lab_root, "zz_broken_on_purpose.ipynb", [src for src, _ in _CELLS])
    run = run_notebook(browser, lab_server, name, screenshots / "zz_broken_on_purpose.png",
                       run_timeout=60.0, save=True)
    problems = find_problems(run.report, run.broken_images)
    found = {(p.cell, p.kind) for p in problems}
    report = explain(name, problems)

    missed = [(i, kind) for i, (_, kinds) in enumerate(_CELLS) if kinds is not None
              for kind in ((kinds,) if isinstance(kinds, str) else kinds)
              if (i, kind) not in found]
    assert not missed, f"checks missed deliberate breakage {missed}\n{report}"
    false_alarms = [p for p in problems if _CELLS[p.cell][1] is None]
    assert not false_alarms, f"checks flagged healthy cells\n{report}"
    # The stuck live view is also caught by its colours, not only by its bar.
    assert (7, "runview-colours") in found, report
    # Text inside an SVG picture is judged too, not only HTML.
    faint_svg = next(i for i, (src, _) in enumerate(_CELLS) if "faint svg" in src)
    assert any(p.cell == faint_svg and "(img)" in p.message for p in problems), report

    # Saved and reopened: the widgets that were never replaced by a snapshot now read
    # "model not found", and the reopen check sees it.
    reopened = run_notebook(browser, lab_server, name,
                            screenshots / "zz_broken_on_purpose.reopened.png", run=False)
    again = {(p.cell, p.kind) for p in find_problems(reopened.report)}
    empty_box = next(i for i, (src, _) in enumerate(_CELLS) if src == "w.VBox()")
    assert (empty_box, "widget-error") in again, explain(name, find_problems(reopened.report))
