"""Pictures in JupyterLab: a tooltip per node, and big pictures fitted with a click to zoom,
trusted and untrusted (issue 18).

A picture is an SVG shown through ``<img>`` (so untrusted notebooks show it), which
loses the SVG's own tooltips: a titled box laid over every node gives it back (an
image map would not do: JupyterLab's sanitizer renames a map's id and drops its name,
so nothing finds it untrusted). Hovering is checked as the browser decides it: at the
centre of each box, the element hit is that box. A picture wider than the output is fitted to
its width; clicking it opens the natural size (scrollable, with the tooltips), with no
script, so the same works in an untrusted copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checks import explain, find_problems, outputs_of
from .driver import DARK_THEME, run_notebook, write_notebook
from .lab import LabServer

_CELLS = [
    """\
import lion_nb.notebook as nb
from lion_nb import Node, WorkflowBuilder

load, clean, report = Node("load"), Node("clean", retry=3), Node("report")
small = (WorkflowBuilder("tips").add_nodes(load, clean, report)
         .connect(load, clean).connect(clean, report).build())
nb.picture(small, states={"load": "succeeded", "clean": "failed", "report": "upstream_failed"},
           attempts={"clean": 3}, errors={"clean": "ValueError: bad row 7"})""",
    """\
root = Node("root")
leaves = [Node(f"a rather long step name {i}") for i in range(16)]
builder = WorkflowBuilder("wide").add_nodes(root, *leaves)
for leaf in leaves:
    builder.connect(root, leaf)
nb.picture(builder.build(), full=True)""",
    """\
nb.timeline([{"instance_id": "i", "node": n, "attempt": 1, "state": s, "queued_at": t,
              "started_at": t, "finished_at": t + 0.2}
             for t, (n, s) in enumerate([("load", "succeeded"), ("clean", "failed")])])""",
]

# Before and after clicking each zoomable picture: how wide the fitted image is drawn,
# in what output width, and how wide the natural-size copy is drawn.
_ZOOM = """() => Array.from(document.querySelectorAll('details.lion-nb-zoom')).map(d => {
  const out = d.closest('.jp-OutputArea-output').getBoundingClientRect().width;
  const [fitted, natural] = d.querySelectorAll('img');
  // A closed <details> still lays its content out (content-visibility: hidden).
  const shown = img => img.checkVisibility() ? img.getBoundingClientRect().width : 0;
  const before = {fitted: shown(fitted), natural: shown(natural)};
  d.querySelector('summary').click();
  return {out, naturalWidth: fitted.naturalWidth, before, open: d.open,
          after: shown(natural)};
})"""


def _zoom(seen: list[Any]) -> Any:
    def interact(page: Any) -> None:
        seen.extend(page.evaluate(_ZOOM))
    return interact


def _check_zoom(seen: list[dict[str, Any]], where: str) -> None:
    assert len(seen) == 1, f"{where}: {len(seen)} zoomable pictures, expected the wide one"
    z = seen[0]
    assert z["before"]["fitted"] <= z["out"] + 1, f"{where}: not fitted to the width: {z}"
    assert z["before"]["fitted"] < z["naturalWidth"] - 50, f"{where}: not scaled down: {z}"
    assert z["before"]["natural"] == 0, f"{where}: the natural size shows before a click: {z}"
    assert z["open"] and abs(z["after"] - z["naturalWidth"]) < 1, \
        f"{where}: a click does not show the natural size: {z}"


def _hovered(report: dict[str, Any]) -> list[str]:
    """The first line of every area title that hovering reaches, over all pictures."""
    return [a["title"].split("\n")[0] for _, _, dom in outputs_of(report)
            for img in dom.get("images", []) for a in (img.get("tooltips") or {}).get(
                "areas", []) if a["hit"]]


def test_pictures_have_node_tooltips_and_big_ones_fit_and_zoom_trusted_and_untrusted(
        lab_server: LabServer, lab_root: Path, browser: Any, screenshots: Path) -> None:
    name = write_notebook(lab_root, "zz_pictures.ipynb", _CELLS)
    seen: list[dict[str, Any]] = []
    run = run_notebook(browser, lab_server, name, screenshots / "zz_pictures.png",
                       run_timeout=90.0, save=True, theme=DARK_THEME, interact=_zoom(seen))
    problems = find_problems(run.report, run.broken_images)
    assert not problems, explain(name, problems)
    _check_zoom(seen, name)
    hovered = _hovered(run.report)
    # Every node of the small picture, those of the wide one opened at natural size that
    # its scroll box shows (the left of the bottom row), and the timeline's two bars.
    for title in ("load", "clean", "report", "a rather long step name 0"):
        assert title in hovered, f"hovering {title!r} shows nothing: {hovered}"
    assert sum(t.startswith(("load · attempt", "clean · attempt")) for t in hovered) == 2
    clean_tip = next(a["title"] for _, _, dom in outputs_of(run.report)
                     for img in dom["images"] for a in (img.get("tooltips") or {}).get(
                         "areas", []) if a["title"].startswith("clean\n"))
    assert "failed · attempt 3/4" in clean_tip and "ValueError: bad row 7" in clean_tip

    # The saved file, untrusted (a clone, GitHub): the same tooltips and the same zoom.
    saved = json.loads((lab_root / name).read_text(encoding="utf-8"))
    saved["metadata"]["lion_nb_browser_suite"] = "untrusted copy"
    copy = "untrusted_" + name
    (lab_root / copy).write_text(json.dumps(saved), encoding="utf-8")
    seen.clear()
    untrusted = run_notebook(browser, lab_server, copy, screenshots / "zz_pictures.untrusted.png",
                             run=False, interact=_zoom(seen))
    assert not any(c["trusted"] for c in untrusted.report["cells"] if c["type"] == "code")
    problems = find_problems(untrusted.report, untrusted.broken_images)
    assert not problems, explain(copy, problems)
    _check_zoom(seen, copy)
    assert set(hovered) <= set(_hovered(untrusted.report)), "untrusted: tooltips lost"
