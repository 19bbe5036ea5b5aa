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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="commits per measurement")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved chunks")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="lion-bench-", dir=args.dir)
    try:
        rows = asyncio.run(run(root, args.n, args.rounds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.n} node commits per scenario (~350-byte records), median of "
          f"{args.rounds} interleaved rounds, Python {sys.version.split()[0]}")
    print(f"{'scenario':46} {'µs/commit':>9} {'bare µs':>8} {'ratio':>6}  note")
    for name, ours, bare, note in rows:
        print(f"{name:46} {ours:9.1f} {bare:8.1f} {ours / bare:6.2f}  {note}")


if __name__ == "__main__":
    main()
