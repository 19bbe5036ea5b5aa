"""The main job: an order-processing workflow run on the embedded defaults.

Ten nodes with a conditional branch (big orders need a fraud check), a node
that fails once and succeeds on retry, and a plain (sync) function that runs in
a worker thread. ``python -m lion_nb demo`` prints one row per node and a summary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .engine import ExecutorConfig, WorkflowExecutor
from .model import Node, RetryPolicy, TriggerRule, WorkflowBuilder, WorkflowDefinition
from .state import InstanceState

__all__ = ["build_demo_workflow", "register_demo_handlers", "run_demo"]

ORDERS = [{"id": f"o-{i}", "amount": 40 + 35 * i} for i in range(8)]


def build_demo_workflow() -> WorkflowDefinition:
    """The demo DAG: fetch -> validate -> (score | fraud check) -> ... -> report."""
    specs: list[tuple[str, dict[str, Any]]] = [
        ("fetch_orders", {}),
        ("validate", {}),
        ("enrich_customers", {"retry": RetryPolicy(max_attempts=3, backoff=0.01)}),
        ("price_totals", {}),
        ("fraud_check", {}),
        ("fast_track", {}),
        ("reserve_stock", {"trigger_rule": TriggerRule.ONE_SUCCESS}),
        ("charge", {}),
        ("notify", {}),
        ("report", {"trigger_rule": TriggerRule.ALL_DONE}),
    ]
    n = {name: Node(name, **kw) for name, kw in specs}
    b = WorkflowBuilder("order-processing").add_nodes(*n.values())
    b.connect(n["fetch_orders"], n["validate"])
    b.connect(n["validate"], n["enrich_customers"])
    b.connect(n["validate"], n["price_totals"])
    b.connect(n["price_totals"], n["fraud_check"], "result.total > 1000")
    b.connect(n["price_totals"], n["fast_track"], "result.total <= 1000")
    b.connect(n["fraud_check"], n["reserve_stock"])
    b.connect(n["fast_track"], n["reserve_stock"])
    b.connect(n["enrich_customers"], n["charge"])
    b.connect(n["reserve_stock"], n["charge"])
    b.connect(n["charge"], n["notify"])
    b.connect(n["notify"], n["report"])
    return b.build()


def register_demo_handlers(executor: WorkflowExecutor) -> None:
    """Handlers for the demo nodes (one flaky, one sync, the rest async)."""
    flaky_calls = {"n": 0}

    async def fetch_orders(ctx: Any) -> Any:
        await asyncio.sleep(0.01)
        return {"orders": ORDERS}

    async def validate(ctx: Any) -> Any:
        orders = ctx.results["fetch_orders"]["orders"]
        return {"valid": [o for o in orders if o["amount"] > 0]}

    async def enrich_customers(ctx: Any) -> Any:
        flaky_calls["n"] += 1
        if flaky_calls["n"] == 1:
            raise ConnectionError("customer service timed out (first call always does)")
        return {"customers": len(ctx.results["validate"]["valid"])}

    def price_totals(ctx: Any) -> Any:  # plain function: runs in a worker thread
        time.sleep(0.02)
        return {"total": sum(o["amount"] for o in ctx.results["validate"]["valid"])}

    async def fraud_check(ctx: Any) -> Any:
        await asyncio.sleep(0.01)
        return {"flagged": 0}

    async def fast_track(ctx: Any) -> Any:
        return {"flagged": 0}

    async def reserve_stock(ctx: Any) -> Any:
        return {"reserved": True}

    async def charge(ctx: Any) -> Any:
        return {"charged": ctx.results.get("reserve_stock", {}).get("reserved", False)}

    async def notify(ctx: Any) -> Any:
        return {"sent": 1}

    async def report(ctx: Any) -> Any:
        return {"done": sorted(ctx.results)}

    for fn in (fetch_orders, validate, enrich_customers, price_totals, fraud_check, fast_track,
               reserve_stock, charge, notify, report):
        executor.add_handler(fn.__name__, fn)


def _table(executor: WorkflowExecutor, instance_id: str) -> str:
    snap = executor.snapshot(instance_id)
    durations: dict[str, float] = {}
    for rec in executor.history.attempts(instance_id):
        if rec.duration is not None:
            durations[rec.node] = durations.get(rec.node, 0.0) + rec.duration
    rows = [f"{'node':<18} {'state':<16} {'attempts':>8} {'duration':>10}",
            "-" * 55]
    for node in snap.definition.topological_order():
        d = durations.get(node.name)
        rows.append(f"{node.name:<18} {snap.node_states[node.name].value:<16} "
                    f"{snap.attempts[node.name]:>8} "
                    f"{(f'{d * 1000:.1f} ms') if d is not None else '-':>10}")
    return "\n".join(rows)


async def run_demo() -> int:
    """Run the demo on the embedded defaults; 0 if the instance succeeded."""
    workflow = build_demo_workflow()
    async with WorkflowExecutor(config=ExecutorConfig()) as executor:
        register_demo_handlers(executor)
        result = await executor.run(workflow)
        print(f"workflow {workflow.name!r}: {len(workflow)} nodes, {len(workflow.edges)} edges")
        print(_table(executor, result.instance_id))
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts().items()))
        print(f"\ninstance {result.instance_id}: {result.state.value} in "
              f"{(result.duration or 0) * 1000:.1f} ms ({counts}); "
              f"order total {result['price_totals']['total']}")
        return 0 if result.state is InstanceState.SUCCEEDED else 1
