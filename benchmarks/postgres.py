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
* Lease scan: with ``--leases`` live leases (and as many node records) stored, the
  claimers' expired-lease query (``expired_leases``, an index scan) against reading
  every lease as the claimer did before (``keys`` + ``get`` each), median of 5.

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
        durable, sample, _, _ = await engine_seconds(workflow, PostgresStorage(new_dsn()))
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


async def lease_scan(dsn: str, counts: list[int]) -> None:
    """Milliseconds per expired-lease scan: the indexed query and a read of every lease."""
    from lion_nb.state import Storage
    print("\nExpired-lease scan (16 expired among N leases, N node records), median of 5")
    print(f"{'leases':>7} {'indexed ms':>11} {'read-all ms':>12}")
    storage = PostgresStorage(dsn)
    try:
        have = 0
        for count in counts:
            # One multi-row insert per 1000: filling 10k leases one call at a time is slow.
            with psycopg.connect(dsn) as conn:
                for start in range(have, count, 1000):
                    rows = []
                    for i in range(start, min(count, start + 1000)):
                        lease, node = f"leases/i{i:07d}", f"nodes/i{i:07d}/000000"
                        expires = 5.0 if i < 16 else 1e12  # the first 16 expired long ago
                        rows += [(lease.encode(), CODEC.encode(lease, {
                            "owner": "o", "expires": expires}), expires),
                            (node.encode(), CODEC.encode(node, {"name": "n"}), None)]
                    conn.cursor().executemany(
                        "INSERT INTO lion_records (key, body, expires) VALUES (%s, %s, %s)",
                        rows)
            have = count
            fast, slow = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                found = await storage.expired_leases("leases/", time.time(), limit=32)
                fast.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                every = await Storage.expired_leases(storage, "leases/", time.time(), limit=32)
                slow.append(time.perf_counter() - t0)
            assert len(found) == len(every) == 16
            print(f"{count:7d} {statistics.median(fast) * 1e3:11.2f} "
                  f"{statistics.median(slow) * 1e3:12.1f}")
    finally:
        await storage.close()


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
    parser.add_argument("--leases", default="1000,10000", help="live leases in the scan")
    parser.add_argument("--only", default="storage,engine,workers,leases",
                        help="sections to run, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    server = None
    if args.dsn is None:
        from pg_server import PgServer, new_schema
        server = PgServer(fsync=True).start()
    try:
        def new_dsn() -> str:
            return args.dsn if server is None else new_schema(server)

        if "storage" in only:
            print_rows(f"\nPostgreSQL node commits (~350-byte records, fsync=on), median of "
                       f"{args.rounds} interleaved rounds of {args.n // args.rounds}",
                       asyncio.run(storage_level(new_dsn(), args.n, args.rounds)))
        if "engine" in only:
            print_rows(f"\nWorkflowExecutor on PostgreSQL, {args.engine_n} no-op nodes",
                       asyncio.run(engine_level(new_dsn, args.engine_n)))
        if "leases" in only:
            asyncio.run(lease_scan(new_dsn(), [int(x) for x in args.leases.split(",")]))
        if "workers" not in only:
            return
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
