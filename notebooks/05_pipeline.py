"""The workflow of the checkpoint-and-resume tutorial (05_checkpoint_resume.ipynb).

The notebook imports it (``importlib.import_module("05_pipeline")``) and also runs it
as a child process that it kills with SIGKILL in the middle of a run::

    python 05_pipeline.py STATE_DB SIDE_EFFECT_LOG INSTANCE_ID

Every handler appends one line ``"<process> <instance> <node> <attempt>"`` to a side-effect
log before it returns, so the notebook can tell which nodes ran in which process.
Outputs depend only on the inputs, so an interrupted-then-resumed run must end
with exactly the results of an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import os
import sys

from lion_nb.engine import WorkflowExecutor
from lion_nb.model import Node, WorkflowBuilder, WorkflowDefinition

REGIONS = ("eu", "us", "apac")
ORDERS = {"eu": [40, 25, 60], "us": [80, 15], "apac": [30, 45, 10, 5]}


def build() -> WorkflowDefinition:
    """extract -> clean_<region> x3 -> merge -> report (total > 100) | alert (total <= 100)."""
    b = WorkflowBuilder("nightly-orders")
    extract, merge = Node("extract"), Node("merge")
    report, alert = Node("report"), Node("alert")
    b.add_nodes(extract, merge, report, alert)
    for region in REGIONS:
        clean = Node(f"clean_{region}", handler="clean", config={"region": region})
        b.add_node(clean).connect(extract, clean).connect(clean, merge)
    b.connect(merge, report, "result.total > 100")
    b.connect(merge, alert, "result.total <= 100")
    return b.build()


def register(executor: WorkflowExecutor, log_path: str, process: str,
             slow_merge: float = 0.0) -> None:
    """Register the handlers; each appends ``"<process> <instance> <node> <attempt>"``."""

    def side_effect(ctx) -> None:
        with open(log_path, "a") as log:
            log.write(f"{process} {ctx.instance_id} {ctx.node_name} {ctx.attempt}\n")
            log.flush()
            os.fsync(log.fileno())

    async def extract(ctx):
        await asyncio.sleep(0.05)
        side_effect(ctx)
        return {region: list(rows) for region, rows in ORDERS.items()}

    async def clean(ctx):
        await asyncio.sleep(0.05)
        region = ctx.config["region"]
        side_effect(ctx)
        return {"region": region, "total": sum(ctx.results["extract"][region])}

    async def merge(ctx):
        side_effect(ctx)  # the side effect happens first: a crash below repeats it
        await asyncio.sleep(slow_merge)
        parts = sorted(ctx.results.values(), key=lambda part: part["region"])
        return {"total": sum(p["total"] for p in parts),
                "by_region": {p["region"]: p["total"] for p in parts}}

    async def report(ctx):
        side_effect(ctx)
        return f"{ctx.results['merge']['total']} in orders tonight"

    async def alert(ctx):
        side_effect(ctx)
        return "quiet night"

    for name, handler in [("extract", extract), ("clean", clean), ("merge", merge),
                          ("report", report), ("alert", alert)]:
        executor.add_handler(name, handler)


async def _child(db: str, log: str, instance_id: str) -> None:
    from lion_nb.state import SqliteStorage, StateMachineManager

    storage = SqliteStorage(db)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage))
    register(executor, log, "child", slow_merge=60.0)  # merge is slow: time to pull the plug
    async with executor:
        await executor.execute_workflow(build(), instance_id=instance_id)
        print("started", instance_id, flush=True)
        result = await executor.wait(instance_id)
        print("finished", result.state.value, flush=True)
    await storage.close()


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:4]))
