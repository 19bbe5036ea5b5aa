"""Issue 14, engine side: what a crash, a failed commit or a damaged record must not do."""

from __future__ import annotations

import asyncio
import math

import pytest
from engine.test_resume_bad_input import Work, chain, executor_on, until

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import read_instance
from lion_nb.errors import (CheckpointCorruptError, PoisonNodeError, ResultNotSerializableError,
                            StorageError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import (FileStorage, InstanceState, MemoryStorage, NodeState, SqliteStorage,
                           StateMachineManager)


def storages(tmp_path):
    return {"memory": MemoryStorage(), "sqlite": SqliteStorage(tmp_path / "s.db"),
            "files": FileStorage(tmp_path / "files")}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "files"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"x": [1.0, math.nan]}])
async def test_nan_and_infinity_fail_the_node_on_every_storage(tmp_path, kind, value):
    ex = WorkflowExecutor(state_manager=StateMachineManager(storages(tmp_path)[kind]))
    ex.add_handler("bad", lambda ctx: value)
    await ex.start()
    try:
        result = await ex.run(WorkflowBuilder("w").add_node(Node("bad")).build())
    finally:
        await ex.stop()
    assert result.state is InstanceState.FAILED  # not "cancelled: could not commit"
    assert result.node_states["bad"] is NodeState.FAILED
    assert isinstance(result.exceptions["bad"].__cause__, ResultNotSerializableError)
    assert "NaN or infinity" in result.errors["bad"]


class FailingOnce(SqliteStorage):
    """Refuses the next write of node records (a full disk, for one write)."""

    fail = False

    async def put_many(self, items, **kwargs):
        if self.fail and any(k.startswith("nodes/") for k, _ in items):
            self.fail = False
            raise StorageError("disk full", key=items[0][0])
        return await super().put_many(items, **kwargs)


async def test_a_failed_commit_releases_the_lease_so_resume_works_at_once(tmp_path):
    storage = FailingOnce(tmp_path / "s.db")
    storage.fail = True
    ex = await executor_on(storage, Work())  # lease TTL 30 s: waiting it out is no option
    iid = await ex.execute_workflow(chain("A", "B"))
    result = await ex.wait(iid, timeout=5)
    assert result.state is InstanceState.CANCELLED and "disk full" in str(result.error)
    other = await executor_on(SqliteStorage(tmp_path / "s.db"), Work())
    try:
        await other.resume(iid)  # no LeaseError: the failed owner let go
        assert (await other.wait(iid, timeout=5, check=True)).succeeded
    finally:
        await ex.stop()
        await other.stop()


async def test_resumable_lists_healthy_instances_and_reports_damaged_ones(tmp_path):
    directory = tmp_path / "files"
    work = Work(hold="B")
    ex = await executor_on(FileStorage(directory), work)
    good = await ex.execute_workflow(chain("A", "B"), instance_id="run-good")
    bad = await ex.execute_workflow(chain("A", "B"), instance_id="run-bad")
    await ex.stop()  # both stay resumable
    path = directory / "instances%2Frun-bad.rec"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x20
    path.write_bytes(bytes(data))
    other = await executor_on(FileStorage(directory), Work())
    try:
        found = await other.resumable()
        assert found == [good]
        assert list(found.damaged) == [bad]
        assert isinstance(found.damaged[bad], CheckpointCorruptError)
        assert (await read_instance(FileStorage(directory), good)).state == "running"
    finally:
        await other.stop()


async def test_attempts_count_across_crashes_and_a_poison_node_stops_running(tmp_path):
    """B's process 'dies' while B runs (the executor is abandoned, its lease lapses)."""
    path = tmp_path / "s.db"
    attempts: list[int] = []
    executors = []

    async def generation(resume_id=None):
        work = Work(hold="B")

        async def handler(ctx):
            if ctx.node_name == "B":
                attempts.append(ctx.attempt)
            return await work(ctx)

        ex = WorkflowExecutor(state_manager=StateMachineManager(SqliteStorage(path)),
                              config=ExecutorConfig(lease_ttl=0.2, max_node_crashes=3))
        ex.add_handler("work", handler)
        await ex.start()
        executors.append(ex)
        if resume_id is None:
            iid = await ex.execute_workflow(chain("A", "B", "C"))
        else:
            iid = await ex.resume(resume_id)
        return ex, work, iid

    try:
        ex, work, iid = await generation()
        for crash in range(3):
            await until(lambda: work.calls["B"] == 1)
            ex._runs[iid].store.close()  # the process is gone: no renewals, no commits
            await asyncio.sleep(0.3)
            ex, work, iid = await generation(iid)
        result = await ex.wait(iid, timeout=5)
        assert attempts == [1, 2, 3]  # never restarted at 1, and not run a fourth time
        assert work.calls["B"] == 0 and result.node_states["B"] is NodeState.FAILED
        assert isinstance(result.exceptions["B"], PoisonNodeError)
        assert result.exceptions["B"].crashes == 3 and result.node_states["A"] \
            is NodeState.SUCCEEDED
        stored = await read_instance(SqliteStorage(path), iid)
        assert stored.state == "failed" and stored.node_states["B"] == "failed"
    finally:
        for ex in executors:
            await ex.stop()


async def test_a_chain_writes_one_record_per_node_with_or_without_crash_tracking(tmp_path):
    store = SqliteStorage(tmp_path / "s.db")
    written: list[str] = []
    real = store.put_many

    async def counting(items, **kwargs):
        # Node commits only: the end write (with the header) re-stamps the newest record.
        if not any(k.startswith("instances/") for k, _ in items):
            written.extend(k for k, _ in items if k.startswith("nodes/"))
        await real(items, **kwargs)

    store.put_many = counting
    # With tracking, a start rides on the end record that released the node (one file
    # per node on FileStorage, not a two-file batch); only the first node's is its own.
    for limit, extra in ((None, 0), (3, 1)):
        written.clear()
        ex = WorkflowExecutor(state_manager=StateMachineManager(store),
                              config=ExecutorConfig(max_node_crashes=limit))
        ex.add_handler("work", Work())
        await ex.start()
        try:
            assert (await ex.run(chain("A", "B", "C"))).succeeded
        finally:
            await ex.stop()
        assert len(written) == 3 + extra


def test_an_exited_but_unreaped_owner_and_a_reused_pid_count_as_dead():
    import subprocess
    import sys
    import time

    from lion_nb.engine import new_owner_id, owner_is_dead

    host, ns, _, token = new_owner_id().split("|")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(500):  # exited, but nobody waited for it: a zombie
            with open(f"/proc/{zombie.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert owner_is_dead(f"{host}|{ns}|{zombie.pid}|{token}")
    finally:
        zombie.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(f"/proc/{alive.pid}/stat") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
        assert not owner_is_dead(f"{host}|{ns}|{alive.pid}.{started}|{token}")
        assert not owner_is_dead(f"{host}|{ns}|{alive.pid}|{token}")  # old ids: no start
        # The owner's pid now names a process that started at another time.
        assert owner_is_dead(f"{host}|{ns}|{alive.pid}.{int(started) + 1}|{token}")
    finally:
        alive.kill()
        alive.wait()
