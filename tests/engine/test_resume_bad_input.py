"""Bad input through the executor: unknown, finished, changed, unwritable, locked, damaged."""

import asyncio
import os
import sqlite3
from collections import Counter

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import read_instance
from lion_nb.errors import (CheckpointCorruptError, DefinitionChangedError, ExecutorStoppedError,
                            InstanceNotFoundError, LeaseError, SerializationError, StateError,
                            StorageError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import (FileStorage, InstanceState, NodeState, SqliteStorage,
                           StateMachineManager)


def chain(*names, condition=None):
    """A -> B -> ... ; ``condition`` on the first edge."""
    nodes = [Node(n, handler="work") for n in names]
    b = WorkflowBuilder("chain").add_nodes(*nodes)
    for k, (s, t) in enumerate(zip(nodes, nodes[1:])):
        b.connect(s, t, condition=condition if k == 0 else None)
    return b.build()


class Work:
    """Counts calls; ``hold`` names a node that waits for ``gate``."""

    def __init__(self, hold=None):
        self.calls = Counter()
        self.hold = hold
        self.gate = asyncio.Event()

    async def __call__(self, ctx):
        self.calls[ctx.node_name] += 1
        if ctx.node_name == self.hold:
            await self.gate.wait()
        return {"n": 1 + sum(r["n"] for r in ctx.results.values())}


async def executor_on(storage, work, ttl=30.0):
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(lease_ttl=ttl))
    ex.add_handler("work", work)
    await ex.start()
    return ex


async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def half_run(path, workflow, hold, ttl=0.2):
    """Run until ``hold`` starts, then abandon that executor (as a crash would)."""
    work = Work(hold=hold)
    ex = await executor_on(SqliteStorage(path), work, ttl=ttl)
    iid = await ex.execute_workflow(workflow)
    await until(lambda: work.calls[hold] == 1)
    ex._runs[iid].store.close()  # no more renewals: the lease lapses like a dead owner's
    await asyncio.sleep(ttl * 1.5)
    return ex, work, iid


async def test_resume_of_an_unknown_instance_names_it_and_what_is_stored(tmp_path):
    ex = await executor_on(SqliteStorage(tmp_path / "s.db"), Work())
    done = await ex.run(chain("A", "B"))
    with pytest.raises(InstanceNotFoundError) as err:
        await ex.resume("run-nope")
    assert isinstance(err.value, KeyError) and err.value.instance_id == "run-nope"
    assert "run-nope" in str(err.value) and done.instance_id in str(err.value)
    await ex.stop()


@pytest.mark.parametrize("kind", ["sqlite", "file"])
async def test_resume_of_a_finished_instance_says_so_and_runs_nothing(tmp_path, kind):
    store = SqliteStorage(tmp_path / "s.db") if kind == "sqlite" else FileStorage(tmp_path / "f")
    work = Work()
    ex = await executor_on(store, work)
    done = await ex.run(chain("A", "B"))
    ex.forget(done.instance_id)
    with pytest.raises(StateError, match="already finished \\(succeeded\\)") as err:
        await ex.resume(done.instance_id)
    assert err.value.instance_id == done.instance_id and "read_instance" in str(err.value)
    assert work.calls == Counter({"A": 1, "B": 1})
    assert await ex.resumable() == []
    await ex.stop()


async def test_resume_with_a_changed_definition_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "s.db"
    old, _, iid = await half_run(path, chain("A", "B", "C"), hold="B")
    changed = chain("A", "B", "C", "D")
    work = Work()
    ex = await executor_on(SqliteStorage(path), work)
    with pytest.raises(DefinitionChangedError) as err:
        await ex.resume(iid, changed)
    assert err.value.instance_id == iid
    assert "'D'" in str(err.value) and "allow_changed=True" in str(err.value)
    assert await ex.resumable() == [iid]  # the refusal left it resumable
    await ex.resume(iid, changed, allow_changed=True)
    result = await ex.wait(iid, check=True)
    assert work.calls["A"] == 0  # committed under the old definition, matched by name
    assert work.calls["B"] == 1
    assert result.results["D"] == {"n": 4}
    stored = await read_instance(ex.state_manager.storage, iid)
    assert stored.header["fingerprint"] == changed.fingerprint()
    await old.stop()
    await ex.stop()


