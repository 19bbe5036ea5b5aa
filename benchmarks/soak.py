"""Soak: many instances and events through one process with retention on; RSS must stay flat.

    python benchmarks/soak.py [--quick] [--instances N] [--events M] [--retain K]
    python benchmarks/soak.py --quick --keep-all   # retention off: the growth it stops
    python benchmarks/soak.py --model              # bytes per kept object (the README's table)
    python benchmarks/soak.py --durable [--instances N] [--events M]   # SQLite, prune on

Runs N instances of a 20-node workflow (Start -> 18 parallel -> End, async
no-op handlers, history on) with ``ExecutorConfig(retain_finished=K)``, ``C`` at a
time, and publishes M events (with idempotency keys) through an in-memory
EventBroker with ``retention`` and ``history_limit`` set, one consumer acking
each. Prints the resident set size after warm-up and at intervals; the last
column is the growth since warm-up. The baseline, measured in the same run, is
the same DAG as plain asyncio tasks (time per instance only: it keeps nothing).

``--durable`` runs the same soak on durable storage (issue 14): the executor
commits to a ``SqliteStorage`` with ``prune_older_than`` on, the broker stores
events in a ``SqliteEventStore`` with ``retention`` on (compaction), and the
table adds the size of both database files (with their WAL). Both must stay
flat after warm-up: pruned records and compacted events leave free pages that
SQLite reuses. By default 6,000 instances and 60,000 events (a few minutes on
a shared disk); ``--instances 100000 --events 1000000`` for the full size.
The node store uses ``synchronous=NORMAL`` (the file sizes and memory do not
depend on it, the run time on a busy disk does); the event store is FULL, and
each instance's events are published with one ``publish_many`` and acked in
batches with ``send_many`` (one fsync each instead of one per event).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.engine import ExecutorConfig, WorkflowExecutor  # noqa: E402
from lion_nb.model import Node, WorkflowBuilder, WorkflowDefinition  # noqa: E402
from lion_nb.patterns import (  # noqa: E402
    Event, EventAck, EventBroker, EventBrokerConfig, InMemoryEventStore, SqliteEventStore,
)
from lion_nb.state import SqliteStorage, StateMachineManager  # noqa: E402

WIDTH = 18  # parallel nodes: 20 nodes with Start and End


def rss_mb() -> float:
    """Current resident set size (not the peak getrusage reports)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def workflow() -> WorkflowDefinition:
    b = WorkflowBuilder("soak")
    start, end = Node("Start", handler="noop"), Node("End", handler="noop")
    b.add_nodes(start, end)
    for k in range(WIDTH):
        mid = Node(f"N{k}", handler="noop")
        b.add_node(mid).connect(start, mid).connect(mid, end)
    return b.build()


async def noop(ctx: Any) -> dict[str, int]:
    return {"k": 1}


async def baseline(n: int) -> float:
    """The same DAG as plain asyncio tasks: µs per instance."""
    async def node() -> dict[str, int]:
        return {"k": 1}

    t0 = time.perf_counter()
    for _ in range(n):
        await node()
        await asyncio.gather(*(node() for _ in range(WIDTH)))
        await node()
    return (time.perf_counter() - t0) / n * 1e6


def file_mb(*paths: str) -> float:
    """Size of database files with their WAL (missing files count 0)."""
    return sum(os.path.getsize(p) for base in paths for p in (base, base + "-wal")
               if os.path.exists(p)) / 2**20


async def soak(n: int, events: int, retain: int | None, concurrency: int,
               report: int, durable: str | None = None) -> None:
    wf = workflow()
    storage = None
    dbs: tuple[str, ...] = ()
    if durable is not None:
        dbs = (os.path.join(durable, "nodes.db"), os.path.join(durable, "events.db"))
        storage = SqliteStorage(dbs[0], synchronous="NORMAL")
    ex = WorkflowExecutor(
        state_manager=None if storage is None else StateMachineManager(storage),
        config=ExecutorConfig(retain_finished=retain,
                              prune_older_than=None if storage is None else 1.0,
                              prune_every=1.0))
    ex.add_handler("noop", noop)
    broker = EventBroker(EventBrokerConfig(
        retention=None if retain is None else 1.0, max_pending=10_000,
        history_limit=10_000 if retain is None else 1_000, dedup_window=2.0))
    broker.with_event_store(InMemoryEventStore() if durable is None
                            else SqliteEventStore(dbs[1]))
    rx, ack_tx = await broker.subscribe("soak.event", "consumer", None)
    per_instance = max(1, events // n)
    published = [0]

    async def consume() -> None:
        while True:
            got = [await rx.recv()]
            while durable is not None and len(got) < 500:
                try:  # durable: acks of what is ready share one store write (one fsync)
                    got.append(rx.recv_nowait())
                except asyncio.QueueEmpty:
                    break
            await ack_tx.send_many(EventAck.success(d, "consumer") for d in got)

    async def one(i: int) -> None:
        await ex.run(wf)
        batch = [Event("soak.event", {"i": i, "j": j}, idempotency_key=f"{i}.{j}")
                 for j in range(min(per_instance, events - published[0]))]
        published[0] += len(batch)
        if durable is not None and batch:  # one store write per instance's events
            await broker.publish_many(batch)
            return
        for event in batch:
            await broker.publish(event)

    consumer = asyncio.ensure_future(consume())
    await ex.start()
    print(f"{'instances':>10} {'events':>9} {'RSS MB':>8} {'kept':>6} {'rows':>7} "
          f"{'us/inst':>8} {'since warm-up':>14}" + (f" {'DB MB':>7} {'DB since':>9}"
                                                     if dbs else ""))
    warm: float | None = None
    warm_db = 0.0
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    done = 0

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    for start in range(0, n, report):
        batch = range(start, min(n, start + report))
        await asyncio.gather(*(guarded(i) for i in batch))
        done += len(batch)
        gc.collect()
        rss = rss_mb()
        size = file_mb(*dbs)
        kept = len(ex.instances())
        if warm is None and (retain is None or kept >= retain or done == n):
            warm, warm_db = rss, size  # warmed up: the executor keeps all it will keep
        us = (time.perf_counter() - t0) / done * 1e6
        since = "warm-up" if warm is None else f"{rss - warm:+.1f}"
        since_db = "" if warm is None else f"{size - warm_db:+.1f}"
        print(f"{done:>10} {published[0]:>9} {rss:>8.1f} {kept:>6} "
              f"{len(ex.history.records):>7} {us:>8.1f} {since:>14}"
              + (f" {size:>7.1f} {since_db:>9}" if dbs else ""), flush=True)
    consumer.cancel()
    await ex.stop()
    await broker.close()
    if storage is not None:
        left = len(await storage.keys("instances/"))
        await storage.close()
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
              f"instance headers still stored at the end: {left}")
    print(f"baseline (plain asyncio, same DAG): {await baseline(min(n, 20_000)):.1f} us/instance")


