"""Per-commit cost of node commits on each durable backend, next to bare durable writes.

    python benchmarks/checkpoint.py [--n 10000] [--synchronous FULL] [--dir /path/on/disk]
    python benchmarks/checkpoint.py --engine-only [--engine-n 2000] [--engine-rounds 5]

A "node commit" is what the executor writes when a node finishes: one record of
a few hundred bytes (its result and state), or two (plus the instance's
summary) in one atomic ``put_many``. Each backend is measured next to the bare
cost of the same durable writes, measured in the same run on the same disk:

* files: temp file, write, fsync, rename per record, and one fsync of the
  directory per commit (the rename is not durable without it; the table also
  shows the cost without it, for reference only);
* sqlite3: one transaction per commit, WAL, the same ``synchronous`` setting
  (``--synchronous``, FULL by default) and table shape.

Like with like: group commit (64 concurrent committers, as a busy executor
has) is compared with a bare writer that puts 64 commits in one transaction,
and also with one transaction per commit. ``--engine`` adds the real thing:
n-node workflows of no-op nodes run by a WorkflowExecutor on each durable
backend, as one chain (never two commits at once: the plain per-commit cost;
once with handlers returning a dict, once returning None) and as 100 chains
(64 nodes running at once, so commits share writes; compared with bare writes
grouped into as many transactions as the run made, and with one per record).
Its per-commit cost is (durable run - in-memory run) / nodes, next to bare
durable writes of the executor's own node records; the single-chain rows also
give the CPU time per commit (all threads), which a loaded machine distorts less.

Every figure is the median (min-max) over rounds in which bare and lion_nb
writes alternate, so bursts of other I/O on a shared machine hit both sides
alike; the ratio is of the medians, and the title states the machine load.
Nothing is asserted: timings depend on the disk.
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

from lion_nb.state import FileStorage, RecordCodec, SqliteStorage  # noqa: E402

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
    """temp file + write + fsync + rename per record, then one fsync of the directory per
    commit (per record when each record is its own commit)."""

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


class Grouped:
    """A bare writer that writes ``size`` commits per transaction, as group commit does."""

    def __init__(self, bare, size: int) -> None:
        self.bare, self.size = bare, size

    def run(self, payloads: list[list[tuple[str, bytes]]]) -> None:
        self.bare.run([[item for c in payloads[at:at + self.size] for item in c]
                       for at in range(0, len(payloads), self.size)])

    def close(self) -> None:
        self.bare.close()


class BareSqlite:
    """sqlite3, WAL, the given synchronous setting, one transaction per commit."""

    def __init__(self, root: str, synchronous: str = "FULL") -> None:
        self.conn = sqlite3.connect(os.path.join(tempfile.mkdtemp(dir=root), "bare.db"),
                                    isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, body BLOB NOT NULL) "
                          "WITHOUT ROWID")

    def run(self, payloads: list[list[tuple[str, bytes]]]) -> None:
        for items in payloads:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", items)
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def spread(n: str, count: int, groups: int) -> list[list[str]]:
    """``count`` keys named after ``n`` in ``groups`` commits of (nearly) equal size."""
    keys = [f"nodes/run-bench/{n}{i:06d}" for i in range(count)]
    size, extra = divmod(count, max(1, groups))
    out, at = [], 0
    for g in range(max(1, groups)):
        take = size + (g < extra)
        out.append(keys[at:at + take])
        at += take
    return [g for g in out if g]


def fmt(values: list[float]) -> str:
    """``median (min-max)`` of ``values``."""
    return f"{statistics.median(values):.1f} ({min(values):.0f}-{max(values):.0f})"


def load() -> str:
    """The machine load, for the table's title: timings on a shared machine move with it."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


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
                   concurrency: int = 1) -> tuple[list[float], list[list[float]]]:
    """µs/commit of ``store`` and of each bare writer per round, alternating in ``rounds``.

    Other work on a shared machine comes in bursts; alternating small chunks
    exposes both sides to the same bursts.
    """
    ours: list[float] = []
    bare: list[list[float]] = [[] for _ in bares]
    size = max(1, n // rounds)
    for r in range(rounds):
        commits = [commit(i, k) for i in range(r * size, (r + 1) * size)]
        payloads = [[(key, CODEC.encode(key, rec)) for key, rec in c] for c in commits]
        for j, b in enumerate(bares):
            t0 = time.perf_counter()
            b.run(payloads)
            bare[j].append((time.perf_counter() - t0) / size * 1e6)
        t0 = time.perf_counter()
        await put_all(store, commits, concurrency)
        ours.append((time.perf_counter() - t0) / size * 1e6)
    await store.close()
    for b in bares:
        b.close()
    return ours, bare


Row = tuple[str, list[float], list[float], str]


async def run(root: str, n: int, rounds: int, sync: str) -> list[Row]:
    fresh = iter(range(1_000_000))

    def path(suffix: str = "") -> str:
        return os.path.join(root, f"s{next(fresh)}{suffix}")

    rows: list[Row] = []
    for k in (1, 2):
        ours, (bare, nodir) = await scenario(FileStorage(path()),
                                             [BareFiles(root), BareFiles(root, False)],
                                             n, k, rounds)
        rows.append((f"FileStorage, {k} record(s)/commit", ours, bare,
                     f"bare without dir fsync {fmt(nodir)} µs (not crash-safe)"))
        ours, (bare,) = await scenario(SqliteStorage(path(".db"), synchronous=sync),
                                       [BareSqlite(root, sync)], n, k, rounds)
        rows.append((f"SqliteStorage, {k} record(s)/commit", ours, bare, ""))
        for ms in (0, 2):
            ours, (grouped, bare) = await scenario(
                SqliteStorage(path(".db"), group_commit_ms=ms, synchronous=sync),
                [Grouped(BareSqlite(root, sync), 64), BareSqlite(root, sync)], n, k, rounds,
                concurrency=64)
            rows.append((f"SqliteStorage group commit {ms} ms, {k} rec/commit", ours, grouped,
                         "64 committers; bare: 64 commits per transaction"))
            rows.append((f"SqliteStorage group commit {ms} ms, {k} rec/commit", ours, bare,
                         "64 committers; bare: one transaction per commit"))
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


class Counted:
    """Counts the node-record commits a run makes (its transactions, or journaled batches)."""

    def __init__(self, storage) -> None:
        self.storage, self.commits, self.records = storage, 0, 0
        real = storage.put_many

        async def put_many(items, **kwargs):
            nodes = sum(k.startswith("nodes/") for k, _ in items)
            if nodes and not any(k.startswith("instances/") for k, _ in items):
                self.commits += 1
                self.records += nodes
            await real(items, **kwargs)
        storage.put_many = put_many


async def engine_seconds(workflow, storage, result_shape: str = "dict"
                         ) -> tuple[float, dict, Counted | None, float]:
    """Wall time of one run of ``workflow`` (memory if ``storage`` is None), a sample record,
    the run's commit count and the process's CPU time (every thread) during the run."""
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.engine import read_instance
    from lion_nb.state import StateMachineManager

    async def noop(ctx):
        if result_shape == "none":
            return None
        return {"rows": 1000, "path": "s3://bucket/out/part-00000.parquet"}

    counted = None if storage is None else Counted(storage)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage)
                                if storage is not None else None,
                                config=ExecutorConfig(record_history=False))
    executor.add_handler("noop", noop)
    await executor.start()
    t0, c0 = time.perf_counter(), time.process_time()
    result = await executor.run(workflow)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.succeeded, result.error
    sample: dict = {}
    if storage is not None:
        stored = await read_instance(storage, result.instance_id)
        assert stored is not None and len(stored.nodes) == len(workflow)
        sample = stored.nodes[len(workflow) // 2]
        await storage.close()
    await executor.stop()
    return elapsed, sample, counted, cpu


def backends(root: str, path, sync: str) -> list:
    """(name, storage factory, bare factory) of each durable backend."""
    return [("FileStorage", lambda: FileStorage(path()), lambda: BareFiles(root)),
            (f"SqliteStorage sync={sync}", lambda: SqliteStorage(path(".db"), synchronous=sync),
             lambda: BareSqlite(root, sync))]


async def run_engine(root: str, n: int, rounds: int, sync: str, shapes: list[str]
                     ) -> list[Row]:
    """Per-commit cost of real n-node runs on each backend next to bare writes of their
    records, in interleaved rounds: memory run, durable run, bare writes, per backend."""
    fresh = iter(range(1_000_000))

    def path(suffix: str = "") -> str:
        return os.path.join(root, f"e{next(fresh)}{suffix}")

    rows: list[Row] = []
    for width, shape in [(1, "dict"), (1, "none"), (100, "dict")]:
        if f"{width}{shape}" not in shapes:
            continue
        workflow = chains_workflow(n, width)
        per: dict[str, dict[str, list[float]]] = {}
        for _ in range(rounds):
            memory, _, _, memory_cpu = await engine_seconds(workflow, None, shape)
            for name, make, make_bare in backends(root, path, sync):
                durable, sample, counted, cpu = await engine_seconds(workflow, make(), shape)
                assert counted is not None
                got = per.setdefault(name, {"ours": [], "bare": [], "grouped": [],
                                            "commits": [], "cpu": [], "bare_cpu": []})
                got["ours"].append((durable - memory) / n * 1e6)
                got["cpu"].append((cpu - memory_cpu) / n * 1e6)
                got["commits"].append(counted.commits)
                # The same records, one durable write (or transaction) each ...
                raw = [[(k, CODEC.encode(k, {**sample, "name": k}))]
                       for k in (f"nodes/run-bench/{i:06d}" for i in range(n))]
                b = make_bare()
                t0, c0 = time.perf_counter(), time.process_time()
                b.run(raw)
                got["bare"].append((time.perf_counter() - t0) / n * 1e6)
                got["bare_cpu"].append((time.process_time() - c0) / n * 1e6)
                b.close()
                # ... and grouped as the run grouped them: as many commits as it made.
                groups = [[(k, CODEC.encode(k, {**sample, "name": k})) for k in g]
                          for g in spread("g", n, counted.commits)]
                b = make_bare()
                t0 = time.perf_counter()
                b.run(groups)
                got["grouped"].append((time.perf_counter() - t0) / n * 1e6)
                b.close()
        for name, got in per.items():
            ours, bare = got["ours"], got["bare"]
            label = f"{name}, {width} chain(s)" + (", returns None" if shape == "none" else "")
            if width > 1:
                rows.append((label + " vs grouped bare", ours, got["grouped"],
                             f"{statistics.median(got['commits']):.0f} commits for "
                             f"{n} nodes; bare: same number of transactions/dir fsyncs"))
            # CPU beside wall time: on a loaded machine the wall time is mostly waiting for
            # a core after each blocking call, which the CPU time does not count.
            rows.append((label, ours, bare, f"bare: one commit per record; CPU µs/commit "
                         f"{statistics.median(got['cpu']):.0f} vs bare "
                         f"{statistics.median(got['bare_cpu']):.0f}"))
    return rows


def print_rows(title: str, rows: list[Row]) -> None:
    print(title)
    print(f"{'scenario':58} {'µs/commit med (min-max)':>24} {'bare µs med (min-max)':>22} "
          f"{'ratio':>6}  note")
    for name, ours, bare, note in rows:
        ratio = statistics.median(ours) / statistics.median(bare)
        print(f"{name:58} {fmt(ours):>24} {fmt(bare):>22} {ratio:6.2f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="commits per measurement")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved chunks")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--synchronous", default="FULL",
                        help="SQLite synchronous setting, ours and bare alike")
    parser.add_argument("--engine", action="store_true",
                        help="also run a real workflow of --engine-n nodes on each backend")
    parser.add_argument("--engine-only", action="store_true", help="only the engine runs")
    parser.add_argument("--engine-n", type=int, default=2_000, help="nodes per engine run")
    parser.add_argument("--engine-rounds", type=int, default=5, help="engine rounds")
    parser.add_argument("--shapes", default="1dict,1none,100dict",
                        help="engine shapes: <chains><dict|none result>, comma-separated")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="lion-bench-", dir=args.dir)
    sync = args.synchronous.upper()
    try:
        if not args.engine_only:
            rows = asyncio.run(run(root, args.n, args.rounds, sync))
            print_rows(f"\n{args.n} node commits per scenario (~350-byte records), "
                       f"{args.rounds} interleaved rounds, Python {sys.version.split()[0]}, "
                       f"{load()}", rows)
        if args.engine or args.engine_only:
            rows = asyncio.run(run_engine(root, args.engine_n, args.engine_rounds, sync,
                                          args.shapes.split(",")))
            print_rows(f"\nWorkflowExecutor, {args.engine_n} nodes, 1 chain or 100 chains "
                       f"(64 running at once); µs/commit = (durable - in-memory run) / nodes; "
                       f"{args.engine_rounds} interleaved rounds; {load()}", rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
