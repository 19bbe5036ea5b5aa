"""Engine overhead: µs per no-op node (build + run) and peak memory, vs plain asyncio.

Shapes: chain, fan-out/fan-in (1 -> N -> 1), layered random DAG (width 100, two
parents per node from the previous layer, fixed seed); N = 1k, 10k, 100k. The
baseline is a minimal plain-asyncio executor (one Task per node, dependency
counting) measured in the same run. Each measurement runs in a fresh
subprocess so peak RSS belongs to that run alone; the best of --repeat runs is
reported. Usage: python benchmarks/engine_overhead.py [--sizes 1000,10000] [--repeat 3]

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
import gc
import json
import random
import resource
import subprocess
import sys
import time


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


async def builder_run(n: int, edges: list[tuple[int, int]]) -> float:
    """WorkflowBuilder + WorkflowExecutor on a graph shaped like a Flow's (handler per node)."""
    from lion_nb.engine import WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder

    async def noop(ctx: object) -> None:
        return None

    executor = WorkflowExecutor()
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
    await flow.executor()  # the executor start is not what this row measures
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


def one(impl: str, shape: str, n: int) -> None:
    """Child process: measure one run and print JSON."""
    edges = edges_of(shape, n)
    gc.collect()
    if impl == "asyncio":
        secs = asyncio.run(plain_asyncio(n, edges))
    elif impl == "builder":
        secs = asyncio.run(builder_run(n, edges))
    elif impl == "flow":
        secs = asyncio.run(flow_run(n, edges))
    else:
        secs = asyncio.run(lion(n, edges, history=impl == "lion"))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"secs": secs, "peak_mb": peak_kb / 1024}))


def median_of(impl: str, shape: str, n: int, repeat: int) -> float:
    """Median time (s) over ``repeat`` fresh processes."""
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--one", impl, shape, str(n)],
                             check=True, capture_output=True, text=True).stdout
        times.append(json.loads(out.strip().splitlines()[-1])["secs"])
    return sorted(times)[len(times) // 2]


def front_end_table(sizes: list[int], repeat: int) -> None:
    """Flow declare + run vs WorkflowBuilder + WorkflowExecutor, interleaved."""
    print(f"\n{'shape':<8} {'steps':>7} {'builder us/node':>16} {'Flow us/node':>13} "
          f"{'ratio':>6}   target <= 1.20 at 10k")
    for shape in ("chain", "layered"):
        for n in sizes:
            builder = flow = 0.0
            times: dict[str, list[float]] = {"builder": [], "flow": []}
            for _ in range(repeat):  # interleaved: load changes hit both alike
                for impl in ("builder", "flow"):
                    times[impl].append(median_of(impl, shape, n, 1))
            builder, flow = (sorted(times[k])[repeat // 2] for k in ("builder", "flow"))
            print(f"{shape:<8} {n:>7} {builder / n * 1e6:>16.2f} {flow / n * 1e6:>13.2f} "
                  f"{flow / builder:>6.2f}", flush=True)


def edge_order_table(sizes: list[int]) -> None:
    """Parents-first vs child-first edge insertion, µs per edge including build()."""
    print(f"\n{'edges':>7} {'parents-first us':>17} {'child-first us':>15} {'ratio':>6}"
          "   target: ratio ~1 and flat in size")
    for n in sizes:
        forward, backward = edge_order(n)
        print(f"{n - 1:>7} {forward:>17.2f} {backward:>15.2f} {backward / forward:>6.2f}",
              flush=True)


def measure(impl: str, shape: str, n: int, repeat: int) -> tuple[float, float]:
    """Best time (s) and its peak RSS (MB) over ``repeat`` fresh processes."""
    best = None
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--one", impl, shape, str(n)],
                             check=True, capture_output=True, text=True).stdout
        rec = json.loads(out.strip().splitlines()[-1])
        if best is None or rec["secs"] < best[0]:
            best = (rec["secs"], rec["peak_mb"])
    assert best is not None
    return best


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--shapes", default="chain,fanout,layered")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=3)
    parser.add_argument("--tables", default="engine,front-end,edge-order")
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], int(args.one[2]))
        return
    tables = args.tables.split(",")
    sizes = [n for n in map(int, args.sizes.split(",")) if n <= 10_000]
    if "front-end" in tables:
        front_end_table(sizes, max(args.repeat, 3))
    if "edge-order" in tables:
        edge_order_table([1000, 8000])
    if "engine" not in tables:
        return
    print(f"\n{'shape':<8} {'nodes':>7} {'asyncio us/node':>16} {'lion us/node':>13} "
          f"{'ratio':>6} {'asyncio MB':>11} {'lion MB':>8}")
    for shape in args.shapes.split(","):
        for n in map(int, args.sizes.split(",")):
            repeat = 1 if n >= 100_000 else args.repeat
            base, base_mb = measure("asyncio", shape, n, repeat)
            ours, ours_mb = measure("lion", shape, n, repeat)
            print(f"{shape:<8} {n:>7} {base / n * 1e6:>16.2f} {ours / n * 1e6:>13.2f} "
                  f"{ours / base:>6.2f} {base_mb:>11.1f} {ours_mb:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
