"""SIGKILL a process mid-write: batches stay whole and acknowledged writes stay put."""

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from lion_nb.state import FileStorage, SqliteStorage

WRITER = textwrap.dedent("""
    import asyncio, sys
    from lion_nb.state import FileStorage, SqliteStorage

    async def main(kind, path):
        store = FileStorage(path) if kind == "file" else SqliteStorage(path)
        n = (await store.get("a") or {"n": 0})["n"]
        while True:
            n += 1
            # "b" is large every other batch: SQLite keeps large records in a table of
            # their own, so a batch writes both tables or neither.
            b = {"n": n, "pad": "x" * (5000 if n % 2 else 0)}
            await store.put_many([("a", {"n": n}), ("b", b), (f"log/{n}", {})],
                                 deletes=[f"log/{n - 1}"])
            print(n, flush=True)  # acknowledged

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def open_store(kind, path):
    return FileStorage(path) if kind == "file" else SqliteStorage(path)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_sigkill_mid_batch_never_leaves_half_a_batch(tmp_path, kind):
    path = str(tmp_path / ("files" if kind == "file" else "state.db"))
    rng = random.Random(4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", WRITER, kind, path],
                                 stdout=subprocess.PIPE, text=True, env=env)
        first = child.stdout.readline()  # wait until it is really writing
        assert first, "the writer died before its first commit"
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        acked = [int(line) for line in [first, *child.stdout.read().split()]]
        child.wait()
        store = open_store(kind, path)
        a, b = await store.get("a"), await store.get("b")
        assert a["n"] == b["n"] and len(b["pad"]) == (5000 if a["n"] % 2 else 0), "torn"
        assert a["n"] >= acked[-1], "an acknowledged batch was lost"
        assert await store.keys("log/") == [f"log/{a['n']}"]
        await store.close()
        if kind == "sqlite":  # no body of a replaced large record is left behind
            with sqlite3.connect(path) as conn:
                large = conn.execute("SELECT count(*) FROM lion_large").fetchone()[0]
            assert large == a["n"] % 2
    await asyncio.sleep(0)


STEPPER = textwrap.dedent("""
    import asyncio, os, signal, sys
    from lion_nb.state import FileStorage, SqliteStorage

    async def main(kind, path, step, k):
        store = FileStorage(path) if kind == "file" else SqliteStorage(path)
        seen = [0]

        def hook(name):
            if name == step:
                seen[0] += 1
                if seen[0] == int(k):
                    os.kill(os.getpid(), signal.SIGKILL)

        store.step_hook = hook
        for n in range(1, 10):
            await store.put("a", {"n": n})  # one record
            print("a", n, flush=True)
            await store.put_many([("b", {"n": n}), ("c", {"n": n})])  # a batch
            print("b", n, flush=True)

    asyncio.run(main(*sys.argv[1:5]))
""")


@pytest.mark.parametrize("kind, step, k", [
    ("file", "record_replaced", 3),  # a record renamed into place, directory not fsynced
    ("file", "journal_committed", 2),  # a batch's journal durable, no record applied
    ("file", "record_applied", 3),  # a batch half applied
    ("sqlite", "before_commit", 4),  # a transaction built, not committed
])
async def test_sigkill_at_each_write_step_keeps_records_whole_and_acked_ones(
        tmp_path, kind, step, k):
    path = str(tmp_path / ("files" if kind == "file" else "state.db"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", STEPPER, kind, path, step, str(k)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    acked: dict[str, int] = {"a": 0, "b": 0}
    for line in out.stdout.split("\n"):
        if line:
            name, n = line.split()
            acked[name] = int(n)
    store = open_store(kind, path)
    try:
        a, b, c = await store.get("a"), await store.get("b"), await store.get("c")
        # The write in flight may have landed or not; nothing acknowledged is lost.
        assert (a or {"n": 0})["n"] in (acked["a"], acked["a"] + 1)
        assert b == c, "a batch was torn"
        assert (b or {"n": 0})["n"] in (acked["b"], acked["b"] + 1)
        await store.put("a", {"n": 99})  # and the storage takes writes again
        assert await store.get("a") == {"n": 99}
        if kind == "file":
            assert not [n for n in os.listdir(path) if n.startswith((".tmp-", ".journal"))]
    finally:
        await store.close()