async def test_same_definition_rebuilt_with_new_ids_resumes_without_allow_changed(tmp_path):
    path = tmp_path / "s.db"
    old, _, iid = await half_run(path, chain("A", "B", "C"), hold="B")
    ex = await executor_on(SqliteStorage(path), Work())
    await ex.resume(iid, chain("A", "B", "C"))  # new node ids, same structure
    assert (await ex.wait(iid, check=True)).results["C"] == {"n": 3}
    await old.stop()
    await ex.stop()


async def test_callable_condition_instances_need_their_workflow_to_resume(tmp_path):
    path = tmp_path / "s.db"
    wf = chain("A", "B", "C", condition=lambda r: r["n"] > 0)
    old, _, iid = await half_run(path, wf, hold="B")
    stored = await read_instance(SqliteStorage(path), iid)
    assert stored.definition is None and stored.header["stored_definition"] is False
    ex = await executor_on(SqliteStorage(path), Work())
    with pytest.raises(StateError, match="callable conditions") as err:
        await ex.resume(iid)
    assert f"executor.resume('{iid}', workflow)" in str(err.value)
    await ex.resume(iid, wf)
    assert (await ex.wait(iid, check=True)).results["C"] == {"n": 3}
    await old.stop()
    await ex.stop()


async def test_starting_an_instance_id_that_is_already_stored_is_refused(tmp_path):
    ex = await executor_on(SqliteStorage(tmp_path / "s.db"), Work())
    await ex.run(chain("A"), instance_id="run-fixed")
    ex.forget("run-fixed")
    with pytest.raises(StateError, match="already exists") as err:
        await ex.execute_workflow(chain("A"), instance_id="run-fixed")
    assert "executor.resume('run-fixed')" in str(err.value)
    with pytest.raises(InstanceNotFoundError):
        ex.status("run-fixed")  # the refused start left nothing behind
    await ex.stop()


async def test_inputs_that_are_not_json_are_refused_at_start_naming_the_record(tmp_path):
    ex = await executor_on(SqliteStorage(tmp_path / "s.db"), Work())
    with pytest.raises(SerializationError) as err:
        await ex.execute_workflow(chain("A"), inputs={"when": object()}, instance_id="run-in")
    assert "instances/run-in" in str(err.value)
    assert await ex.execute_workflow(chain("A"), instance_id="run-in") == "run-in"
    await ex.wait("run-in", check=True)
    await ex.stop()


async def test_resume_on_a_stopped_executor_raises_and_releases_the_lease(tmp_path):
    path = tmp_path / "s.db"
    old, _, iid = await half_run(path, chain("A", "B"), hold="B")
    ex = await executor_on(SqliteStorage(path), Work())
    await ex.stop()
    with pytest.raises(ExecutorStoppedError):
        await ex.resume(iid)
    other = await executor_on(SqliteStorage(path), Work())
    await other.resume(iid)  # not blocked by a lease the failed resume kept
    assert (await other.wait(iid, check=True)).succeeded
    await old.stop()
    await other.stop()


async def test_a_damaged_node_record_stops_resume_and_names_its_key(tmp_path):
    directory = tmp_path / "files"
    work = Work(hold="B")
    ex = await executor_on(FileStorage(directory), work, ttl=0.2)
    iid = await ex.execute_workflow(chain("A", "B"))
    await until(lambda: work.calls["B"] == 1)
    ex._runs[iid].store.close()
    await asyncio.sleep(0.3)
    key = f"nodes/{iid}/000000"
    path = directory / ("nodes%2F" + iid + "%2F000000.rec")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x20
    path.write_bytes(bytes(data))
    other = await executor_on(FileStorage(directory), Work())
    with pytest.raises(CheckpointCorruptError) as err:
        await other.resume(iid)
    assert err.value.key == key
    await ex.stop()
    await other.stop()


