"""Scheduler through its public API: submit -> a worker coroutine runs the job -> result.

Each task is a no-op coroutine submitted with ``submit_nowait`` (priority, and for
EDF a deadline) in batches of 1,000, so queues have real depth; a task counts when
its result future is done, so the figure includes the worker's wake-up, the
dispatch decision and the result hand-back. The baseline is what one would write
by hand: the same number of worker coroutines on an ``asyncio.Queue`` (FIFO) or
an ``asyncio.PriorityQueue`` (heapq inside; by priority for PRIORITY and MLFQ, by
deadline for EDF), each task with a result future too.
Rounds interleave the two (alternating which goes first); cells are the median
(min-max) over rounds, with the machine's load average stated.
Usage: python benchmarks/scheduler.py [--n 50000] [--rounds 5] [--workers 64]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import time

from lion_nb.engine import SchedulerConfig, SchedulingPolicy, WorkflowScheduler

BATCH = 1000


def plan(policy: SchedulingPolicy) -> tuple[list[int], list[float | None]]:
    """Per task of a batch: a priority, and a deadline (seconds from now) under EDF."""
    rng = random.Random(1)
    prios = [rng.randrange(4) for _ in range(BATCH)]
    far = [3600 + rng.random() * 100 if policy is SchedulingPolicy.EDF else None
           for _ in range(BATCH)]
    return prios, far


async def noop() -> None:
    return None


async def bare(policy: SchedulingPolicy, n: int, workers: int) -> float:
    """Hand-written workers on an asyncio queue; returns seconds for n tasks."""
    loop = asyncio.get_running_loop()
    fifo = policy is SchedulingPolicy.FIFO
    queue: asyncio.Queue = asyncio.Queue() if fifo else asyncio.PriorityQueue()
    prios, deadlines = plan(policy)
    seq = itertools.count()

    async def worker() -> None:
        while True:
            entry = await queue.get()
            fn, fut = entry[-2], entry[-1]
            fut.set_result(await fn())

    tasks = [loop.create_task(worker()) for _ in range(workers)]
    t0 = time.perf_counter()
    for _ in range(n // BATCH):
        futs = []
        for p, d in zip(prios, deadlines):
            fut = loop.create_future()
            if fifo:
                queue.put_nowait((noop, fut))
            else:
                key = -p if d is None else loop.time() + d
                queue.put_nowait((key, next(seq), noop, fut))
            futs.append(fut)
        await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


async def ours(policy: SchedulingPolicy, n: int, workers: int) -> float:
    """WorkflowScheduler.submit_nowait and its workers; returns seconds for n tasks."""
    sched = WorkflowScheduler(SchedulerConfig(policy=policy, max_concurrent_tasks=workers))
    prios, deadlines = plan(policy)
    submit = sched.submit_nowait
    t0 = time.perf_counter()
    for _ in range(n // BATCH):
        futs = [submit(noop, priority=p, deadline=d) for p, d in zip(prios, deadlines)]
        await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    await sched.close()
    return elapsed


def spread(values: list[float], fmt: str = ".2f") -> str:
    """``median (min-max)``."""
    return (f"{statistics.median(values):{fmt}} "
            f"({min(values):{fmt}}-{max(values):{fmt}})")


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.n:,} no-op tasks per cell, {args.workers} workers, median (min-max) of "
          f"{args.rounds} interleaved rounds")
    print(f"{'policy':<9} {'bare us/task':>20} {'lion_nb us/task':>20} {'ratio':>18} {'target':>7}")
    for policy in SchedulingPolicy:
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for r in range(args.rounds):
            for impl in ("bare", "ours")[::1 if r % 2 == 0 else -1]:
                fn = bare if impl == "bare" else ours
                secs = asyncio.run(fn(policy, args.n, args.workers))
                times[impl].append(secs / args.n * 1e6)
        ratios = [o / b for o, b in zip(times["ours"], times["bare"])]
        target = {"mlfq": "5x"}.get(policy.value, "3x")
        print(f"{policy.value:<9} {spread(times['bare']):>20} {spread(times['ours']):>20} "
              f"{spread(ratios):>18} {target:>7}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
