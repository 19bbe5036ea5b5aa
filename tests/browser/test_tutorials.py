"""Every tutorial in notebooks/, run top to bottom in JupyterLab, looks right in Chromium.

nbval proves the kernel side; this proves the side a person sees: no error
on screen, every widget drawn (not an error, not an empty box), every DAG
picture an SVG with the nodes and edges the notebook declares, live views that
end full and in final colours, no broken-image icon at any moment of the run,
every text readable (WCAG AA contrast). Each notebook is then saved and opened
again, trusted (finished views are static snapshots, no "model not found") and
as an untrusted copy (pictures still drawn). Screenshots of the three land in
build/screenshots/ for a person to look at.

Both themes are judged on every tutorial without a fourth pass: the run (live views,
timelines, tables, pictures) and the untrusted copy are looked at in JupyterLab Dark,
the trusted reopening (the snapshots a saved notebook keeps) in JupyterLab Light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .checks import declared_counts, explain, find_problems, outputs_of
from .conftest import NOTEBOOKS
from .driver import DARK_THEME, LIGHT_THEME, run_notebook
from .lab import LabServer

TUTORIALS = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _views_in(report: dict[str, Any], name: str) -> list[tuple[int, dict, dict]]:
    return [(c, m, d) for c, m, d in outputs_of(report)
            if (m.get("text_plain") or "").startswith(f"{name}(")]


def _untrusted_copy(root: Path, notebook: str) -> str:
    """A copy of a saved notebook that JupyterLab will not trust, as on GitHub or nbviewer.

    The server trusts a notebook whose signature it made; any change to the file (here
    one metadata key) breaks the signature, exactly as a fresh clone has none.
    """
    saved = json.loads((root / notebook).read_text(encoding="utf-8"))
    saved["metadata"]["lion_nb_browser_suite"] = "untrusted copy"
    name = f"untrusted_{notebook}"
    (root / name).write_text(json.dumps(saved, indent=1), encoding="utf-8")
    return name


@pytest.mark.parametrize("notebook", TUTORIALS, ids=[Path(n).stem for n in TUTORIALS])
def test_tutorial_runs_and_looks_right_in_jupyterlab(
        notebook: str, lab_server: LabServer, lab_root: Path, browser: Any,
        screenshots: Path) -> None:
    stem = Path(notebook).stem
    shot = screenshots / f"{stem}.png"
    run = run_notebook(browser, lab_server, notebook, shot, save=True, theme=DARK_THEME)
    report = run.report
    assert report["theme"] == DARK_THEME

    problems = find_problems(report, run.broken_images)
    assert not problems, explain(notebook, problems) + (
        f"\n  page errors: {run.page_errors[:3]}" if run.page_errors else "")

    # The checks above pass vacuously on an output they do not recognise; make sure
    # they saw what the notebook's source says it displays.
    committed = json.loads((NOTEBOOKS / notebook).read_text(encoding="utf-8"))["cells"]
    code = [c for c in committed if c["cell_type"] == "code"]
    sources = "\n".join("".join(c["source"]) for c in code)
    committed_pictures = [o for c in code for o in c.get("outputs", [])
                          if declared_counts({"metadata": o.get("metadata"),
                                              "text_plain": "".join(o.get("data", {}).get(
                                                  "text/plain", ""))})]
    if committed_pictures:
        pictures = [m for _, m, _ in outputs_of(report) if declared_counts(m)]
        assert pictures, f"{notebook}: no DAG picture recognised on the page"
    for view in ("RunView", "SagaView"):
        if f"{view}(" in sources:
            assert _views_in(report, view), f"{notebook}: its {view} was not found on the page"
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot at {shot}"

    # Saved and reopened with a new kernel, as a person does the next day: the finished
    # views are static snapshots (no "model not found"), the pictures still drawn.
    reopened = run_notebook(browser, lab_server, notebook, screenshots / f"{stem}.reopened.png",
                            run=False)
    assert reopened.report["theme"] == LIGHT_THEME
    problems = find_problems(reopened.report, reopened.broken_images)
    assert not problems, explain(f"{notebook} (saved, reopened)", problems)
    for view in ("RunView", "SagaView"):
        for cell, _, dom in _views_in(reopened.report, view):
            assert dom.get("snapshot"), f"{notebook}: cell {cell}: {view} left no snapshot"

    # The same file untrusted (a clone, GitHub, nbviewer): JupyterLab refuses SVG and
    # sanitizes HTML; the pictures and the snapshots must still show.
    copy = _untrusted_copy(lab_root, notebook)
    untrusted = run_notebook(browser, lab_server, copy, screenshots / f"{stem}.untrusted.png",
                             run=False, theme=DARK_THEME)
    cells = [c for c in untrusted.report["cells"] if c["type"] == "code"]
    assert cells and not any(c["trusted"] for c in cells), f"{copy}: JupyterLab trusted it"
    problems = find_problems(untrusted.report, untrusted.broken_images)
    assert not problems, explain(f"{notebook} (untrusted)", problems)
