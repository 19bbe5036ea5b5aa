"""Every tutorial in notebooks/, run top to bottom in JupyterLab, looks right in Chromium.

nbval proves the kernel side; this proves the side a person sees: no error
on screen, every widget drawn (not an error, not an empty box), every DAG
picture an SVG with the nodes and edges the notebook declares, live views that
end full and in final colours. A screenshot per notebook lands in
build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .checks import declared_counts, explain, find_problems, outputs_of
from .conftest import NOTEBOOKS
from .driver import run_notebook
from .lab import LabServer

TUTORIALS = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _views_in(report: dict[str, Any], name: str) -> list[tuple[int, dict, dict]]:
    return [(c, m, d) for c, m, d in outputs_of(report)
            if (m.get("text_plain") or "").startswith(f"{name}(")]


@pytest.mark.parametrize("notebook", TUTORIALS, ids=[Path(n).stem for n in TUTORIALS])
def test_tutorial_runs_and_looks_right_in_jupyterlab(
        notebook: str, lab_server: LabServer, browser: Any, screenshots: Path) -> None:
    shot = screenshots / f"{Path(notebook).stem}.png"
    run = run_notebook(browser, lab_server, notebook, shot)
    report = run.report

    problems = find_problems(report)
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
