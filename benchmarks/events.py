"""Event broker overhead against the bare primitives it is built on, measured in one run.

    python benchmarks/events.py [--events N] [--sqlite-events M]

1. In memory: publish -> deliver -> ack per event through EventBroker, against
   a bare asyncio.Queue hand-off with an ack queue (target: at most 4x).
2. SQLite: the same loop with SqliteEventStore, against bare sqlite3 doing the
   same durable work (insert the event, then mark it acked; one transaction
   each, WAL, synchronous=FULL) (target: at most 2x). Batched, against bare
   executemany in one transaction per phase: the batched rows publish with
   publish_many (one transaction) and ack with AckSender.send_many in chunks
   of 500 (one transaction per chunk).

Prints median (min-max) microseconds per event over interleaved rounds, the
ratio of the medians, the same ratio in CPU time (process_time: on a shared,
loaded machine the wall clock mostly measures the scheduler, and a longer run
is preempted more often than a short one) and the machine load; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.patterns import (  # noqa: E402
    Event, EventAck, EventBroker, EventBrokerConfig, InMemoryEventStore, SqliteEventStore,
)


Timing = tuple[float, float]     # (wall seconds, CPU seconds) per event


async def bare_queue(n: int) -> Timing:
    """Publisher puts, consumer gets and acks on a second queue, publisher collects acks."""
    events: asyncio.Queue = asyncio.Queue()
    acks: asyncio.Queue = asyncio.Queue()

    async def consumer() -> None:
        for _ in range(n):
            item = await events.get()
            acks.put_nowait(item[0])

    task = asyncio.ensure_future(consumer())
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        events.put_nowait((i, {"n": i}))
    for _ in range(n):
        await acks.get()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await task
    return elapsed / n, cpu / n


async def broker_round_trip(n: int, store_factory, pipelined: bool = True) -> Timing:
    """publish -> recv -> ack through EventBroker, the consumer running concurrently."""
    broker = EventBroker(EventBrokerConfig(max_pending=n + 1))
    broker.with_event_store(store_factory())
    rx, ack_tx = await broker.subscribe("bench.event", "consumer", None)
    done = asyncio.get_running_loop().create_future()

    async def consumer() -> None:
        for _ in range(n):
            delivery = await rx.recv()
            await ack_tx.send(EventAck.success(delivery.id, "consumer"))
        done.set_result(None)

    task = asyncio.ensure_future(consumer())
    t0, c0 = time.perf_counter(), time.process_time()
    if pipelined:
        for i in range(n):
            await broker.publish(Event("bench.event", {"n": i}))
    else:
        await broker.publish_many([Event("bench.event", {"n": i}) for i in range(n)])
    await done
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await task
    await broker.close()
    return elapsed / n, cpu / n


async def sqlite_batched(n: int, path: str, chunk: int = 500) -> Timing:
    """publish_many in one transaction, then acks in chunks with send_many (one each)."""
    broker = EventBroker(EventBrokerConfig(max_pending=n + 1, history_limit=0))
    broker.with_event_store(SqliteEventStore(path))
    rx, ack_tx = await broker.subscribe("bench.event", "consumer", None)
    t0, c0 = time.perf_counter(), time.process_time()
    await broker.publish_many([Event("bench.event", {"n": i}) for i in range(n)])
    for start in range(0, n, chunk):
        got = [await rx.recv() for _ in range(min(chunk, n - start))]
        await ack_tx.send_many(EventAck.success(d, "consumer") for d in got)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await broker.close()
    return elapsed / n, cpu / n


def _bare_conn(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE ev (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, payload TEXT, "
                 "acked INTEGER DEFAULT 0)")
    return conn


def bare_sqlite(n: int, path: str, batched: bool) -> Timing:
    """The same durable work by hand: insert each event, then mark it acked."""
    import json
    conn = _bare_conn(path)
    rows = [(f"id{i}", json.dumps({"n": i})) for i in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    if batched:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO ev (id, payload) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.executemany("UPDATE ev SET acked = 1 WHERE id = ?", [(r[0],) for r in rows])
        conn.execute("COMMIT")
    else:
        for row in rows:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO ev (id, payload) VALUES (?, ?)", row)
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            conn.execute("UPDATE ev SET acked = 1 WHERE id = ?", (row[0],))
            conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.close()
    return elapsed / n, cpu / n


def fmt(values: list[float]) -> str:
    """``median (min-max)`` in µs."""
    return (f"{statistics.median(values) * 1e6:.2f} "
            f"({min(values) * 1e6:.1f}-{max(values) * 1e6:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--sqlite-events", type=int, default=150)
    parser.add_argument("--batched-events", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=15,
                        help="interleaved rounds: baseline and lion_nb alternate")
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    run = asyncio.run
    n, m, b = args.events, args.sqlite_events, args.batched_events
    names = [("in memory: publish->deliver->ack", "bare asyncio.Queue + ack queue", 4.0),
             ("sqlite: one event at a time", "bare sqlite3: insert+commit, update+commit", 2.0),
             ("sqlite: publish_many + send_many(500)", "bare sqlite3: executemany, 2 transactions",
              None)]
    ours: list[list[Timing]] = [[] for _ in names]
    bare: list[list[Timing]] = [[] for _ in names]
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def db() -> str:
            return os.path.join(tmp, f"b{next(counter)}.db")

        # Alternate baseline and lion_nb within every round: bursts of other work on a
        # shared machine then hit both sides alike, and the median discards the worst.
        for _ in range(args.rounds):
            bare[0].append(run(bare_queue(n)))
            ours[0].append(run(broker_round_trip(n, InMemoryEventStore)))
            bare[1].append(bare_sqlite(m, db(), batched=False))
            ours[1].append(run(broker_round_trip(m, lambda: SqliteEventStore(db()))))
            bare[2].append(bare_sqlite(b, db(), batched=True))
            ours[2].append(run(sqlite_batched(b, db())))
            loads.append(os.getloadavg()[0])
    print(f"{args.rounds} interleaved rounds, median (min-max) µs/event; load average "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}")
    print(f"{'lion_nb':40} {'us/event':>22}   {'bare baseline':42} {'us/event':>20} "
          f"{'ratio':>6} {'CPU':>6} {'target':>7}")
    for (name, base_name, target), o, bb in zip(names, ours, bare):
        wall_o, wall_b = [t[0] for t in o], [t[0] for t in bb]
        ratio = statistics.median(wall_o) / statistics.median(wall_b)
        cpu = statistics.median(t[1] for t in o) / statistics.median(t[1] for t in bb)
        goal = f"<= {target:g}x" if target else "-"
        print(f"{name:40} {fmt(wall_o):>22}   {base_name:42} {fmt(wall_b):>20} "
              f"{ratio:5.2f}x {cpu:5.2f}x {goal:>7}")


if __name__ == "__main__":
    main()
