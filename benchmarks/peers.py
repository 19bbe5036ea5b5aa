"""Peers: the same no-op DAGs on lion_nb, a bare asyncio executor, stdlib graphlib and Dask.

Shapes chain, fan-out/fan-in and layered (width 100, two parents per node), 1k and 10k
nodes; µs per node for build + run. Every implementation runs once per round in a fresh
subprocess, rounds interleave the implementations, and the table shows the median with
(min–max) over rounds, so a noisy neighbour shows up as spread instead of skewing one
column. Dask runs the raw task graph (a dict of tuples) with its synchronous and threaded
schedulers: the cheapest way Dask can run a graph, no collections on top.
Usage: python benchmarks/peers.py [--sizes 1000,10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

IMPLS = ("lion_nb", "asyncio", "graphlib", "dask-sync", "dask-threads")


def edges_of(shape: str, n: int) -> list[tuple[int, int]]:
    """Edge list (by node index) of a benchmark shape with n nodes."""
    if shape == "chain":
        return [(i, i + 1) for i in range(n - 1)]
    if shape == "fanout":
        return [(0, i) for i in range(1, n - 1)] + [(i, n - 1) for i in range(1, n - 1)]
    rng = random.Random(42)
    out = []
    for i in range(100, n):
        start = (i // 100 - 1) * 100
        out.extend((p, i) for p in rng.sample(range(start, start + 100), 2))
    return out


async def run_asyncio(n: int, edges: list[tuple[int, int]]) -> None:
    """One Task per node, released by dependency counting: the floor for an asyncio engine."""
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    done = asyncio.get_running_loop().create_future()
    left = [n]

    async def node(i: int) -> None:
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                asyncio.ensure_future(node(j))
        left[0] -= 1
        if left[0] == 0:
            done.set_result(None)

    for i in range(n):
        if indeg[i] == 0:
            asyncio.ensure_future(node(i))
    await done


async def run_lion(n: int, edges: list[tuple[int, int]]) -> None:
    """The public API a user writes: WorkflowBuilder + WorkflowExecutor.run, history on."""
    from lion_nb.engine import WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder

    executor = WorkflowExecutor()

    async def noop(ctx: object) -> None:
        return None

    executor.add_handler("noop", noop)
    await executor.start()
    nodes = [Node(f"n{i}", handler="noop") for i in range(n)]
    builder = WorkflowBuilder("peers").add_nodes(*nodes)
    for a, b in edges:
        builder.connect(nodes[a], nodes[b])
    result = await executor.run(builder.build())
    assert result.succeeded
    await executor.stop()


def run_graphlib(n: int, edges: list[tuple[int, int]]) -> None:
    """stdlib graphlib: prepare / get_ready / done, calling a no-op function per node."""
    from graphlib import TopologicalSorter

    preds: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        preds[b].append(a)
    sorter = TopologicalSorter(preds)
    sorter.prepare()
    while sorter.is_active():
        for i in sorter.get_ready():
            sorter.done(i)


def run_dask(n: int, edges: list[tuple[int, int]], scheduler: str) -> None:
    """A raw Dask graph: one task tuple per node, keys of its predecessors as arguments."""
    from dask.local import get_sync
    from dask.threaded import get as get_threaded

    preds: list[list[str]] = [[] for _ in range(n)]
    has_succ = [False] * n
    for a, b in edges:
        preds[b].append(f"n{a}")
        has_succ[a] = True

    def noop(*args: object) -> None:
        return None

    graph = {f"n{i}": (noop, *preds[i]) for i in range(n)}
    sinks = [f"n{i}" for i in range(n) if not has_succ[i]]
    get = get_sync if scheduler == "sync" else get_threaded
    get(graph, sinks)


def child(impl: str, shape: str, n: int) -> None:
    """Run one implementation once; print seconds as JSON."""
    edges = edges_of(shape, n)
    # import cost is not per-node cost: load each library before the clock starts
    if impl.startswith("dask"):
        import dask.local  # noqa: F401
        import dask.threaded  # noqa: F401
    elif impl == "lion_nb":
        import lion_nb.engine  # noqa: F401
        import lion_nb.model  # noqa: F401
    t0 = time.perf_counter()
    if impl == "lion_nb":
        asyncio.run(run_lion(n, edges))
    elif impl == "asyncio":
        asyncio.run(run_asyncio(n, edges))
    elif impl == "graphlib":
        run_graphlib(n, edges)
    else:
        run_dask(n, edges, impl.split("-")[1].replace("threads", "threaded"))
    print(json.dumps({"secs": time.perf_counter() - t0}))


def once(impl: str, shape: str, n: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", impl, shape, str(n)],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["secs"])


def main() -> None:
    """Print the table: median (min–max) µs per node over interleaved rounds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--shapes", default="chain,fanout,layered")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start; "
          f"median (min-max) of {args.rounds} interleaved rounds, µs per node, build + run")
    print(f"{'shape':<8} {'nodes':>6} " + " ".join(f"{i:>20}" for i in IMPLS))
    for shape in args.shapes.split(","):
        for n in map(int, args.sizes.split(",")):
            times: dict[str, list[float]] = {i: [] for i in IMPLS}
            for _ in range(args.rounds):
                for impl in IMPLS:
                    times[impl].append(once(impl, shape, n) / n * 1e6)
            cells = []
            for impl in IMPLS:
                t = times[impl]
                cells.append(f"{statistics.median(t):7.1f} ({min(t):.1f}-{max(t):.1f})")
            print(f"{shape:<8} {n:>6} " + " ".join(f"{c:>20}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
