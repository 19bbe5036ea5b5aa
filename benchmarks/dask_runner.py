"""DaskRunner versus the local thread runner, and versus raw ``client.submit``.

1. Speed-up: a CPU-bound DAG (default 200 nodes of ~50 ms pure-Python work,
   in layers of 20, each node depending on two of the layer before) on the
   local thread runner (one process: the GIL serialises the work) and on
   DaskRunner with a LocalCluster of 2 worker processes. Target: >= 1.7x on
   2 cores.
2. Overhead: the same shape with no-op nodes, run by DaskRunner (the engine
   submits a node when it is ready and fetches its result) and submitted raw
   (every task at once, dependencies as futures, Dask does the joining).
   Target: DaskRunner at most 1.5x the raw per-node time. A chain is printed
   too: there every node costs DaskRunner a client round trip that the raw
   graph does not pay.

Run: ``python benchmarks/dask_runner.py [--nodes 200 --ms 50 --noop 400]``.
Prints a table; no assertions (numbers vary by machine).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from distributed import Client, LocalCluster, wait

from lion_nb.distributed import DaskRunner
from lion_nb.engine import ExecutorConfig, SchedulerConfig, WorkflowExecutor, WorkflowScheduler
from lion_nb.model import Node, WorkflowBuilder

WIDTH = 20


def spin(ctx: Any) -> int:
    """A fixed amount of pure-Python work (``ctx.config['loops']`` iterations)."""
    acc = 0
    for i in range(ctx.config["loops"]):
        acc += i * i % 7
    return acc


def spin_loops(loops: int) -> int:
    """``spin`` without a context, for the process-pool yardstick."""
    acc = 0
    for i in range(loops):
        acc += i * i % 7
    return acc


async def run_pool(pool: ProcessPoolExecutor, n: int, loops: int) -> float:
    """Seconds for ``n`` spins on a bare 2-process pool: what the machine allows now."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    await asyncio.gather(*[loop.run_in_executor(pool, spin_loops, loops) for _ in range(n)])
    return time.perf_counter() - start


def noop(ctx: Any) -> None:
    """Nothing: what is left is the runner's own cost."""
    return None


def raw_noop(*deps: Any) -> None:
    """The raw-Dask twin of ``noop``."""
    return None


def calibrate(ms: float) -> int:
    """Iterations of ``spin`` that take about ``ms`` milliseconds here."""
    loops = 100_000
    ctx = type("C", (), {"config": {"loops": loops}})()
    start = time.perf_counter()
    spin(ctx)
    per = (time.perf_counter() - start) / loops
    return max(1, int(ms / 1000 / per))


def edges(n: int, width: int) -> list[tuple[int, int]]:
    """Layers of ``width``; node i depends on two nodes of the previous layer."""
    out = []
    for i in range(width, n):
        layer_start = (i // width - 1) * width
        out.append((layer_start + i % width, i))
        out.append((layer_start + (i + 1) % width, i))
    return out


def chain(n: int) -> list[tuple[int, int]]:
    """A straight line: nothing can run in parallel."""
    return [(i - 1, i) for i in range(1, n)]


def workflow(n: int, links: list[tuple[int, int]], handler: str, config: dict[str, Any]):
    nodes = [Node(f"n{i}", handler=handler, config=config) for i in range(n)]
    b = WorkflowBuilder(f"bench-{handler}-{n}").add_nodes(*nodes)
    for s, t in links:
        b.connect(nodes[s], nodes[t])
    return b.build()


async def run_engine(definition: Any, runner: Any) -> float:
    """Seconds to run ``definition`` once on a fresh executor (history off)."""
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=256))
    ex = WorkflowExecutor(scheduler, config=ExecutorConfig(runner=runner, max_threads=2,
                                                           record_history=False))
    ex.add_handler("spin", spin)
    ex.add_handler("noop", noop)
    async with ex:
        start = time.perf_counter()
        result = await ex.run(definition)
        elapsed = time.perf_counter() - start
    assert result.succeeded, result.errors
    return elapsed


