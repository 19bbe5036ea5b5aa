"""Incremental re-runs: a fully cached re-run of a 10,000-node flow vs a plain run.

Same process, same prebuilt definition, interleaved rounds, best of --repeat,
CPU time of the process (``time.process_time``: on a shared machine wall time
mostly measures the neighbours):

- ``plain``: WorkflowExecutor.run with no cache (history on, as by default);
- ``first``: the first run with a memory cache (every node runs; keys computed,
  results fingerprinted and stored) -- its excess over ``plain`` is the cost of
  keeping a cache;
- ``cached``: a re-run where every node is reused (the handler never runs);
- ``asyncio``: the bare one-Task-per-node baseline of engine_overhead.py.

Handlers are no-ops (``None`` results), so the cached re-run is compared with
the engine's own overhead; ``--work-us`` gives each handler that much CPU work
to show a re-run of real work. Target: cached <= 0.5x plain with no-op handlers.
Usage: python benchmarks/cache.py [--n 10000] [--shapes chain,fanout,layered]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from engine_overhead import edges_of, plain_asyncio  # noqa: E402  (sibling script)

from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor, code_version  # noqa: E402
from lion_nb.model import Node, WorkflowBuilder  # noqa: E402


def build(n: int, edges: list[tuple[int, int]]):
    nodes = [Node(f"n{i}", handler="work") for i in range(n)]
    builder = WorkflowBuilder("bench").add_nodes(*nodes)
    for a, b in edges:
        builder.connect(nodes[a], nodes[b])
    return builder.build()


def make_handler(work_us: float):
    loops = int(work_us * 12)  # ~12 additions per µs on these machines

    def work(ctx):
        total = 0
        for k in range(loops):
            total += k
        return None
    if work_us:
        return work

    async def noop(ctx):
        return None
    return noop


async def timed(executor: WorkflowExecutor, definition, reused: int = 0) -> float:
    gc.collect()
    t0 = time.process_time()
    result = await executor.run(definition)
    elapsed = time.process_time() - t0
    assert result.succeeded, result.error
    assert len(result.reused) == reused, (len(result.reused), reused)
    executor.history.clear()
    executor.forget(result.instance_id)
    return elapsed


async def measure(shape: str, n: int, repeat: int, work_us: float) -> dict[str, float]:
    definition = build(n, edges_of(shape, n))
    handler = make_handler(work_us)
    best: dict[str, float] = {}

    def keep(name: str, secs: float) -> None:
        best[name] = min(best.get(name, secs), secs)

    plain = WorkflowExecutor(config=ExecutorConfig())
    plain.add_handler("work", handler)
    await plain.start()
    for _ in range(repeat):
        if not work_us:
            t0 = time.process_time()
            await plain_asyncio(n, edges_of(shape, n))
            keep("asyncio", time.process_time() - t0)
        keep("plain", await timed(plain, definition))
        cache = Cache()
        cached = WorkflowExecutor(config=ExecutorConfig(cache=cache))
        cached.add_handler("work", handler)
        await cached.start()
        keep("first", await timed(cached, definition))
        keep("cached", await timed(cached, definition, reused=n))
        await cached.stop()
    await plain.stop()
    return best


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--shapes", default="chain,fanout,layered")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=0.0)
    args = parser.parse_args()
    handler = make_handler(args.work_us)
    t0 = time.process_time()
    for _ in range(100):
        code_version(handler)
    version_us = (time.process_time() - t0) / 100 * 1e6
    print(f"n={args.n}, handler work {args.work_us:g} µs; code version of the handler: "
          f"{version_us:.1f} µs (once per distinct handler per run)")
    print(f"{'shape':<8} {'asyncio':>8} {'plain':>8} {'first':>8} {'cached':>8} "
          f"{'key cost':>9} {'cached/plain':>13}   (µs per node)")
    for shape in args.shapes.split(","):
        b = asyncio.run(measure(shape, args.n, args.repeat, args.work_us))
        per = {k: v / args.n * 1e6 for k, v in b.items()}
        base = f"{per['asyncio']:>8.2f}" if "asyncio" in per else f"{'-':>8}"
        print(f"{shape:<8} {base} {per['plain']:>8.2f} {per['first']:>8.2f} "
              f"{per['cached']:>8.2f} {per['first'] - per['plain']:>9.2f} "
              f"{b['cached'] / b['plain']:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
