"""Resume through the executor: committed nodes stay, the rest re-runs; leases; events.

A crash is simulated in-process by abandoning an executor whose handler hangs:
its lease renewal is stopped, so once the lease expires a second executor (own
storage object, same path) may take the instance over -- exactly what a new
process does. The abandoned executor's late commit must then be refused.
"""

import asyncio
from collections import Counter

import pytest

from lion_nb.engine import EventKind, ExecutorConfig, WorkflowExecutor
from lion_nb.engine import read_instance
from lion_nb.errors import LeaseError, StateError
from lion_nb.model import Edge, Node, WorkflowBuilder
from lion_nb.state import (FileStorage, InstanceState, MemoryStorage, NodeState, SqliteStorage,
                           StateMachineManager)

TTL = 0.3


def open_storage(kind, tmp_path):
    return (SqliteStorage(tmp_path / "state.db") if kind == "sqlite"
            else FileStorage(tmp_path / "files"))


def diamond(extra=None, cond="result.n > 1"):
    """A -> (B, C) -> D, plus A -> Skip on a false condition; optional extra node after D."""
    a, b, c, d = (Node(n, handler="work") for n in "ABCD")
    skip = Node("Skip", handler="work")
    builder = (WorkflowBuilder("diamond").add_nodes(a, b, c, d, skip)
               .connect(a, b).connect(a, c).connect(b, d).connect(c, d)
               .connect(a, skip, condition=cond if cond else None))
    if extra:
        e = Node(extra, handler="work")
        builder.add_node(e).add_edge(Edge(d.id, e.id))
    return builder.build()


class Handlers:
    """Counts calls per node; nodes in ``hold`` wait until ``release()``."""

    def __init__(self, hold=()):
        self.calls = Counter()
        self.keys = {}
        self.hold = set(hold)
        self.gate = asyncio.Event()

    async def work(self, ctx):
        self.calls[ctx.node_name] += 1
        self.keys.setdefault(ctx.node_name, set()).add(ctx.idempotency_key)
        if ctx.node_name in self.hold:
            await self.gate.wait()
        return {"n": len(ctx.node_name) + sum(r["n"] for r in ctx.results.values())}

    def release(self):
        self.gate.set()


async def new_executor(storage, handlers, ttl=TTL):
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage),
                                config=ExecutorConfig(lease_ttl=ttl))
    executor.add_handler("work", handlers.work)
    await executor.start()
    return executor


def abandon(executor, iid):
    """'Crash' an executor: its lease is no longer renewed (it keeps running, like a zombie)."""
    executor._runs[iid].store.close()


