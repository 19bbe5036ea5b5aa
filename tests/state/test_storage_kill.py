"""SIGKILL a process mid-write: batches stay whole and acknowledged writes stay put."""

import asyncio
import os
import random
import signal
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
            await store.put_many([("a", {"n": n}), ("b", {"n": n}), (f"log/{n}", {})],
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
        assert a == b, "a batch was torn"
        assert a["n"] >= acked[-1], "an acknowledged batch was lost"
        assert await store.keys("log/") == [f"log/{a['n']}"]
        await store.close()
    await asyncio.sleep(0)
