"""Engine overhead: µs per no-op node (build + run) and peak memory, vs plain asyncio.

Shapes: chain, fan-out/fan-in (1 -> N -> 1), layered random DAG (width 100, two
parents per node from the previous layer, fixed seed); N = 1k, 10k, 100k. The
baseline is a minimal plain-asyncio executor (one Task per node, dependency
counting) measured in the same run. Each measurement runs in a fresh
subprocess, so its memory belongs to that run alone; rounds interleave the
baseline and lion_nb (alternating which goes first), and every cell is the
median (min-max) over rounds, with the machine's load average stated. Memory
per node is the peak RSS of the run minus the RSS before building, over n.
Usage: python benchmarks/engine_overhead.py [--sizes 1000,10000] [--rounds 5]

Two more tables catch costs that grow with the square of the graph:
- the notebook front end: ``Flow`` declare + run against the same graph built with
  WorkflowBuilder and run on WorkflowExecutor, history on, medians of fresh processes
  (target: within 1.2x at 10k steps);
- edge order: a chain's edges added parents-first and child-first, µs per edge
  including ``build()`` (target: the same per edge in either order, at any size).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any


def edges_of(shape: str, n: int) -> list[tuple[int, int]]:
    """Edge list (by node index) of a benchmark shape with n nodes."""
    if shape == "chain":
        return [(i, i + 1) for i in range(n - 1)]
    if shape == "fanout":
        return [(0, i) for i in range(1, n - 1)] + [(i, n - 1) for i in range(1, n - 1)]
    rng = random.Random(42)
    width, out = 100, []
    for i in range(width, n):
        layer_start = (i // width - 1) * width
        for p in rng.sample(range(layer_start, layer_start + width), 2):
            out.append((p, i))
    return out


async def plain_asyncio(n: int, edges: list[tuple[int, int]]) -> float:
    """The baseline: one Task per node, released by dependency counting."""
    t0 = time.perf_counter()
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    done = asyncio.get_running_loop().create_future()
    remaining = [n]

    async def noop() -> None:
        return None

    async def run(i: int) -> None:
        await noop()
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                asyncio.ensure_future(run(j))
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set_result(None)

    for i in range(n):
        if indeg[i] == 0:
            asyncio.ensure_future(run(i))
    await done
    return time.perf_counter() - t0


async def lion(n: int, edges: list[tuple[int, int]], history: bool) -> float:
    """lion_nb: WorkflowBuilder + WorkflowExecutor.run, history recording on."""
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder

    executor = WorkflowExecutor(config=ExecutorConfig(record_history=history))

    async def noop(ctx: object) -> None:
        return None

    executor.add_handler("noop", noop)
    await executor.start()
    t0 = time.perf_counter()
    nodes = [Node(f"n{i}", handler="noop") for i in range(n)]
    builder = WorkflowBuilder("bench").add_nodes(*nodes)
    for a, b in edges:
        builder.connect(nodes[a], nodes[b])
    definition = builder.build()
    result = await executor.run(definition)
    elapsed = time.perf_counter() - t0
    assert result.succeeded and (not history or len(executor.history.records) == n)
    await executor.stop()
    return elapsed


def flow_like_config() -> Any:
    """The settings of the executor a ``Flow`` makes for itself (see ``Flow.executor``)."""
    from lion_nb.engine import ExecutorConfig

    return ExecutorConfig(require_json_results=False)


async def builder_run(n: int, edges: list[tuple[int, int]]) -> float:
    """WorkflowBuilder + WorkflowExecutor on a graph shaped like a Flow's (handler per node)."""
    from lion_nb.engine import WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder

    async def noop(ctx: object) -> None:
        return None

    # The executor a Flow makes for itself (results stay Python objects, not checked as
    # JSON; history by one recorder): like with like, only the front end differs.
    executor = WorkflowExecutor(config=flow_like_config())
    await executor.start()
    t0 = time.perf_counter()
    nodes = [Node(f"n{i}") for i in range(n)]
    builder = WorkflowBuilder("bench").add_nodes(*nodes)
    for a, b in edges:
        builder.connect(nodes[a], nodes[b])
    for i in range(n):
        executor.add_handler(f"n{i}", noop)
    result = await executor.run(builder.build())
    elapsed = time.perf_counter() - t0
    assert result.succeeded and len(executor.history.records) == n
    await executor.stop()
    return elapsed


async def flow_run(n: int, edges: list[tuple[int, int]]) -> float:
    """The notebook front end: one ``@flow.step`` per node, then ``await flow.run()``."""
    from lion_nb.notebook import Flow

    async def noop(ctx: object) -> None:
        return None

    preds: list[list[str]] = [[] for _ in range(n)]
    for a, b in edges:
        preds[b].append(f"n{a}")
    flow = Flow("bench")
    ex = await flow.executor()  # the executor start is not what this row measures
    # record_history: the Flow records on its own recorder instead of the executor's.
    assert dataclasses.replace(ex.config, record_history=True) == flow_like_config(), \
        "builder_run must use the settings of the executor a Flow makes"
    t0 = time.perf_counter()
    for i in range(n):
        flow.step(noop, name=f"n{i}", after=preds[i])
    result = await flow.run()
    elapsed = time.perf_counter() - t0
    assert result.succeeded and len(flow.history.records) == n
    await (await flow.executor()).stop()
    return elapsed


