"""Per-commit cost of node commits on each durable backend, next to bare durable writes.

    python benchmarks/checkpoint.py [--n 10000] [--dir /path/on/the/disk/to/test]

A "node commit" is what the executor writes when a node finishes: one record of
a few hundred bytes (its result and state), or two (plus the instance's
summary) in one atomic ``put_many``. Each backend is measured next to the bare
cost of the same durable writes, measured in the same run on the same disk:

* files: temp file, write, fsync, rename, fsync of the directory, per record
  (the rename is not durable without the last step; the table also shows the
  cost without it, for reference only);
* sqlite3: one transaction per commit, WAL, ``synchronous=FULL``, same table shape.

Group commit is measured with 64 concurrent committers, as a busy executor has.

``--engine`` adds the real thing: a 10k-node workflow of no-op nodes run by a
WorkflowExecutor on each durable backend, as 100 chains (64 nodes running at
once, so commits overlap and share writes) and as one chain (never two
commits at once: the plain per-commit cost). Its per-commit cost is
(durable run - in-memory run) / nodes, next to the same number of bare durable
writes of the executor's own node records, measured in the same run
(``--engine-only`` skips the storage-level table).
Bare and lion_nb writes alternate in rounds and each side's median round is
reported, so bursts of other I/O on a shared machine hit both sides alike.
Prints microseconds per commit and the ratio to the bare cost. Nothing is
asserted: timings depend on the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.state.file_storage import FileStorage  # noqa: E402
from lion_nb.state.records import RecordCodec  # noqa: E402
from lion_nb.state.sqlite_storage import SqliteStorage  # noqa: E402

CODEC = RecordCodec()


def node_record(i: int) -> dict:
    """A realistic node-commit record (~350 bytes encoded)."""
    return {"instance_id": "run-5f0c2a9e1b7d4c3a8e6f", "node_id": f"n-{i:020d}",
            "node": f"transform_{i}", "state": "succeeded", "attempt": 1,
            "started_at": 1_718_000_000.25 + i, "finished_at": 1_718_000_000.75 + i,
            "result": {"rows": 1000 + i, "path": f"s3://bucket/out/part-{i:05d}.parquet"}}


def summary_record(i: int) -> dict:
    """The instance summary a commit may update alongside the node's record."""
    return {"instance_id": "run-5f0c2a9e1b7d4c3a8e6f", "state": "running", "done": i + 1}


def commit(i: int, k: int) -> list[tuple[str, dict]]:
    items = [(f"runs/run-1/nodes/{i:06d}", node_record(i))]
    if k == 2:
        items.append(("runs/run-1/instance", summary_record(i)))
    return items


# --- bare durable writes --------------------------------------------------------------

class BareFiles:
    """temp file + write + fsync + rename (+ fsync of the directory) per record."""

    def __init__(self, root: str, dir_fsync: bool = True) -> None:
        self.dir = tempfile.mkdtemp(dir=root)
        self.dfd = os.open(self.dir, os.O_RDONLY)
        self.dir_fsync = dir_fsync

    def run(self, payloads: list[list[tuple[str, bytes]]]) -> None:
        for items in payloads:
            for key, raw in items:
                path = os.path.join(self.dir, key.replace("/", "%2F"))
                fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, raw)
                os.fsync(fd)
                os.close(fd)
                os.replace(path + ".tmp", path)
                if self.dir_fsync:
                    os.fsync(self.dfd)

    def close(self) -> None:
        os.close(self.dfd)


class BareSqlite:
    """sqlite3, WAL, synchronous=FULL, one transaction per commit."""

    def __init__(self, root: str) -> None:
        self.conn = sqlite3.connect(os.path.join(tempfile.mkdtemp(dir=root), "bare.db"),
                                    isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, body BLOB NOT NULL) "
                          "WITHOUT ROWID")

    def run(self, payloads: list[list[tuple[str, bytes]]]) -> None:
        for items in payloads:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", items)
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


# --- one scenario: ours and bare, interleaved -----------------------------------------------

async def put_all(store, commits, concurrency: int) -> None:
    if concurrency == 1:
        for items in commits:
            await store.put_many(items)
        return

    async def worker(w: int) -> None:
        for items in commits[w::concurrency]:
            await store.put_many(items)
    await asyncio.gather(*(worker(w) for w in range(concurrency)))