async def run_raw(client: Client, n: int, links: list[tuple[int, int]]) -> float:
    """Seconds to submit the same graph raw and wait for every task."""
    deps: list[list[int]] = [[] for _ in range(n)]
    for s, t in links:
        deps[t].append(s)
    start = time.perf_counter()
    futures: list[Any] = []
    for i in range(n):  # links only point forward, so index order is topological
        futures.append(client.submit(raw_noop, *[futures[j] for j in deps[i]], pure=False))
    await wait(futures)
    elapsed = time.perf_counter() - start
    await client.cancel(futures)
    return elapsed


def best(values: list[float]) -> float:
    return min(values)


async def main(args: argparse.Namespace) -> None:
    loops = calibrate(args.ms)
    cpu = workflow(args.nodes, edges(args.nodes, WIDTH), "spin", {"loops": loops})
    rows: list[tuple[str, str, str]] = []

    async with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                            asynchronous=True, dashboard_address=":0") as cluster, \
            Client(cluster, asynchronous=True) as client:
        runner = DaskRunner(client)
        await runner.warm_up()
        await run_engine(workflow(20, edges(20, WIDTH), "noop", {}), runner)

        # Interleaved, best of each: other processes on a small machine add noise. The
        # bare process pool is the yardstick: the parallelism the machine gives right now.
        local_runs, dask_runs, pool_runs = [], [], []
        ctx = multiprocessing.get_context("spawn")  # no fork of a process running threads
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            await run_pool(pool, 2, 1)
            for _ in range(args.repeat):
                local_runs.append(await run_engine(cpu, None))
                pool_runs.append(await run_pool(pool, args.nodes, loops))
                dask_runs.append(await run_engine(cpu, runner))
        local_s, dask_s, pool_s = best(local_runs), best(dask_runs), best(pool_runs)
        rows.append((f"CPU DAG {args.nodes} x {args.ms:g} ms, local threads",
                     f"{local_s:.2f} s", ""))
        rows.append(("same work, bare 2-process pool (the machine's ceiling)", f"{pool_s:.2f} s",
                     f"speed-up {local_s / pool_s:.2f}x"))
        rows.append(("same DAG on DaskRunner, 2 worker processes", f"{dask_s:.2f} s",
                     f"speed-up {local_s / dask_s:.2f}x (target >= 1.7x), "
                     f"{pool_s / dask_s:.0%} of the ceiling"))

        for label, links in (("layered", edges(args.noop, WIDTH)), ("chain", chain(args.chain))):
            n = args.noop if label == "layered" else args.chain
            wf = workflow(n, links, "noop", {})
            runner_s = best([await run_engine(wf, runner) for _ in range(args.repeat)])
            raw_s = best([await run_raw(client, n, links) for _ in range(args.repeat)])
            rows.append((f"no-op {label} {n} nodes, DaskRunner",
                         f"{runner_s / n * 1e6:,.0f} µs/node", ""))
            target = " (target <= 1.5x)" if label == "layered" else ""
            rows.append((f"no-op {label} {n} nodes, raw client.submit",
                         f"{raw_s / n * 1e6:,.0f} µs/node",
                         f"DaskRunner / raw {runner_s / raw_s:.2f}x{target}"))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'time':>16}  note")
    for case, value, note in rows:
        print(f"{case:<{width}}  {value:>16}  {note}")


if __name__ == "__main__":  # worker processes are spawned: they must not run this
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200, help="CPU DAG size")
    parser.add_argument("--ms", type=float, default=50, help="work per CPU node (ms)")
    parser.add_argument("--noop", type=int, default=400, help="no-op layered DAG size")
    parser.add_argument("--chain", type=int, default=100, help="no-op chain length")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    asyncio.run(main(parser.parse_args()))