async def test_storage_directory_that_cannot_be_created_is_a_storage_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as err:
        FileStorage(blocker / "state")
    assert str(blocker) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_storage_directory_not_writable_refuses_the_start(tmp_path):
    directory = tmp_path / "files"
    store = FileStorage(directory)
    ex = await executor_on(store, Work())
    os.chmod(directory, 0o500)
    try:
        with pytest.raises(StorageError) as err:
            await ex.execute_workflow(chain("A"), instance_id="run-ro")
        assert str(directory) in str(err.value)
        with pytest.raises(InstanceNotFoundError):
            ex.status("run-ro")
    finally:
        os.chmod(directory, 0o700)
    await ex.stop()


async def test_storage_that_fails_mid_run_stops_the_instance_resumably(tmp_path):
    """Commits that fail (here: a disk that errors) stop the instance; resume finishes it."""
    store = SqliteStorage(tmp_path / "s.db")
    work = Work(hold="B")
    ex = await executor_on(store, work, ttl=0.2)
    iid = await ex.execute_workflow(chain("A", "B", "C"))
    await until(lambda: work.calls["B"] == 1)
    real = store.put_many

    async def broken(items, **kw):
        raise StorageError("disk full", key=items[0][0] if items else None, path=store.path)

    store.put_many = broken
    work.gate.set()
    result = await ex.wait(iid, timeout=5)
    assert result.state is InstanceState.CANCELLED
    assert isinstance(result.error, StateError) and "'B'" in str(result.error)
    assert "disk full" in str(result.error) and "resumable" in str(result.error)
    store.put_many = real
    assert await ex.resumable() == [iid]
    await asyncio.sleep(0.3)  # its lease lapses (renewal stopped with the instance)
    await ex.resume(iid)
    final = await ex.wait(iid, check=True)
    assert final.results["C"] == {"n": 3} and work.calls["B"] == 2  # B had not committed
    await ex.stop()


async def test_locked_database_refuses_the_start_and_stops_a_run_resumably(tmp_path):
    path = tmp_path / "s.db"
    store = SqliteStorage(path, busy_timeout=0.1)
    work = Work(hold="B")
    ex = await executor_on(store, work, ttl=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageError, match="locked") as err:
        await ex.execute_workflow(chain("A", "B"), instance_id="run-locked")
    assert str(path) in str(err.value)
    blocker.execute("ROLLBACK")

    iid = await ex.execute_workflow(chain("A", "B"), instance_id="run-locked")
    await until(lambda: work.calls["B"] == 1)
    blocker.execute("BEGIN IMMEDIATE")
    work.gate.set()
    result = await ex.wait(iid, timeout=5)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert result.state is InstanceState.CANCELLED and "locked" in str(result.error)
    assert result.node_states["A"] is NodeState.SUCCEEDED
    await asyncio.sleep(0.3)
    await ex.resume(iid)
    assert (await ex.wait(iid, check=True)).results["B"] == {"n": 2}
    await ex.stop()


async def test_lease_error_names_the_instance_and_the_holder(tmp_path):
    work = Work(hold="A")
    ex = await executor_on(SqliteStorage(tmp_path / "s.db"), work)
    iid = await ex.execute_workflow(chain("A"))
    await until(lambda: work.calls["A"] == 1)
    other = await executor_on(SqliteStorage(tmp_path / "s.db"), Work())
    with pytest.raises(LeaseError) as err:
        await other.resume(iid)
    assert err.value.instance_id == iid and str(os.getpid()) in err.value.owner
    work.gate.set()
    await ex.wait(iid, check=True)
    await ex.stop()
    await other.stop()