def per_object(make: Callable[[int], Any], n: int) -> float:
    """Bytes per object kept: traced allocation growth for ``n`` objects over ``n``."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = make(n)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / n


async def model() -> None:
    """The README's memory model: bytes each kept object costs."""
    wf = workflow()
    rows = []
    per: dict[bool, float] = {}
    for history in (True, False):
        ex = WorkflowExecutor(config=ExecutorConfig(record_history=history))
        ex.add_handler("noop", noop)
        await ex.start()
        await ex.run(wf)  # warm-up: caches, pools
        gc.collect()
        tracemalloc.start()
        b0 = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            await ex.run(wf)
        gc.collect()
        per[history] = (tracemalloc.get_traced_memory()[0] - b0) / 300
        tracemalloc.stop()
        await ex.stop()
    rows = [("finished instance, 20 nodes, history on", per[True]),
            ("finished instance, 20 nodes, history off", per[False]),
            ("history row (per node attempt)", (per[True] - per[False]) / len(wf)),
            ("stored event, acked (until compacted)", await per_event(None, ack=True))]
    rows.append(("pending delivery (stored, unacked)", await per_event(None, ack=False)))
    rows.append(("idempotency key (within dedup_window)", await per_key()))
    print(f"{'object':<52} {'bytes':>8}")
    for name, per in rows:
        print(f"{name:<52} {per:>8.0f}")


async def per_event(retention: float | None, ack: bool, n: int = 5_000) -> float:
    broker = EventBroker(EventBrokerConfig(retention=retention, history_limit=0,
                                           max_pending=n + 1))
    broker.with_event_store(InMemoryEventStore())
    rx, ack_tx = await broker.subscribe("m.event", "consumer", None)
    await broker.publish(Event("m.event", {"n": -1}))
    await ack_tx.send(EventAck.success((await rx.recv()).id, "consumer"))
    gc.collect()
    tracemalloc.start()
    b0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        await broker.publish(Event("m.event", {"n": i}))
        if ack:
            await ack_tx.send(EventAck.success((await rx.recv()).id, "consumer"))
    await asyncio.sleep(0)
    gc.collect()
    per = (tracemalloc.get_traced_memory()[0] - b0) / n
    tracemalloc.stop()
    await broker.close()
    return per


async def per_key(n: int = 5_000) -> float:
    with_keys = await _publish_bytes(n, keyed=True)
    without = await _publish_bytes(n, keyed=False)
    return with_keys - without


async def _publish_bytes(n: int, keyed: bool) -> float:
    broker = EventBroker(EventBrokerConfig(history_limit=0, max_pending=n + 1,
                                           dedup_window=timedelta(hours=1).total_seconds()))
    broker.with_event_store(InMemoryEventStore())
    await broker.publish(Event("m.event", {"n": -1}))
    gc.collect()
    tracemalloc.start()
    b0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        await broker.publish(Event("m.event", {"n": i},
                                   idempotency_key=f"key-{i:08d}" if keyed else None))
    gc.collect()
    per = (tracemalloc.get_traced_memory()[0] - b0) / n
    tracemalloc.stop()
    await broker.close()
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k instances, 100k events")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--retain", type=int, default=1_000)
    parser.add_argument("--keep-all", action="store_true",
                        help="retention off (executor and broker): the growth it prevents")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--model", action="store_true", help="print bytes per kept object")
    parser.add_argument("--durable", action="store_true",
                        help="SQLite node and event stores, prune and compaction on")
    args = parser.parse_args()
    if args.model:
        asyncio.run(model())
        return
    n, events = ((10_000, 100_000) if args.quick else (args.instances, args.events))
    if not args.durable:
        asyncio.run(soak(n, events, None if args.keep_all else args.retain, args.concurrency,
                         report=max(1, n // 10)))
        return
    if "--instances" not in sys.argv and not args.quick:
        n, events = 6_000, 60_000
    with tempfile.TemporaryDirectory(prefix="lion-soak-") as tmp:
        asyncio.run(soak(n, events, None if args.keep_all else args.retain, args.concurrency,
                         report=max(1, n // 10), durable=tmp))


if __name__ == "__main__":
    main()