async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def resume_after_expiry(executor, iid, timeout=5.0):
    """Resume as soon as the abandoned owner's lease has expired (never before)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await executor.resume(iid)
            except LeaseError:
                await asyncio.sleep(TTL / 4)


async def uninterrupted(workflow):
    h = Handlers()
    executor = WorkflowExecutor()
    executor.add_handler("work", h.work)
    async with executor:
        return (await executor.run(workflow)).results


@pytest.mark.parametrize("kind", ["sqlite", "file"])
async def test_resume_reruns_only_uncommitted_nodes_and_refuses_the_stale_owner(tmp_path, kind):
    wf = diamond()
    first = Handlers(hold={"C"})
    a = await new_executor(open_storage(kind, tmp_path), first)
    iid = await a.execute_workflow(wf, inputs={"day": "2024-06-01"})
    await until(lambda: a.snapshot(iid).node_states["B"] is NodeState.SUCCEEDED)
    await until(lambda: first.calls["C"] == 1)
    abandon(a, iid)

    second = Handlers()
    b_store = open_storage(kind, tmp_path)
    b = await new_executor(b_store, second)
    assert await b.resumable() == [iid]
    assert await resume_after_expiry(b, iid) == iid
    result = await b.wait(iid, check=True)
    assert result.results == await uninterrupted(wf)
    assert result.node_states["Skip"].value == "skipped"
    assert second.calls == Counter({"C": 1, "D": 1})  # A and B had committed
    assert second.keys["C"] == first.keys["C"] == {f"{iid}:C"}
    assert b.snapshot(iid).attempts["A"] == 1  # restored, not re-run
    assert await b.resumable() == []

    first.release()  # the zombie finishes C: its fenced commit is refused
    zombie = await a.wait(iid, timeout=5)
    assert zombie.state is InstanceState.CANCELLED
    assert isinstance(zombie.error, LeaseError) and iid in str(zombie.error)
    stored = await read_instance(b_store, iid)
    assert stored.state == "succeeded" and stored.results == result.results
    assert stored.header["inputs"] == {"day": "2024-06-01"} and stored.header["resumes"] == 1
    await a.stop()
    await b.stop()
    await b_store.close()


async def test_resume_while_the_owner_is_alive_is_refused_with_lease_error(tmp_path):
    h = Handlers(hold={"B", "C"})
    a = await new_executor(SqliteStorage(tmp_path / "s.db"), h, ttl=30)
    iid = await a.execute_workflow(diamond())
    await until(lambda: h.calls["B"] == 1)
    b = await new_executor(SqliteStorage(tmp_path / "s.db"), Handlers())
    with pytest.raises(LeaseError) as err:
        await b.resume(iid)
    assert iid in str(err.value) and "owned by" in str(err.value)
    assert await a.resume(iid) == iid  # the owner asking again is a no-op
    h.release()
    assert (await a.wait(iid, check=True)).succeeded
    await a.stop()
    await b.stop()


async def test_lease_is_renewed_so_a_long_node_keeps_its_instance(tmp_path):
    h = Handlers(hold={"B"})
    a = await new_executor(SqliteStorage(tmp_path / "s.db"), h, ttl=0.6)
    iid = await a.execute_workflow(diamond())
    await asyncio.sleep(1.5)  # 2.5 TTLs: only renewals (every TTL/3) keep the lease
    b = await new_executor(SqliteStorage(tmp_path / "s.db"), Handlers())
    with pytest.raises(LeaseError):
        await b.resume(iid)
    h.release()
    assert (await a.wait(iid, check=True)).succeeded
    await a.stop()
    await b.stop()


async def test_interrupted_failed_node_stays_failed_and_instance_ends_failed(tmp_path):
    wf = diamond()
    calls = Counter()

    async def work(ctx):
        calls[ctx.node_name] += 1
        if ctx.node_name == "B":
            raise ValueError("bad row")
        if ctx.node_name == "C" and calls["C"] == 1:
            await asyncio.Event().wait()  # hangs in the first executor
        return {"n": 1}

    a = WorkflowExecutor(state_manager=StateMachineManager(SqliteStorage(tmp_path / "s.db")),
                         config=ExecutorConfig(lease_ttl=TTL))
    a.add_handler("work", work)
    await a.start()
    iid = await a.execute_workflow(wf)
    await until(lambda: a.snapshot(iid).node_states["B"].value == "failed")
    abandon(a, iid)
    failed_calls = calls["B"]
    b = WorkflowExecutor(state_manager=StateMachineManager(SqliteStorage(tmp_path / "s.db")))
    b.add_handler("work", work)
    await b.start()
    await resume_after_expiry(b, iid)
    result = await b.wait(iid)
    assert result.state is InstanceState.FAILED
    assert calls["B"] == failed_calls  # its retries happened before the commit, none after
    assert result.node_states["D"].value == "upstream_failed"
    assert "bad row" in str(result.exceptions["B"]) and "before the restart" in str(
        result.exceptions["B"])
    with pytest.raises(StateError, match="already finished"):
        await b.resume(iid)
    assert calls["B"] == failed_calls
    await a.stop()
    await b.stop()


async def test_checkpoint_events_reach_the_observe_stream_and_history(tmp_path):
    h = Handlers()
    ex = await new_executor(SqliteStorage(tmp_path / "s.db"), h)
    seen = []
    ex.observe.subscribe(seen.append, [EventKind.CHECKPOINT_SAVED])
    result = await ex.run(diamond())
    assert [e.data["what"] for e in seen] == ["begin", "end"]
    assert seen[-1].data["state"] == "succeeded" and seen[-1].instance_id == result.instance_id
    assert [c["what"] for c in ex.history.checkpoints] == ["begin", "end"]
    await ex.stop()


async def test_resume_emits_a_resume_checkpoint_and_restored_nodes(tmp_path):
    h = Handlers(hold={"C"})
    a = await new_executor(SqliteStorage(tmp_path / "s.db"), h)
    iid = await a.execute_workflow(diamond())
    await until(lambda: h.calls["C"] == 1 and h.calls["B"] == 1)
    await until(lambda: a.snapshot(iid).node_states["B"].value == "succeeded")
    abandon(a, iid)
    b = await new_executor(SqliteStorage(tmp_path / "s.db"), Handlers())
    await resume_after_expiry(b, iid)
    await b.wait(iid, check=True)
    assert [c["what"] for c in b.history.checkpoints] == ["resume", "end"]
    restored = [r.node for r in b.history.attempts(iid) if r.state == "restored"]
    assert sorted(restored) == ["A", "B", "Skip"]
    h.release()
    await a.wait(iid, timeout=5)
    await a.stop()
    await b.stop()


async def test_a_run_whose_node_commits_all_before_the_crash_finishes_on_resume(tmp_path):
    """Killed after the last node committed but before the final state: resume just ends it."""
    h = Handlers()
    store = SqliteStorage(tmp_path / "s.db")
    a = await new_executor(store, h)

    iid = await a.execute_workflow(diamond(), instance_id="run-last-commit")
    durable = a._runs[iid].store

    async def lost_end(state, error):  # the process died before writing the final state
        durable.close()
        return state, error

    durable.end = lost_end
    await a.wait(iid)
    assert (await read_instance(store, iid)).state == "running"
    b = await new_executor(SqliteStorage(tmp_path / "s.db"), Handlers())
    assert await b.resumable() == [iid]
    await resume_after_expiry(b, iid)
    result = await b.wait(iid, check=True)
    assert result.results == await uninterrupted(diamond())
    assert (await read_instance(store, iid)).state == "succeeded"
    await a.stop()
    await b.stop()


async def test_group_commit_backend_runs_a_wide_fan_out(tmp_path):
    b = WorkflowBuilder("wide")
    root = Node("root", handler="work")
    b.add_node(root)
    for k in range(200):
        leaf = Node(f"leaf{k}", handler="work")
        b.add_node(leaf).connect(root, leaf)
    h = Handlers()
    store = SqliteStorage(tmp_path / "s.db", group_commit_ms=2)
    writes = []
    real = store.put_many

    async def counting(items, **kw):
        if not all(k.startswith("leases/") for k, _ in items):  # not a lease renewal
            writes.append(len(items))
        await real(items, **kw)

    store.put_many = counting
    ex = await new_executor(store, h)
    result = await ex.run(b.build())
    assert result.succeeded and len(result.results) == 201
    stored = await read_instance(store, result.instance_id)
    assert len(stored.nodes) == 201 and stored.state == "succeeded"
    # Leaves finishing while a commit is in flight share the next write.
    # Each node: its end record; the leaves' starts ride inside the root's end record,
    # only the root's start is a record of its own.
    # + begin (2) and end (2: the header, and the newest record re-stamped with its seq)
    assert len(writes) < 100 and sum(writes) == 201 + 1 + 4
    await ex.stop()


async def test_stop_leaves_a_durable_instance_resumable_at_once(tmp_path):
    h = Handlers(hold={"C"})
    a = await new_executor(SqliteStorage(tmp_path / "s.db"), h, ttl=30)
    iid = await a.execute_workflow(diamond())
    await until(lambda: h.calls["C"] == 1 and h.calls["B"] == 1)
    await until(lambda: a.snapshot(iid).node_states["B"] is NodeState.SUCCEEDED)
    await a.stop()  # a graceful shutdown: not a cancel, and the lease is released
    b = await new_executor(SqliteStorage(tmp_path / "s.db"), Handlers())
    assert await b.resumable() == [iid]
    await b.resume(iid)  # no LeaseError although the TTL is 30 s
    assert (await b.wait(iid, check=True)).results == await uninterrupted(diamond())
    await b.stop()


async def test_memory_storage_executor_cannot_resume():
    ex = WorkflowExecutor(state_manager=StateMachineManager(MemoryStorage()))
    await ex.start()
    with pytest.raises(StateError, match="not durable"):
        await ex.resume("run-x")
    with pytest.raises(StateError, match="not durable"):
        await ex.resumable()
    await ex.stop()


async def test_a_lease_left_by_an_exited_process_is_taken_over_at_once(tmp_path):
    import subprocess
    import sys
    import time

    from lion_nb.engine import lease_key, new_owner_id, owner_is_dead

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer exists
    host, ns, _, token = new_owner_id().split("|")
    dead = f"{host}|{ns}|{gone.pid}|{token}"
    assert owner_is_dead(dead)
    assert not owner_is_dead(new_owner_id())  # this process
    assert not owner_is_dead(f"elsewhere|{ns}|{gone.pid}|{token}")  # another host: unknown
    store = SqliteStorage(tmp_path / "s.db")
    await store.acquire_lease(lease_key("run-orphan"), dead, ttl=3600, now=time.time())
    ex = await new_executor(store, Handlers())
    # Died before its header committed: starting the same id again is not blocked.
    result = await ex.run(diamond(), instance_id="run-orphan")
    assert result.succeeded
    await ex.stop()
