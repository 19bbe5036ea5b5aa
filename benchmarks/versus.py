"""The same workloads on this checkout and on an earlier commit, interleaved: did anything slow down?

    python benchmarks/versus.py [--ref a583bf0] [--rounds 5] [--only engine_chain,events]
    python benchmarks/versus.py --calls [--only saga_memory]   # function calls, not seconds

Every other script compares lion_nb with a plain-Python baseline; this one compares
lion_nb with itself. The library of ``--ref`` (default: the commit before the
restructure of issue 13) is extracted with ``git archive`` into ``build/versus/<ref>``;
each workload then runs in a fresh process per side, the two sides alternating
(old-new, new-old, ...) so bursts of load on a shared machine hit both alike. A row
reports each side's median seconds and the median (min–max) of the per-round
new/old ratios; a ratio above 1.05 is flagged. Workloads use only names that are
public in both versions (the builders, the executor, the broker, the saga manager,
the storages, the authority, ``RunView``). Prints a table; asserts nothing.

Wall clock on a shared machine swings by tens of percent between rounds, so
``--calls`` counts instead: the Python and C function calls (cProfile, in the
event loop's thread) made between the workload's timer start and stop, once per
side (the count does not depend on the load).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

ROOT = Path(__file__).resolve().parents[1]
N = 10_000


def _definition(shape: str, n: int, requires: list[str] | None = None) -> Any:
    from lion_nb.model import Node, WorkflowBuilder
    import random

    nodes = [Node(f"n{i}", handler="noop", requires=requires or ()) for i in range(n)]
    builder = WorkflowBuilder(f"bench-{shape}").add_nodes(*nodes)
    if shape == "chain":
        pairs = [(i, i + 1) for i in range(n - 1)]
    elif shape == "fanout":
        pairs = [(0, i) for i in range(1, n - 1)] + [(i, n - 1) for i in range(1, n - 1)]
    elif shape == "lattice":  # 100 parallel chains: commits overlap as in a busy executor
        pairs = [(i - 100, i) for i in range(100, n)]
    else:
        rng = random.Random(42)
        pairs = [(p, i) for i in range(100, n)
                 for p in rng.sample(range((i // 100 - 1) * 100, (i // 100) * 100), 2)]
    for a, b in pairs:
        builder.connect(nodes[a], nodes[b])
    return builder.build()


async def _noop(ctx: object) -> None:
    return None


async def _engine(shape: str) -> float:
    """Build + run of a 10k no-op graph, history on (engine_overhead.py's workload)."""
    from lion_nb.engine import WorkflowExecutor

    executor = WorkflowExecutor()
    executor.add_handler("noop", _noop)
    await executor.start()
    t0 = time.perf_counter()
    result = await executor.run(_definition(shape, N))
    elapsed = time.perf_counter() - t0
    assert result.succeeded
    await executor.stop()
    return elapsed


async def _scheduler(policy: str) -> float:
    """A 10k fan-out whose middle nodes carry mixed priorities, under one policy."""
    from lion_nb.engine import SchedulerConfig, SchedulingPolicy, WorkflowExecutor, WorkflowScheduler
    from lion_nb.model import Node, Priority, WorkflowBuilder

    prios = list(Priority)
    nodes = [Node(f"n{i}", handler="noop", priority=prios[i % len(prios)]) for i in range(N)]
    builder = WorkflowBuilder("sched").add_nodes(*nodes)
    for i in range(1, N - 1):
        builder.connect(nodes[0], nodes[i])
        builder.connect(nodes[i], nodes[-1])
    definition = builder.build()
    scheduler = WorkflowScheduler(SchedulerConfig(policy=SchedulingPolicy(policy)))
    executor = WorkflowExecutor(scheduler=scheduler)
    executor.add_handler("noop", _noop)
    await executor.start()
    t0 = time.perf_counter()
    result = await executor.run(definition)
    elapsed = time.perf_counter() - t0
    assert result.succeeded
    await executor.stop()
    return elapsed


async def _durable(backend: str) -> float:
    """A durable run on one storage: 1k nodes as one chain (one commit at a time)."""
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.state import FileStorage, SqliteStorage, StateMachineManager

    async def handler(ctx: object) -> dict:
        return {"rows": 1000, "path": "s3://bucket/out/part-00000.parquet"}

    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        storage = (FileStorage(os.path.join(tmp, "s")) if backend == "files"
                   else SqliteStorage(os.path.join(tmp, "s.db")))
        executor = WorkflowExecutor(state_manager=StateMachineManager(storage),
                                    config=ExecutorConfig(record_history=False))
        executor.add_handler("noop", handler)
        await executor.start()
        definition = _definition("chain", 1000)
        t0 = time.perf_counter()
        result = await executor.run(definition)
        elapsed = time.perf_counter() - t0
        assert result.succeeded
        await executor.stop()
        await storage.close()
    return elapsed


async def _events() -> float:
    """20k events published, delivered and acked through the in-memory broker."""
    from lion_nb.patterns import Event, EventAck, EventBroker, EventBrokerConfig

    n = 20_000
    broker = EventBroker(EventBrokerConfig(max_pending=n + 1))
    rx, ack_tx = await broker.subscribe("bench.event", "consumer", None)

    async def consumer() -> None:
        for _ in range(n):
            delivery = await rx.recv()
            assert delivery is not None
            await ack_tx.send(EventAck.success(delivery.id, "consumer"))

    task = asyncio.ensure_future(consumer())
    t0 = time.perf_counter()
    for i in range(n):
        await broker.publish(Event("bench.event", {"n": i}))
    await task
    elapsed = time.perf_counter() - t0
    await broker.close()
    return elapsed


async def _saga(fail: bool) -> float:
    """5k three-step sagas with in-process services, all at once (saga.py's workload)."""
    from lion_nb.patterns import (EventBroker, EventBrokerConfig, SagaDefinitionBuilder,
                                  SagaManager, SagaManagerConfig, SagaStep)

    n = 5000
    steps = (("create-order", "create_order", "cancel_order", "order-service"),
             ("reserve-inventory", "reserve_inventory", "release_inventory", "inventory-service"),
             ("process-payment", "charge_payment", "refund_payment", "payment-service"))
    builder = SagaDefinitionBuilder("order-saga", "Order Processing")
    for step_id, action, undo, svc in steps:
        builder.add_step(SagaStep(step_id, step_id, {"action": action}, svc)
                         .with_compensation({"action": undo}))
    broker = EventBroker(EventBrokerConfig(max_pending=4 * n + 10, history_limit=0))
    manager = SagaManager(broker, SagaManagerConfig(history_limit=0, keep_finished=n))
    await manager.register_definition(builder.build())

    async def handler(cmd: Any) -> dict:
        if fail and cmd.action["action"] == "charge_payment":
            raise RuntimeError("card declined")
        return {"done": cmd.action["action"], "order": cmd.data["order_id"]}

    for *_, svc in steps:
        await manager.register_service(svc, handler)
    t0 = time.perf_counter()
    insts = [await manager.create_instance("order-saga", {"order_id": i}) for i in range(n)]
    for inst in insts:
        await manager.start_instance(inst.id)
    for inst in insts:
        await manager.wait(inst.id)
    elapsed = time.perf_counter() - t0
    await manager.close()
    await broker.close()
    return elapsed


async def _security() -> float:
    """A 10k chain where every node requires a capability the run was granted."""
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.security import Authority, Capability

    authority = Authority.generate()
    executor = WorkflowExecutor(config=ExecutorConfig(authority=authority))
    executor.add_handler("noop", _noop)
    await executor.start()
    token = authority.mint(Capability("db", frozenset({"read"})))
    definition = _definition("chain", N, requires=["db:read"])
    t0 = time.perf_counter()
    result = await executor.run(definition, grants=[token])
    elapsed = time.perf_counter() - t0
    assert result.succeeded
    await executor.stop()
    return elapsed


async def _run_view() -> float:
    """A 10k-node lattice run with a RunView attached (no browser: a counting comm)."""
    import comm

    from lion_nb.engine import WorkflowExecutor
    from lion_nb.notebook import RunView

    class QuietComm:
        comm_id, kernel = "bench", "Truthy"

        def __init__(self, **kwargs: object) -> None:
            pass

        def send(self, *args: object, **kwargs: object) -> None:
            pass

        open = on_msg = close = send

    comm.create_comm = QuietComm  # type: ignore[assignment]
    executor = WorkflowExecutor()
    executor.add_handler("noop", _noop)
    await executor.start()
    view = RunView(executor, picture=False)
    definition = _definition("lattice", N)
    t0 = time.perf_counter()
    result = await executor.run(definition)
    elapsed = time.perf_counter() - t0
    assert result.succeeded
    view.close()
    await executor.stop()
    return elapsed


WORKLOADS: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
    "engine_chain": lambda: _engine("chain"),
    "engine_fanout": lambda: _engine("fanout"),
    "engine_layered": lambda: _engine("layered"),
    "scheduler_priority": lambda: _scheduler("priority"),
    "scheduler_edf": lambda: _scheduler("edf"),
    "scheduler_mlfq": lambda: _scheduler("mlfq"),
    "durable_sqlite": lambda: _durable("sqlite"),
    "durable_files": lambda: _durable("files"),
    "events_memory": _events,
    "saga_memory": lambda: _saga(False),
    "saga_memory_fail_last": lambda: _saga(True),
    "security_checked_chain": _security,
    "run_view": _run_view,
}


