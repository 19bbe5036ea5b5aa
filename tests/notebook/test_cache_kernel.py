"""In a real kernel (nbclient): edit a step's cell, re-execute it, re-run the flow -- only that
step and what depends on it run again (issue 19)."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Handlers note that they ran in a file: their prints would land in the cell that started
# the executor's worker tasks (ipykernel routes output by the task's context), and a
# global list they appended to would be data they read, changing their code version.
SETUP = """
import lion_nb
flow = lion_nb.Flow("kernel-cache", cache=True)
LOG = "ran.log"
open(LOG, "w").close()


def ran(name):
    with open(LOG, "a") as fh:
        fh.write(f"ran {name}\\n")
"""
EXTRACT = """
@flow.step
async def extract(ctx):
    ran("extract")
    return {"rows": [1, 2, 3]}
"""
TRANSFORM = """
@flow.step(after=extract)
async def transform(ctx):
    ran("transform")
    return [r * {factor} for r in ctx.results["extract"]["rows"]]
"""
SIDE = """
@flow.step(after=extract)
async def side(ctx):
    ran("side")
    return len(ctx.results["extract"]["rows"])
"""
LOAD = """
@flow.step(after=transform)
async def load(ctx):
    ran("load")
    return sum(ctx.results["transform"])
"""
RUN = """
result = await flow.run()
with open(LOG) as fh:
    print(fh.read(), end="")
open(LOG, "w").close()
print("reasons", sorted((n, str(r)) for n, r in result.reasons.items()))
print("load", result["load"])
"""


def test_editing_a_cell_reruns_only_that_step_and_its_descendants(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    sources = [SETUP, EXTRACT, TRANSFORM.replace("{factor}", "2"), SIDE, LOAD, RUN]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.strip()) for src in sources]
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})

    def execute(index: int) -> list[str]:
        cell = nb.cells[index]
        client.execute_cell(cell, index)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            pytest.fail("\n".join(errors[0].get("traceback", [])))
        return "".join(o.get("text", "") for o in cell.outputs
                       if o.output_type == "stream").splitlines()

    with client.setup_kernel():
        for i in range(5):
            execute(i)
        first = execute(5)
        assert sorted(x for x in first if x.startswith("ran")) == [
            "ran extract", "ran load", "ran side", "ran transform"]
        assert first[-1] == "load 12"

        again = execute(5)
        assert [x for x in again if x.startswith("ran")] == []
        assert "('transform', 'reused')" in again[-2]

        unchanged = execute(2)  # re-running a cell without editing it changes nothing
        assert unchanged == [] and not [x for x in execute(5) if x.startswith("ran")]

        nb.cells[2].source = TRANSFORM.replace("{factor}", "10").strip()  # the edit
        execute(2)
        edited = execute(5)
        assert sorted(x for x in edited if x.startswith("ran")) == ["ran load",
                                                                    "ran transform"]
        assert edited[-2] == ("reasons [('extract', 'reused'), ('load', 'input changed: "
                              "transform'), ('side', 'reused'), ('transform', 'code changed')]")
        assert edited[-1] == "load 60"
