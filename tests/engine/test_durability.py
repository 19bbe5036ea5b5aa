"""Issue 14, engine side: what a crash, a failed commit or a damaged record must not do."""

from __future__ import annotations

import math

import pytest
from engine.test_resume_bad_input import Work, chain, executor_on

from lion_nb.engine import WorkflowExecutor
from lion_nb.engine.durable import read_instance
from lion_nb.errors import CheckpointCorruptError, ResultNotSerializableError, StorageError
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
