"""Saga throughput against the same service calls made directly in plain asyncio, one run.

    python benchmarks/saga.py [--sagas N] [--broker-sagas M] [--sqlite-sagas K]

Three in-process services (order, inventory, payment). Each row starts N sagas
at once and waits for all of them; "fail last" makes the payment step raise so
the two completed steps are compensated in reverse.

Baseline: what a careful hand-written saga does per instance in plain asyncio:
one task per saga; each call under ``asyncio.timeout``; results kept in a
dict and passed to later calls; on an exception the completed steps'
compensations are awaited in reverse. lion_nb adds step records, status
bookkeeping, history rows and (in the SQLite row) a durable saga log: one
fsynced transaction per step outcome, shared by concurrent sagas through
``SqliteStorage(group_commit_ms=0)``; that row is bound by fsync, not by lion_nb.

Prints sagas/second and the overhead factor (target for the in-memory,
in-process rows: at most 5x). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.patterns import (  # noqa: E402
    EventBroker, EventBrokerConfig, SagaDefinitionBuilder, SagaManager, SagaManagerConfig,
    SagaStep,
)
from lion_nb.state import SqliteStorage  # noqa: E402

SERVICES = ("order-service", "inventory-service", "payment-service")
STEPS = (("create-order", "create_order", "cancel_order"),
         ("reserve-inventory", "reserve_inventory", "release_inventory"),
         ("process-payment", "charge_payment", "refund_payment"))


async def service(action: dict, data: dict, fail: bool) -> dict:
    """The work every variant calls: a tiny dict in, a tiny dict out."""
    if fail and action["action"] == "charge_payment":
        raise RuntimeError("card declined")
    return {"done": action["action"], "order": data["order_id"]}


async def plain_saga(data: dict, fail: bool) -> str:
    results: dict[str, dict] = {}
    done: list[tuple[str, str]] = []
    try:
        for step_id, action, undo in STEPS:
            async with asyncio.timeout(30):
                results[step_id] = await service({"action": action}, data, fail)
            done.append((step_id, undo))
        return "completed"
    except Exception:
        for step_id, undo in reversed(done):
            async with asyncio.timeout(30):
                await service({"action": undo, "result": results[step_id]}, data, False)
        return "compensated"


async def run_plain(n: int, fail: bool) -> float:
    gc.collect()
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(*(plain_saga({"order_id": i}, fail) for i in range(n)))
    elapsed = time.perf_counter() - t0
    assert outcomes.count("compensated" if fail else "completed") == n
    return n / elapsed


def definition():
    builder = SagaDefinitionBuilder("order-saga", "Order Processing")
    for (step_id, action, undo), svc in zip(STEPS, SERVICES):
        builder.add_step(SagaStep(step_id, step_id, {"action": action}, svc)
                         .with_compensation({"action": undo}))
    return builder.build()


async def run_lion(n: int, fail: bool, *, via_broker: bool = False,
                   storage=None) -> float:
    broker = EventBroker(EventBrokerConfig(max_pending=4 * n + 10, history_limit=0))
    manager = SagaManager(broker, SagaManagerConfig(history_limit=0, keep_finished=n),
                          storage=storage)
    await manager.register_definition(definition())

    async def handler(cmd):
        return await service(cmd.action, cmd.data, fail)

    for svc in SERVICES:
        await manager.register_service(svc, handler, via_broker=via_broker)
    gc.collect()
    t0 = time.perf_counter()
    insts = [await manager.create_instance("order-saga", {"order_id": i}) for i in range(n)]
    for inst in insts:
        await manager.start_instance(inst.id)
    for inst in insts:
        await manager.wait(inst.id)
    elapsed = time.perf_counter() - t0
    want = "compensated" if fail else "completed"
    assert all(i.status.value == want for i in insts), {i.status.value for i in insts}
    await manager.close()
    await broker.close()
    if storage is not None:
        await storage.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=20_000)
    parser.add_argument("--broker-sagas", type=int, default=5_000)
    parser.add_argument("--sqlite-sagas", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    def best(rates):
        return max(rates)

    rows = []
    for fail in (False, True):
        label = "fail last" if fail else "no failure"
        plain = best([await run_plain(args.sagas, fail) for _ in range(args.repeat)])
        local = best([await run_lion(args.sagas, fail) for _ in range(args.repeat)])
        rows.append((f"in memory, in-process services, {label}", local, plain, "<= 5x"))
        plain_b = best([await run_plain(args.broker_sagas, fail) for _ in range(args.repeat)])
        broker = best([await run_lion(args.broker_sagas, fail, via_broker=True)
                       for _ in range(args.repeat)])
        rows.append((f"in memory, services via the broker, {label}", broker, plain_b, "-"))
        with tempfile.TemporaryDirectory() as tmp:
            plain_s = await run_plain(args.sqlite_sagas, fail)
            sqlite = await run_lion(args.sqlite_sagas, fail,
                                    storage=SqliteStorage(Path(tmp) / "sagas.db",
                                                          group_commit_ms=0))
        rows.append((f"SQLite log (group commit), in-process, {label}", sqlite, plain_s, "-"))
    print(f"{'lion_nb':55} {'sagas/s':>10} {'plain asyncio':>14} {'overhead':>9} {'target':>7}")
    for name, lion, plain, target in rows:
        print(f"{name:55} {lion:10,.0f} {plain:14,.0f} {plain / lion:8.1f}x {target:>7}")


if __name__ == "__main__":
    asyncio.run(main())
