"""In a real Jupyter kernel (nbclient): top-level await and sync helpers both work, and
importing lion_nb leaves ``asyncio.run`` untouched."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]

CELLS = [
    """
import asyncio
original_run = asyncio.run
import lion_nb
import lion_nb.notebook as nb
assert asyncio.run is original_run, "import patched asyncio.run"
assert not hasattr(asyncio, "_nest_patched")
print("import ok")
""",
    """
flow = lion_nb.Flow("kernel")

@flow.step
async def extract(ctx):
    await asyncio.sleep(0)
    return {"rows": 2}

@flow.step(after=extract, when="result.rows > 0")
def double(ctx):
    return ctx.results["extract"]["rows"] * 2

flow
""",
    """
run = await flow.run()           # top-level await on the kernel's own loop
print("await", run.state.value, run["double"])
""",
    """
again = flow.run_sync()          # a sync helper inside the running loop
print("sync", again.state.value, again["double"])
print("plain", nb.run(asyncio.sleep(0, result=5)))
""",
    """
run = await flow.run()           # the loop still serves top-level await afterwards
print("await again", run.state.value)
view = nb.RunView(await flow.executor())
display(view)
result = await flow.run()
print("view", view.progress.value, view.progress.max, view.instance_state)
""",
]


def test_top_level_await_and_sync_helpers_work_in_a_real_kernel(tmp_path, monkeypatch):
    # The kernel imports this checkout's lion_nb whatever its working directory
    # (a venv installed before lion_nb/__init__.py existed maps it as a namespace).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.strip()) for src in CELLS]
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except Exception as exc:  # nbclient raises CellExecutionError with the kernel's traceback
        pytest.fail(f"notebook failed: {exc}")

    def text(i: int) -> str:
        return "".join(o.get("text", "") for o in nb.cells[i].outputs
                       if o.output_type == "stream")

    assert text(0).strip() == "import ok"
    shown = [o for o in nb.cells[1].outputs if o.output_type == "execute_result"]
    assert "image/svg+xml" in shown[0]["data"]  # the Flow displayed itself as SVG
    assert text(2).strip() == "await succeeded 4"
    assert text(3).split() == ["sync", "succeeded", "4", "plain", "5"]
    assert "await again succeeded" in text(4)
    assert "view 2 2 succeeded" in text(4)
    widgets = [o for o in nb.cells[4].outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in widgets[0]["data"]
