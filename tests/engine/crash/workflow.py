"""The crash-test workflow: 26 nodes, fan-out/fan-in, conditional edges, sync handlers.

Every handler appends ``"<generation> <node> <attempt>"`` to a side-effect log
(O_APPEND + fsync) before returning, so the harness can tell which nodes ran
in which process generation. Outputs are pure functions of the node, so an
interrupted run must end with exactly the results of an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from lion_nb.engine import WorkflowExecutor
from lion_nb.model import Node, WorkflowBuilder, WorkflowDefinition

__all__ = ["build", "register", "FANOUT", "REPORTS"]

FANOUT = 8
REPORTS = 4


def build() -> WorkflowDefinition:
    """Start -> 8 x (Fetch -> Parse[sync]) -> Merge -> Big|Small (conditions) -> ... -> Final."""
    b = WorkflowBuilder("crash-etl")
    start = Node("Start", handler="start")
    merge = Node("Merge", handler="merge")
    big = Node("Big", handler="big")
    small = Node("Small", handler="small")
    small_report = Node("SmallReport", handler="report", config={"k": -1})
    final = Node("Final", handler="final")
    b.add_nodes(start, merge, big, small, small_report, final)
    for k in range(FANOUT):
        fetch = Node(f"Fetch_{k}", handler="fetch", config={"k": k})
        parse = Node(f"Parse_{k}", handler="parse", config={"k": k})
        b.add_nodes(fetch, parse).connect(start, fetch).connect(fetch, parse)
        b.connect(parse, merge)
    b.connect(merge, big, condition="result.total > 100")
    b.connect(merge, small, condition="result.total <= 100")
    b.connect(small, small_report).connect(small_report, final)
    for k in range(REPORTS):
        report = Node(f"Report_{k}", handler="report", config={"k": k})
        b.add_node(report).connect(big, report).connect(report, final)
    return b.build()


class SideEffects:
    """Appends one fsynced line per handler call (the effect a crash must not repeat)."""

    def __init__(self, path: str | None, generation: int, max_sleep: float) -> None:
        self.path = path
        self.generation = generation
        self.max_sleep = max_sleep

    def record(self, ctx: Any) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.generation} {ctx.node_name} {ctx.attempt}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def pause(self) -> float:
        return random.uniform(0, self.max_sleep)


def register(executor: WorkflowExecutor, log_path: str | None = None, generation: int = 0,
             max_sleep: float = 0.004) -> None:
    """Register the workflow's handlers on ``executor``."""
    fx = SideEffects(log_path, generation, max_sleep)

    async def start(ctx):
        await asyncio.sleep(fx.pause())
        fx.record(ctx)
        return {"seed": 7}

    async def fetch(ctx):
        await asyncio.sleep(fx.pause())
        k = ctx.config["k"]
        rows = [ctx.results["Start"]["seed"] * k + i for i in range(5)]
        fx.record(ctx)
        return {"k": k, "rows": rows}

    def parse(ctx):  # a plain function: runs in the executor's thread pool
        time.sleep(fx.pause())
        (fetched,) = ctx.results.values()
        fx.record(ctx)
        return {"k": fetched["k"], "sum": sum(fetched["rows"])}

    async def merge(ctx):
        await asyncio.sleep(fx.pause())
        parts = sorted(ctx.results.values(), key=lambda p: p["k"])
        fx.record(ctx)
        return {"total": sum(p["sum"] for p in parts), "parts": [p["sum"] for p in parts]}

    async def big(ctx):
        await asyncio.sleep(fx.pause())
        fx.record(ctx)
        return {"size": "big", "total": ctx.results["Merge"]["total"]}

    async def small(ctx):  # never runs: its condition is false
        fx.record(ctx)
        return {"size": "small"}

    async def report(ctx):
        await asyncio.sleep(fx.pause())
        fx.record(ctx)
        return {"report": ctx.config["k"], "of": sorted(ctx.results)}

    async def final(ctx):
        await asyncio.sleep(fx.pause())
        fx.record(ctx)
        return {"reports": sorted(ctx.results)}

    for name, fn in [("start", start), ("fetch", fetch), ("parse", parse), ("merge", merge),
                     ("big", big), ("small", small), ("report", report), ("final", final)]:
        executor.add_handler(name, fn)
