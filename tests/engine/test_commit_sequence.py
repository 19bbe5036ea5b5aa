"""What no checksum can see: a deleted node record, an older header written back.

Every record below is valid on its own (the storage recomputes its checksum);
only the instance's commit sequence tells that one is missing or stale. Each
case is checked on every storage: the durable ones run the executor, and a
MemoryStorage holding a copy of the same records must say the same.

That a crash at any commit boundary (the child process killed right before,
inside, or right after a write) never reads as such damage is shown by the
crash harness, tests/engine/test_crash_resume.py: after every killed child it
reads the instance back with read_instance, which checks the sequence.
"""

import asyncio

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import header_key, node_key, read_instance
from lion_nb.errors import StorageCorruptError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import (FileStorage, MemoryStorage, NodeState, PostgresStorage,
                           SqliteStorage, StateMachineManager)

KINDS = ["memory", "file", "sqlite", "postgres"]


@pytest.fixture(params=KINDS)
async def storage(request, tmp_path):
    """A durable storage to run in, and the storage the damage is checked in."""
    if request.param == "postgres":
        s = PostgresStorage(request.getfixturevalue("pg_dsn"))
    elif request.param == "file":
        s = FileStorage(tmp_path / "files")
    else:
        s = SqliteStorage(tmp_path / "state.db")
    s.check_in_memory = request.param == "memory"
    try:
        yield s
    finally:
        await s.close()


def chain():
    a, b, c = (Node(n, handler="work") for n in "ABC")
    return WorkflowBuilder("seq").add_nodes(a, b, c).connect(a, b).connect(b, c).build()


class Work:
    def __init__(self, hold=()):
        self.calls = []
        self.hold = set(hold)
        self.gate = asyncio.Event()

    async def __call__(self, ctx):
        self.calls.append(ctx.node_name)
        if ctx.node_name in self.hold:
            await self.gate.wait()
        return {"node": ctx.node_name}


async def started(storage, work, max_node_crashes=3):
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(max_node_crashes=max_node_crashes))
    ex.add_handler("work", work)
    await ex.start()
    return ex


async def checked(storage):
    """The storage to read back from: a MemoryStorage copy for the memory case."""
    if not storage.check_in_memory:
        return storage
    copy = MemoryStorage()
    for key in await storage.keys(""):
        if not key.startswith("leases/"):
            await copy.put(key, await storage.get(key))
    return copy


async def stopped_at_c(storage, max_node_crashes=3):
    """An unfinished instance: A and B committed, C running when its executor stopped."""
    work = Work(hold={"C"})
    ex = await started(storage, work, max_node_crashes)
    iid = await ex.execute_workflow(chain())
    async with asyncio.timeout(10):
        while "C" not in work.calls:
            await asyncio.sleep(0.01)
    await ex.stop()
    return iid


@pytest.mark.parametrize("max_node_crashes", [3, None])
async def test_a_deleted_node_record_of_an_unfinished_instance_is_named(storage,
                                                                        max_node_crashes):
    iid = await stopped_at_c(storage, max_node_crashes)
    assert (await read_instance(await checked(storage), iid)).node_states == {
        "A": "succeeded", "B": "succeeded"}
    await storage.delete(node_key(iid, 0))  # A: without it, A would silently run again
    with pytest.raises(StorageCorruptError) as err:
        await read_instance(await checked(storage), iid)
    assert err.value.instance_id == iid and err.value.key == node_key(iid, 0)
    assert "node index 0" in str(err.value)
    if not storage.check_in_memory:
        work = Work()
        ex = await started(storage, work)
        try:
            with pytest.raises(StorageCorruptError):
                await ex.resume(iid)
        finally:
            await ex.stop()
        assert work.calls == []


async def test_the_deleted_newest_record_of_a_finished_instance_is_named(storage):
    ex = await started(storage, Work())
    try:
        result = await ex.run(chain())
    finally:
        await ex.stop()
    iid = result.instance_id
    await storage.delete(node_key(iid, 2))  # C, the last node to commit
    with pytest.raises(StorageCorruptError) as err:
        await read_instance(await checked(storage), iid)
    assert err.value.key == node_key(iid, 2)


async def test_an_older_header_written_back_over_the_final_one_is_named(storage):
    work = Work(hold={"C"})
    ex = await started(storage, work)
    try:
        iid = await ex.execute_workflow(chain())
        async with asyncio.timeout(10):
            while "C" not in work.calls:
                await asyncio.sleep(0.01)
        old = await storage.get(header_key(iid))  # valid, written at begin: "running"
        work.gate.set()
        assert (await ex.wait(iid)).succeeded
    finally:
        await ex.stop()
    assert (await read_instance(storage, iid)).state == "succeeded"
    await storage.put(header_key(iid), old)
    with pytest.raises(StorageCorruptError) as err:
        await read_instance(await checked(storage), iid)
    assert err.value.key == header_key(iid) and err.value.instance_id == iid
    assert "older header" in str(err.value)


async def test_a_header_from_before_a_resume_written_back_is_named(storage):
    iid = await stopped_at_c(storage)
    old = await storage.get(header_key(iid))
    work = Work(hold={"C"})
    ex = await started(storage, work)
    try:
        await ex.resume(iid)
        async with asyncio.timeout(10):
            while "C" not in work.calls:
                await asyncio.sleep(0.01)
    finally:
        await ex.stop()  # C's start record of this run was written under the new header
    await storage.put(header_key(iid), old)
    with pytest.raises(StorageCorruptError) as err:
        await read_instance(await checked(storage), iid)
    assert err.value.key == header_key(iid)


async def test_a_healthy_instance_reads_back_after_stop_resume_and_end(storage):
    iid = await stopped_at_c(storage)
    work = Work()
    ex = await started(storage, work)
    try:
        await ex.resume(iid)
        assert (await ex.wait(iid)).succeeded
    finally:
        await ex.stop()
    assert work.calls == ["C"]
    stored = await read_instance(await checked(storage), iid)
    assert stored.state == "succeeded"
    assert set(stored.node_states.values()) == {NodeState.SUCCEEDED.value}


async def test_a_start_carried_by_the_releasing_record_counts_after_a_changed_definition(
        storage):
    """C's start rides in B's end record (no record of its own); a resume with nodes
    inserted before it moves B's record and still counts C's interrupted attempt."""
    iid = await stopped_at_c(storage)
    stored = await read_instance(await checked(storage), iid)
    assert stored.started == {"C": 1} and set(stored.nodes) == {0, 1}
    assert "starts" in stored.nodes[1]
    if storage.check_in_memory:
        return
    z, a, b, c = (Node(n, handler="work") for n in "ZABC")
    changed = (WorkflowBuilder("seq").add_nodes(z, a, b, c)
               .connect(z, a).connect(a, b).connect(b, c).build())
    work = Work(hold={"C"})
    ex = await started(storage, work)
    try:
        await ex.resume(iid, changed, allow_changed=True)
        async with asyncio.timeout(10):
            while "C" not in work.calls:
                await asyncio.sleep(0.01)
    finally:
        await ex.stop()
    assert sorted(work.calls) == ["C", "Z"]  # Z is new; A and B stay committed
    stored = await read_instance(storage, iid)
    assert stored.started == {"C": 2}  # attempt 2: the first one counted across the stop
    assert stored.nodes[3]["crashes"] == 1