def edge_order(n: int) -> tuple[float, float]:
    """µs per edge (adding a chain's edges, then build()): parents-first, child-first."""
    from lion_nb.model import Node, WorkflowBuilder

    out = []
    for order in (range(n - 1), range(n - 2, -1, -1)):
        nodes = [Node(f"n{i}") for i in range(n)]
        builder = WorkflowBuilder("order").add_nodes(*nodes)
        t0 = time.perf_counter()
        for i in order:
            builder.connect(nodes[i], nodes[i + 1])
        builder.build()
        out.append((time.perf_counter() - t0) / (n - 1) * 1e6)
    return out[0], out[1]


def _rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(impl: str, shape: str, n: int) -> None:
    """Child process: measure one run and print JSON (wall and CPU seconds, bytes per node)."""
    edges = edges_of(shape, n)
    import lion_nb.engine  # noqa: F401  (import cost is not per-node cost: load it first)
    import lion_nb.model  # noqa: F401
    gc.collect()
    before = _rss()
    cpu = time.process_time()
    if impl == "asyncio":
        secs = asyncio.run(plain_asyncio(n, edges))
    elif impl == "builder":
        secs = asyncio.run(builder_run(n, edges))
    elif impl == "flow":
        secs = asyncio.run(flow_run(n, edges))
    else:
        secs = asyncio.run(lion(n, edges, history=impl == "lion"))
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"secs": secs, "cpu": cpu, "bytes_per_node": (peak - before) / n}))


def run_child(impl: str, shape: str, n: int) -> dict[str, float]:
    """One measurement in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--one", impl, shape, str(n)],
                         check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def spread(values: list[float], fmt: str = ".2f") -> str:
    """``median (min-max)``."""
    return (f"{statistics.median(values):{fmt}} "
            f"({min(values):{fmt}}-{max(values):{fmt}})")


def front_end_table(sizes: list[int], rounds: int) -> None:
    """Flow declare + run vs WorkflowBuilder + WorkflowExecutor, interleaved."""
    print(f"\n{'shape':<8} {'steps':>7} {'builder us/node':>22} {'Flow us/node':>22} "
          f"{'ratio':>18}   target <= 1.20 at 10k")
    for shape in ("chain", "layered"):
        for n in sizes:
            times: dict[str, list[float]] = {"builder": [], "flow": []}
            for r in range(rounds):  # interleaved, alternating: load changes hit both alike
                for impl in ("builder", "flow")[::1 if r % 2 == 0 else -1]:
                    times[impl].append(run_child(impl, shape, n)["secs"] / n * 1e6)
            ratios = [f / b for f, b in zip(times["flow"], times["builder"])]
            print(f"{shape:<8} {n:>7} {spread(times['builder']):>22} "
                  f"{spread(times['flow']):>22} {spread(ratios):>18}", flush=True)


def edge_order_table(sizes: list[int]) -> None:
    """Parents-first vs child-first edge insertion, µs per edge including build()."""
    print(f"\n{'edges':>7} {'parents-first us':>17} {'child-first us':>15} {'ratio':>6}"
          "   target: ratio ~1 and flat in size")
    for n in sizes:
        forward, backward = edge_order(n)
        print(f"{n - 1:>7} {forward:>17.2f} {backward:>15.2f} {backward / forward:>6.2f}",
              flush=True)


def engine_table(shapes: list[str], sizes: list[int], rounds: int) -> None:
    """lion_nb against the bare asyncio executor: time, CPU time and memory per node."""
    print(f"\n{'shape':<8} {'nodes':>7} {'asyncio us/node':>22} {'lion us/node':>22} "
          f"{'ratio':>18} {'cpu ratio':>18} {'asyncio B/node':>15} {'lion B/node':>12}")
    for shape in shapes:
        per_node: dict[int, float] = {}
        for n in sizes:
            runs: dict[str, list[dict[str, float]]] = {"asyncio": [], "lion": []}
            for r in range(rounds if n < 100_000 else max(1, rounds // 2)):
                for impl in ("asyncio", "lion")[::1 if r % 2 == 0 else -1]:
                    runs[impl].append(run_child(impl, shape, n))
            us = {k: [x["secs"] / n * 1e6 for x in v] for k, v in runs.items()}
            ratio = [b / a for a, b in zip(us["asyncio"], us["lion"])]
            cpu = [b["cpu"] / a["cpu"] for a, b in zip(runs["asyncio"], runs["lion"])]
            mem = {k: statistics.median(x["bytes_per_node"] for x in v) for k, v in runs.items()}
            per_node[n] = statistics.median(us["lion"])
            print(f"{shape:<8} {n:>7} {spread(us['asyncio']):>22} {spread(us['lion']):>22} "
                  f"{spread(ratio):>18} {spread(cpu):>18} {mem['asyncio']:>15.0f} "
                  f"{mem['lion']:>12.0f}", flush=True)
        if len(per_node) > 1:
            lo, hi = min(per_node), max(per_node)
            print(f"{'':<8} lion per-node time at {hi:,} / at {lo:,}: "
                  f"{per_node[hi] / per_node[lo]:.2f}x (flat: ~1)", flush=True)


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--shapes", default="chain,fanout,layered")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, help="old name of --rounds")
    parser.add_argument("--one", nargs=3)
    parser.add_argument("--tables", default="engine,front-end,edge-order")
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], int(args.one[2]))
        return
    rounds = args.repeat or args.rounds
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"cells are median (min-max) over interleaved rounds in fresh processes")
    tables = args.tables.split(",")
    sizes = list(map(int, args.sizes.split(",")))
    if "engine" in tables:
        engine_table(args.shapes.split(","), sizes, rounds)
    if "front-end" in tables:
        front_end_table([n for n in sizes if n <= 10_000], max(3, rounds // 2 + 1))
    if "edge-order" in tables:
        edge_order_table([1000, 8000])
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