async def scenario(store, bares, n: int, k: int, rounds: int,
                   concurrency: int = 1) -> tuple[float, list[float]]:
    """Median µs/commit of ``store`` and of each bare writer, alternating in ``rounds`` chunks.

    Other work on a shared machine comes in bursts; alternating small chunks
    exposes both sides to the same bursts, and the median discards the worst.
    """
    ours, bare = [], [[] for _ in bares]
    size = max(1, n // rounds)
    for r in range(rounds):
        commits = [commit(i, k) for i in range(r * size, (r + 1) * size)]
        payloads = [[(key, CODEC.encode(key, rec)) for key, rec in c] for c in commits]
        for j, b in enumerate(bares):
            t0 = time.perf_counter()
            b.run(payloads)
            bare[j].append((time.perf_counter() - t0) / size)
        t0 = time.perf_counter()
        await put_all(store, commits, concurrency)
        ours.append((time.perf_counter() - t0) / size)
    await store.close()
    for b in bares:
        b.close()
    return statistics.median(ours) * 1e6, [statistics.median(x) * 1e6 for x in bare]


async def run(root: str, n: int, rounds: int) -> list[tuple[str, float, float, str]]:
    fresh = iter(range(1_000_000))

    def path(suffix: str = "") -> str:
        return os.path.join(root, f"s{next(fresh)}{suffix}")

    rows = []
    for k in (1, 2):
        ours, (bare, nodir) = await scenario(FileStorage(path()),
                                             [BareFiles(root), BareFiles(root, False)],
                                             n, k, rounds)
        rows.append((f"FileStorage, {k} record(s)/commit", ours, bare,
                     f"bare without dir fsync {nodir:.0f} µs (not crash-safe)"))
        ours, (bare,) = await scenario(SqliteStorage(path(".db")), [BareSqlite(root)],
                                       n, k, rounds)
        rows.append((f"SqliteStorage, {k} record(s)/commit", ours, bare, ""))
        for ms in (0, 2):
            ours, (bare,) = await scenario(SqliteStorage(path(".db"), group_commit_ms=ms),
                                           [BareSqlite(root)], n, k, rounds, concurrency=64)
            rows.append((f"SqliteStorage group commit, {k} record(s)/commit", ours, bare,
                         f"group_commit_ms={ms}, 64 committers"))
    return rows


# --- a real executor run ------------------------------------------------------------------

def chains_workflow(n: int, width: int = 100):
    """``width`` parallel chains, ``n`` nodes in all, every node a no-op handler."""
    from lion_nb.model import Node, WorkflowBuilder
    b = WorkflowBuilder(f"bench-{n}")
    nodes = [Node(f"c{i % width}-{i // width}", handler="noop") for i in range(n)]
    b.add_nodes(*nodes)
    for i in range(width, n):
        b.connect(nodes[i - width], nodes[i])
    return b.build()


async def engine_seconds(workflow, storage) -> tuple[float, dict]:
    """Wall time of one run of ``workflow`` (memory if ``storage`` is None) and a sample record."""
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.engine.durable import read_instance
    from lion_nb.state import StateMachineManager

    async def noop(ctx):
        return {"rows": 1000, "path": "s3://bucket/out/part-00000.parquet"}

    executor = WorkflowExecutor(state_manager=StateMachineManager(storage)
                                if storage is not None else None,
                                config=ExecutorConfig(record_history=False))
    executor.add_handler("noop", noop)
    await executor.start()
    t0 = time.perf_counter()
    result = await executor.run(workflow)
    elapsed = time.perf_counter() - t0
    assert result.succeeded, result.error
    sample: dict = {}
    if storage is not None:
        stored = await read_instance(storage, result.instance_id)
        assert stored is not None and len(stored.nodes) == len(workflow)
        sample = stored.nodes[0]
        await storage.close()
    await executor.stop()
    return elapsed, sample


async def run_engine(root: str, n: int) -> list[tuple[str, float, float, str]]:
    """Per-commit cost of a real n-node run on each backend, and bare writes of its records."""
    fresh = iter(range(1_000_000))

    def path(suffix: str = "") -> str:
        return os.path.join(root, f"e{next(fresh)}{suffix}")

    rows = []
    for width in (100, 1):
        rows += await run_engine_shape(root, n, width, path)
    return rows


async def run_engine_shape(root: str, n: int, width: int, path) -> list:
    """One workflow shape on every backend: ``width`` chains (1 = no two commits overlap)."""
    workflow = chains_workflow(n, width)
    memory = min([(await engine_seconds(workflow, None))[0] for _ in range(3)])
    rows = []
    backends = [("FileStorage", lambda: FileStorage(path()), lambda: BareFiles(root)),
                ("SqliteStorage", lambda: SqliteStorage(path(".db")), lambda: BareSqlite(root)),
                ("SqliteStorage group_commit_ms=0",
                 lambda: SqliteStorage(path(".db"), group_commit_ms=0), lambda: BareSqlite(root))]
    for name, make, make_bare in backends:
        durable, sample = await engine_seconds(workflow, make())
        # The same records the run committed, one durable write (or transaction) each.
        payloads = [[(f"nodes/run-bench/{i:06d}", CODEC.encode(f"nodes/run-bench/{i:06d}",
                                                                {**sample, "name": f"n{i}"}))]
                    for i in range(n)]
        bare = make_bare()
        t0 = time.perf_counter()
        bare.run(payloads)
        bare_s = time.perf_counter() - t0
        bare.close()
        per_commit = (durable - memory) / n * 1e6
        rows.append((f"{name}, {width} chain(s)", per_commit, bare_s / n * 1e6,
                     f"run {durable:.2f} s, in memory {memory:.2f} s"))
    return rows


def print_rows(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    print(title)
    print(f"{'scenario':46} {'µs/commit':>9} {'bare µs':>8} {'ratio':>6}  note")
    for name, ours, bare, note in rows:
        print(f"{name:46} {ours:9.1f} {bare:8.1f} {ours / bare:6.2f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="commits per measurement")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved chunks")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--engine", action="store_true",
                        help="also run a real workflow of --engine-n nodes on each backend")
    parser.add_argument("--engine-only", action="store_true", help="only the engine runs")
    parser.add_argument("--engine-n", type=int, default=10_000, help="nodes of the engine run")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="lion-bench-", dir=args.dir)
    try:
        if not args.engine_only:
            rows = asyncio.run(run(root, args.n, args.rounds))
            print_rows(f"\n{args.n} node commits per scenario (~350-byte records), median of "
                       f"{args.rounds} interleaved rounds, Python {sys.version.split()[0]}", rows)
        if args.engine or args.engine_only:
            rows = asyncio.run(run_engine(root, args.engine_n))
            print_rows(f"\nWorkflowExecutor, {args.engine_n} nodes in 100 chains (64 running "
                       f"at once) or 1 chain; µs/commit = (durable - in-memory run) / nodes",
                       rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