def old_tree(ref: str) -> Path:
    """The library of ``ref``, extracted once into build/versus/<ref>."""
    dest = ROOT / "build" / "versus" / ref
    if not (dest / "lion_nb" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "lion_nb"],
                             capture_output=True)
        if got.returncode:
            sys.exit(f"versus: cannot read {ref!r} from git (a shallow clone? "
                     f"`git fetch --unshallow` first): {got.stderr.decode().strip()}")
        archive = got.stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(dest, filter="data")
    return dest


def measure(tree: Path, workload: str, calls: bool = False) -> float:
    """Seconds (or function calls) of one workload in a fresh process on ``tree``'s lion_nb."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, __file__, "--one", workload,
                          *(["--calls"] if calls else [])], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["calls" if calls else "secs"])


def count_calls(workload: str) -> int:
    """Function calls between the workload's ``perf_counter`` reads (its timed part)."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    clock = time.perf_counter
    reads = 0

    def timer() -> float:   # the workload reads the clock twice: start, then stop
        nonlocal reads
        if sys._getframe(1).f_code.co_filename == __file__:   # not the library's reads
            reads += 1
            if reads == 1:
                profile.enable()
            elif reads == 2:
                profile.disable()
        return clock()

    time.perf_counter = timer
    try:
        asyncio.run(WORKLOADS[workload]())
    finally:
        time.perf_counter = clock
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="a583bf0")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--one")
    parser.add_argument("--calls", action="store_true",
                        help="count function calls (once per side) instead of timing")
    args = parser.parse_args()
    (ROOT / "build").mkdir(exist_ok=True)
    if args.one:
        gc.collect()
        if args.calls:
            print(json.dumps({"calls": count_calls(args.one)}))
        else:
            print(json.dumps({"secs": asyncio.run(WORKLOADS[args.one]())}))
        return
    old, new = old_tree(args.ref), ROOT
    if args.calls:
        print(f"function calls in the timed part; old = {args.ref}, new = this checkout")
        print(f"{'workload':<24}{'old':>12}{'new':>12}   new/old")
        for name in args.only.split(","):
            o, n = measure(old, name, True), measure(new, name, True)
            flag = "  > 5% more" if n > 1.05 * o else ""
            print(f"{name:<24}{o:>12,.0f}{n:>12,.0f}   {n / o:.3f}{flag}", flush=True)
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds; old = {args.ref}, new = this checkout")
    print(f"{'workload':<24}{'old s':>9}{'new s':>9}   {'new/old median (min-max)':<28}")
    for name in args.only.split(","):
        olds, news, ratios = [], [], []
        for r in range(args.rounds):
            order = (old, new) if r % 2 == 0 else (new, old)
            got = {tree: measure(tree, name) for tree in order}
            olds.append(got[old])
            news.append(got[new])
            ratios.append(got[new] / got[old])
        ratio = statistics.median(ratios)
        flag = "  > 5% slower" if ratio > 1.05 else ""
        print(f"{name:<24}{statistics.median(olds):>9.3f}{statistics.median(news):>9.3f}   "
              f"{ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f}){flag}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
