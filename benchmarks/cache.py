"""Incremental re-runs: a fully cached re-run of a 10,000-node flow vs a plain run.

Same process, same prebuilt definition, interleaved rounds (every column is
measured once per round), median (min-max) over --repeat rounds, CPU time of
the process (``time.process_time``: on a shared machine wall time mostly
measures the neighbours); the load average is printed with the table.

- ``plain``: WorkflowExecutor.run with no cache (history on, as by default);
- ``first``: the first run with a memory cache (every node runs; keys computed,
  results fingerprinted and stored) -- its excess over ``plain`` ("upkeep") is
  what keeping a cache costs;
- ``cached``: a re-run where every node is reused (the handler never runs);
- ``key``: the cache key check alone, per node -- the node's key (code
  version, config and edge fingerprints, predecessors' result fingerprints)
  built and compared with its entry -- timed outside any run;
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
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from engine_overhead import edges_of, plain_asyncio  # noqa: E402  (sibling script)

from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor, code_version  # noqa: E402
from lion_nb.model import Node, WorkflowBuilder  # noqa: E402

COLUMNS = ("asyncio", "plain", "first", "cached", "key", "upkeep")


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


def key_check(cache: Cache, definition, handler) -> float:
    """CPU seconds to decide reuse for every node (keys built and compared), outside a run."""
    # The engine-internal session a run drives, timed alone: the table states what the
    # key check costs apart from what settling a node costs.
    from lion_nb.engine._cache_session import RUN, CacheSession
    from lion_nb.state import NodeState
    from lion_nb.state._machine import CODE

    n = len(definition.nodes)
    codes = bytearray([CODE[NodeState.SUCCEEDED]]) * n  # the shapes are in topological order
    session = CacheSession(definition, [handler] * n, {}, cache, codes, time.time)
    session.decide(0)  # versions the handler: once per run, stated on its own line
    decide = session.decide
    gc.collect()
    t0 = time.process_time()
    for i in range(1, n):
        if decide(i) is RUN:
            raise AssertionError(f"node {i} would run: {session.verdicts[i]}")
    return (time.process_time() - t0) * n / (n - 1)


async def measure(shape: str, n: int, repeat: int, work_us: float) -> dict[str, list[float]]:
    """Each column's CPU seconds per round, and the per-round cached/plain ratio."""
    definition = build(n, edges_of(shape, n))
    handler = make_handler(work_us)
    rounds: dict[str, list[float]] = {}

    def keep(name: str, secs: float) -> None:
        rounds.setdefault(name, []).append(secs)

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
        keep("key", key_check(cache, definition, handler))
        await cached.stop()
        keep("ratio", rounds["cached"][-1] / rounds["plain"][-1])
        keep("upkeep", rounds["first"][-1] - rounds["plain"][-1])
    await plain.stop()
    return rounds


def cell(values: list[float], scale: float, width: int = 20) -> str:
    """``median (min–max)`` of ``values`` times ``scale``, right-aligned."""
    v = [x * scale for x in values]
    d = 2 if max(map(abs, v)) < 100 else 0
    text = f"{statistics.median(v):.{d}f} ({min(v):.{d}f}–{max(v):.{d}f})"
    return f"{text:>{width}}"


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
    print(f"n={args.n}, handler work {args.work_us:g} µs; {args.repeat} interleaved rounds, "
          f"median (min–max), µs of CPU per node; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"code version of the handler: {version_us:.1f} µs, once per distinct handler "
          f"per run; key: the cache key built and compared with the node's entry")
    print(f"{'shape':<8}" + "".join(f"{c:>20}" for c in COLUMNS) + f"{'cached/plain':>20}")
    for shape in args.shapes.split(","):
        r = asyncio.run(measure(shape, args.n, args.repeat, args.work_us))
        scale = 1e6 / args.n
        cols = "".join(cell(r[c], scale) if c in r else f"{'-':>20}" for c in COLUMNS)
        print(f"{shape:<8}{cols}{cell(r['ratio'], 1.0)}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
