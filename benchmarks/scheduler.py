"""Scheduler decisions: submit + dispatch per policy, vs a bare heapq push/pop loop.

One decision = a task enters the queue (``enqueue``) and is later given a slot
(``_take`` + ``_release``), in batches of 1,000 so queues have real depth.
The baseline pushes and pops (priority, seq, object) tuples with heapq in the
same run. Usage: python benchmarks/scheduler.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import time

from lion_nb.engine.scheduler import ScheduledTask
from lion_nb.engine.scheduler import SchedulerConfig, SchedulingPolicy, WorkflowScheduler

BATCH = 1000


def bare_heapq(n: int) -> float:
    """Push and pop n (priority, seq, obj) entries in batches."""
    rng = random.Random(1)
    prios = [rng.randrange(4) for _ in range(BATCH)]
    obj = object()
    t0 = time.perf_counter()
    heap: list = []
    seq = 0
    for _ in range(n // BATCH):
        for p in prios:
            seq += 1
            heapq.heappush(heap, (-p, seq, obj))
        while heap:
            heapq.heappop(heap)
    return time.perf_counter() - t0


async def decisions(policy: SchedulingPolicy, n: int) -> float:
    """Enqueue and dispatch n tasks through the scheduler's own bookkeeping."""
    sched = WorkflowScheduler(SchedulerConfig(policy=policy, max_concurrent_tasks=BATCH * 2,
                                              max_queued_tasks=BATCH * 2))
    rng = random.Random(1)
    runner = None
    far = time.monotonic() + 3600  # deadlines in the future: no misses in this benchmark
    tasks = [ScheduledTask(runner, None, priority=rng.randrange(4),  # type: ignore[arg-type]
                           deadline=far + rng.random() * 100 if policy is SchedulingPolicy.EDF
                           else None, name="t") for _ in range(BATCH)]
    take, release, enqueue = sched._take, sched._release, sched.enqueue
    t0 = time.perf_counter()
    for _ in range(n // BATCH):
        for task in tasks:
            task.slice_start = 0.0
            enqueue(task)
        while (task := take()) is not None:
            release(task)
    elapsed = time.perf_counter() - t0
    await sched.close()
    return elapsed


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = min(bare_heapq(args.n) for _ in range(args.repeat))
    print(f"{'policy':<9} {'us/decision':>12} {'heapq us':>9} {'ratio':>6} {'target':>7}")
    for policy in SchedulingPolicy:
        ours = min(asyncio.run(decisions(policy, args.n)) for _ in range(args.repeat))
        target = {"mlfq": "5x", "fifo": "-"}.get(policy.value, "3x")
        print(f"{policy.value:<9} {ours / args.n * 1e6:>12.3f} {base / args.n * 1e6:>9.3f} "
              f"{ours / base:>6.2f} {target:>7}", flush=True)


if __name__ == "__main__":
    main()
