"""Durable node commits on PostgreSQL next to bare psycopg writes, and worker throughput.

    python benchmarks/postgres.py [--n 2000] [--dsn postgresql://...] [--workers 1,2,4]

Without ``--dsn`` a throwaway server is started from Debian's binaries
(tests/pg_server.py) with ``fsync=on``: both sides pay a real WAL flush.

* Storage level: a fenced node commit (``put_many`` under the instance lease, one
  or two records) against a bare psycopg ``INSERT ... ON CONFLICT`` + ``COMMIT`` of
  the same bytes on its own connection (same server, same ``synchronous_commit``),
  alternated in rounds, median round reported. One committer at a time (a single
  chain) and 64 concurrent committers (concurrent nodes: their commits share
  transactions).
* Engine: a WorkflowExecutor run of ``--engine-n`` no-op nodes in 100 chains and in
  one chain; per-commit cost = (PostgreSQL run - in-memory run) / nodes, next to the
  same number of bare insert + commit of the run's own node records.
* Workers: ``--workers`` processes each running 8-node instances against the same
  database for ``--seconds``; instances/s in all.

Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

import psycopg  # noqa: E402

from checkpoint import CODEC, chains_workflow, commit, engine_seconds  # noqa: E402
from lion_nb.state import PostgresStorage  # noqa: E402

LEASE = ("leases/run-1", "bench-owner")


class BarePostgres:
    """psycopg 3, one ``INSERT ... ON CONFLICT`` per record and ``COMMIT`` per commit."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bare (key text PRIMARY KEY, body bytea)")
        self.conn.commit()

    def run(self, payloads: list[list[tuple[str, bytes]]]) -> None:
        for items in payloads:
            for key, raw in items:
                self.conn.execute("INSERT INTO bare VALUES (%s, %s) ON CONFLICT (key) "
                                  "DO UPDATE SET body = EXCLUDED.body", (key, raw))
            self.conn.commit()

    def close(self) -> None:
        self.conn.close()


async def put_all(store: PostgresStorage, commits: list, concurrency: int) -> None:
    async def worker(w: int) -> None:
        for items in commits[w::concurrency]:
            await store.put_many(items, fence=LEASE)
    await asyncio.gather(*(worker(w) for w in range(concurrency)))


async def storage_level(dsn: str, n: int, rounds: int) -> list[tuple[str, float, float, str]]:
    rows = []
    for concurrency in (1, 64):
        for k in (1, 2):
            store = PostgresStorage(dsn)
            await store.acquire_lease(*LEASE, ttl=3600, now=time.time())
            bare = BarePostgres(dsn)
            ours, theirs = [], []
            size = max(1, n // rounds)
            for r in range(rounds):
                commits = [commit(i, k) for i in range(r * size, (r + 1) * size)]
                payloads = [[(key, CODEC.encode(key, rec)) for key, rec in c] for c in commits]
                t0 = time.perf_counter()
                bare.run(payloads)
                theirs.append((time.perf_counter() - t0) / size)
                t0 = time.perf_counter()
                await put_all(store, commits, concurrency)
                ours.append((time.perf_counter() - t0) / size)
            await store.close()
            bare.close()
            rows.append((f"fenced put_many, {k} record(s), {concurrency} committer(s)",
                         statistics.median(ours) * 1e6, statistics.median(theirs) * 1e6,
                         "bare: one committer"))
    return rows


async def engine_level(new_dsn, n: int) -> list[tuple[str, float, float, str]]:
    rows = []
    for width in (100, 1):
        workflow = chains_workflow(n, width)
        memory = min([(await engine_seconds(workflow, None))[0] for _ in range(3)])
        durable, sample = await engine_seconds(workflow, PostgresStorage(new_dsn()))
        payloads = [[(f"nodes/run-bench/{i:06d}", CODEC.encode(f"nodes/run-bench/{i:06d}",
                                                                {**sample, "name": f"n{i}"}))]
                    for i in range(n)]
        bare = BarePostgres(new_dsn())
        t0 = time.perf_counter()
        bare.run(payloads)
        bare_s = time.perf_counter() - t0
        bare.close()
        rows.append((f"WorkflowExecutor, {width} chain(s)", (durable - memory) / n * 1e6,
                     bare_s / n * 1e6, f"run {durable:.2f} s, in memory {memory:.2f} s"))
    return rows


def _worker_process(dsn: str, seconds: float, out: "multiprocessing.Queue[int]") -> None:
    async def main() -> int:
        from lion_nb.engine import WorkflowExecutor
        from lion_nb.state import StateMachineManager
        storage = PostgresStorage(dsn)

        async def noop(ctx):
            return {"ok": True}

        executor = WorkflowExecutor(state_manager=StateMachineManager(storage))
        executor.add_handler("noop", noop)
        await executor.start()
        workflow = chains_workflow(8, 2)
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            results = await asyncio.gather(*(executor.run(workflow) for _ in range(4)))
            done += sum(r.succeeded for r in results)
        await executor.stop()
        await storage.close()
        return done
    out.put(asyncio.run(main()))


def throughput(dsn: str, workers: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(dsn, seconds, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def print_rows(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    print(title)
    print(f"{'scenario':48} {'µs/commit':>9} {'bare µs':>8} {'ratio':>6}  note")
    for name, ours, bare, note in rows:
        print(f"{name:48} {ours:9.1f} {bare:8.1f} {ours / bare:6.2f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None, help="an existing server (its tables are used)")
    parser.add_argument("--n", type=int, default=2000, help="commits per storage scenario")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved chunks")
    parser.add_argument("--engine-n", type=int, default=2000, help="nodes of the engine run")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    args = parser.parse_args()
    server = None
    if args.dsn is None:
        from pg_server import PgServer, new_schema
        server = PgServer(fsync=True).start()
    try:
        def new_dsn() -> str:
            return args.dsn if server is None else new_schema(server)

        print_rows(f"\nPostgreSQL node commits (~350-byte records, fsync=on), median of "
                   f"{args.rounds} interleaved rounds of {args.n // args.rounds}",
                   asyncio.run(storage_level(new_dsn(), args.n, args.rounds)))
        print_rows(f"\nWorkflowExecutor on PostgreSQL, {args.engine_n} no-op nodes",
                   asyncio.run(engine_level(new_dsn, args.engine_n)))
        print(f"\nWorker processes on one database, 8-node instances, {args.seconds:g} s each")
        print(f"{'workers':>7} {'instances/s':>12} {'nodes/s':>9}")
        for w in (int(x) for x in args.workers.split(",")):
            rate = throughput(new_dsn(), w, args.seconds)
            print(f"{w:7d} {rate:12.1f} {rate * 8:9.0f}")
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
