"""Durable node commits on PostgreSQL next to bare psycopg writes, and worker throughput.

    python benchmarks/postgres.py [--n 2000] [--dsn postgresql://...] [--workers 1,2,4]
                                  [--instances 400]

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
* Workers: ``--instances`` 8-node instances submitted, then claimed and run by
  ``--workers`` processes (``python -m lion_nb worker``); instances/s until the
  last one finished.

Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
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


async def _noop(ctx):
    return {"ok": True}


#: Handlers of the worker processes (``--handlers postgres:HANDLERS``).
HANDLERS = {"noop": _noop}


async def _submit_and_wait(dsn: str, instances: int, workers: int) -> float:
    """Submit ``instances`` 8-node instances, let ``workers`` processes claim them; seconds."""
    from lion_nb.engine import WorkflowExecutor
    from lion_nb.state import StateMachineManager
    storage = PostgresStorage(dsn)
    submitter = WorkflowExecutor(state_manager=StateMachineManager(storage))
    await submitter.start()
    workflow = chains_workflow(8, 2)
    ids = [await submitter.submit(workflow) for _ in range(instances)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    procs = [subprocess.Popen([sys.executable, "-m", "lion_nb", "worker", "--storage", dsn,
                               "--handlers", "postgres:HANDLERS"], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        for p in procs:
            p.stdout.readline()  # ready
        t0 = time.perf_counter()
        for iid in ids:
            result = await submitter.wait(iid)
            assert result.succeeded, result.error
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        await submitter.stop()
        await storage.close()
    return elapsed


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
    parser.add_argument("--instances", type=int, default=400, help="per throughput run")
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
        print(f"\n{args.instances} submitted 8-node instances claimed by worker processes "
              f"(python -m lion_nb worker), one database")
        print(f"{'workers':>7} {'seconds':>8} {'instances/s':>12} {'nodes/s':>9}")
        for w in (int(x) for x in args.workers.split(",")):
            secs = asyncio.run(_submit_and_wait(new_dsn(), args.instances, w))
            rate = args.instances / secs
            print(f"{w:7d} {secs:8.2f} {rate:12.1f} {rate * 8:9.0f}")
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
