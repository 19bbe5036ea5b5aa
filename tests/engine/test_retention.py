"""Issue 14, long-running processes: retain_finished, prune() and automatic pruning."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from engine.test_resume_bad_input import Work, chain, half_run, until

from lion_nb.clock import FakeClock
from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import SchedulerConfig, WorkflowScheduler
from lion_nb.errors import ConfigError, InstanceNotFoundError
from lion_nb.state import (FileStorage, InstanceState, MemoryStorage, PostgresStorage,
                           SqliteStorage, StateMachineManager)

PRUNE_CHILD = str(Path(__file__).parent / "crash" / "prune_child.py")


def storages(tmp_path):
    return {"sqlite": lambda: SqliteStorage(tmp_path / "s.db"),
            "files": lambda: FileStorage(tmp_path / "files")}


async def started(storage=None, clock=None, **config):
    sched = WorkflowScheduler(SchedulerConfig(clock=clock) if clock else SchedulerConfig())
    manager = StateMachineManager(storage) if storage is not None else None
    ex = WorkflowExecutor(sched, manager, ExecutorConfig(**config))
    ex.add_handler("work", Work())
    await ex.start()
    return ex


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", timedelta(seconds=-1)])
def test_retain_finished_is_a_count_or_a_timedelta(bad):
    with pytest.raises(ConfigError) as err:
        ExecutorConfig(retain_finished=bad)
    assert err.value.field == "retain_finished"


@pytest.mark.parametrize("field,bad", [("prune_older_than", -1), ("prune_older_than", "1h"),
                                       ("prune_every", 0)])
def test_prune_settings_are_validated(field, bad):
    with pytest.raises(ConfigError) as err:
        ExecutorConfig(**{field: bad})
    assert err.value.field == field


async def test_default_keeps_every_finished_instance_and_its_history():
    ex = await started()
    try:
        ids = [(await ex.run(chain("A", "B"))).instance_id for _ in range(5)]
    finally:
        await ex.stop()
    assert ex.instances() == ids
    assert len(ex.history.attempts()) == 10 and list(ex.history.instances) == ids


async def test_retain_finished_count_keeps_the_newest_in_memory_and_history():
    ex = await started(retain_finished=3)
    try:
        ids = [(await ex.run(chain("A", "B"))).instance_id for _ in range(10)]
        held = Work(hold="A")
        ex.add_handler("work", held)
        running = await ex.execute_workflow(chain("A", "B"))
        await until(lambda: held.calls["A"] == 1)
        for _ in range(3):
            ids.append((await ex.run(chain("C"))).instance_id)
        assert ex.instances() == [running, *ids[-3:]]  # a running one is never dropped
        assert ex.status(running) is InstanceState.RUNNING
        with pytest.raises(InstanceNotFoundError):
            ex.snapshot(ids[0])
        assert {r.instance_id for r in ex.history.attempts()} == set(ids[-3:])
        assert set(ex.history.instances) == {running, *ids[-3:]}
        held.gate.set()
        await ex.wait(running)
        assert ex.instances() == [running, *ids[-2:]]  # start order; ids[-3] dropped
    finally:
        await ex.stop()


async def test_history_rows_of_dropped_instances_go_even_between_compactions():
    ex = await started(retain_finished=1)
    try:
        for _ in range(200):
            await ex.run(chain("A", "B"))
        assert len(ex.history.records) <= 2 * (1 + 32 + 1)  # batched, bounded
        assert len(ex.history.attempts()) == 2 and len(ex.history.rows()) == 2
    finally:
        await ex.stop()


async def test_retain_finished_age_drops_instances_that_finished_longer_ago():
    clock = FakeClock()
    ex = await started(clock=clock, retain_finished=timedelta(seconds=60))
    try:
        old = (await ex.run(chain("A"))).instance_id
        await clock.advance(45)
        new = (await ex.run(chain("A"))).instance_id
        assert ex.instances() == [old, new]
        await clock.advance(30)
        assert ex.instances() == [new]
        assert set(ex.history.instances) == {new}
    finally:
        await ex.stop()


async def test_wait_on_a_dropped_durable_instance_reads_storage(tmp_path):
    ex = await started(SqliteStorage(tmp_path / "s.db"), retain_finished=0)
    try:
        iid = await ex.execute_workflow(chain("A", "B"))
        result = await ex.wait(iid)
        assert result.state is InstanceState.SUCCEEDED and ex.instances() == []
        again = await ex.wait(iid)
        assert again.state is InstanceState.SUCCEEDED and again.results["B"] == {"n": 2}
    finally:
        await ex.stop()


async def test_followed_instances_are_retained_like_local_ones(tmp_path):
    # Instances run by another executor and followed through storage: a follower with
    # retain_finished=3 keeps the newest three finished ones, a running one whatever
    # its age, and forgets their history rows -- memory stays bounded over many follows.
    worker = await started(SqliteStorage(tmp_path / "s.db"))
    watcher = await started(SqliteStorage(tmp_path / "s.db"), retain_finished=3)
    try:
        held = Work(hold="A")
        worker.add_handler("work", held)
        running = await worker.execute_workflow(chain("A", "B"))
        await until(lambda: held.calls["A"] == 1)
        await watcher.follow(running, interval=0.02)
        ids = []
        for _ in range(12):
            worker.add_handler("work", Work())
            iid = (await worker.run(chain("A", "B"))).instance_id
            ids.append(iid)
            assert (await watcher.follow(iid)).succeeded
            assert len(watcher.instances()) <= 4
        assert watcher.instances() == [running, *ids[-3:]]
        assert set(watcher.history.instances) == {running, *ids[-3:]}
        with pytest.raises(InstanceNotFoundError):
            watcher.snapshot(ids[0])
        assert (await watcher.wait(ids[0])).succeeded  # still readable from storage
        held.gate.set()
        assert (await watcher.wait(running, timeout=30)).succeeded
        # It finished last: kept, and the oldest other one goes (follow order stays).
        assert watcher.instances() == [running, *ids[-2:]]
        watcher.forget(ids[-1])
        assert watcher.instances() == [running, ids[-2]]
    finally:
        await watcher.stop()
        await worker.stop()


async def stored_keys(storage, iid):
    return [k for k in await storage.keys() if iid in k]


async def test_prune_without_durable_storage_has_nothing_to_delete():
    ex = await started(MemoryStorage())
    try:
        await ex.run(chain("A"))
        assert await ex.prune() == 0
    finally:
        await ex.stop()


@pytest.mark.parametrize("kind", ["sqlite", "files"])
async def test_prune_deletes_every_record_of_old_finished_instances_only(tmp_path, kind):
    storage = storages(tmp_path)[kind]()
    ex = await started(storage)
    try:
        done = [(await ex.run(chain("A", "B", "C"))).instance_id for _ in range(3)]
        held = Work(hold="B")
        ex.add_handler("work", held)
        running = await ex.execute_workflow(chain("A", "B"))
        await until(lambda: held.calls["B"] == 1)
        assert await ex.prune(older_than=3600) == 0
        assert all([await stored_keys(storage, i) for i in done])
        assert await ex.prune(older_than=timedelta(0)) == 3
        for iid in done:
            assert await stored_keys(storage, iid) == []
        assert await stored_keys(storage, running)  # running: untouched
        held.gate.set()
        await ex.wait(running)
    finally:
        await ex.stop()


async def test_prune_leaves_resumable_instances_alone(tmp_path):
    dead, _, iid = await half_run(tmp_path / "s.db", chain("A", "B"), hold="B")
    storage = SqliteStorage(tmp_path / "s.db")
    ex = await started(storage)
    try:
        assert iid in await ex.resumable()
        assert await ex.prune() == 0
        await ex.resume(iid)
        assert (await ex.wait(iid)).state is InstanceState.SUCCEEDED
        assert await ex.prune() == 1 and await storage.keys() == []
    finally:
        await ex.stop()
        await dead.stop()


async def test_prune_older_than_prunes_on_a_timer(tmp_path):
    storage = SqliteStorage(tmp_path / "s.db")
    ex = await started(storage, prune_older_than=0, prune_every=0.05)
    try:
        iid = (await ex.run(chain("A"))).instance_id
        async with asyncio.timeout(5):
            while await stored_keys(storage, iid):
                await asyncio.sleep(0.02)
    finally:
        await ex.stop()


def run_prune_child(kind, store, kill):
    child = subprocess.run([sys.executable, PRUNE_CHILD, kind, store, kill],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode in (0, -signal.SIGKILL), child.stderr
    return child.returncode


@pytest.mark.parametrize("kind", ["sqlite", "file"])
async def test_a_crash_during_prune_leaves_each_instance_whole_or_gone(tmp_path, kind):
    """The child dies right before, inside and after each write of the prune.

    The three instances go in one batched write (up to 64 instances per write):
    before it nothing is gone, after it all are, inside it all or none.
    """
    make = {"sqlite": lambda p: SqliteStorage(p), "file": lambda p: FileStorage(p)}[kind]
    for kill in ["before:1", "inside:1", "after:1", "inside:2", "inside:5", "before:2"]:
        store = str(tmp_path / f"{kind}-{kill.replace(':', '-')}")
        storage = make(store)
        ex = await started(storage)
        ids = [(await ex.run(chain("A", "B", "C"))).instance_id for _ in range(3)]
        whole = {i: await stored_keys(storage, i) for i in ids}
        await ex.stop()
        await storage.close()
        code = run_prune_child(kind, store, kill)
        storage = make(store)
        try:
            states = [await stored_keys(storage, i) for i in ids]
            assert all(s in ([], whole[i]) for s, i in zip(states, ids)), (kill, states)
            gone = sum(s == [] for s in states)
            expected = {"before:1": (-signal.SIGKILL, 0), "after:1": (-signal.SIGKILL, 3),
                        "before:2": (0, 3)}.get(kill)
            assert expected is None or (code, gone) == expected, (kill, code, gone)
            assert run_prune_child(kind, store, "none") == 0
            assert await storage.keys() == []
        finally:
            await storage.close()


async def test_prune_on_postgres_deletes_finished_instances_only(pg_dsn):
    storage = PostgresStorage(pg_dsn)
    ex = await started(storage)
    try:
        done = (await ex.run(chain("A", "B"))).instance_id
        held = Work(hold="A")
        ex.add_handler("work", held)
        running = await ex.execute_workflow(chain("A"))
        await until(lambda: held.calls["A"] == 1)
        assert await ex.prune() == 1
        assert await stored_keys(storage, done) == []
        assert await stored_keys(storage, running)
        held.gate.set()
        await ex.wait(running)
    finally:
        await ex.stop()
        await storage.close()


async def test_a_prune_of_many_instances_takes_one_write_per_64(tmp_path):
    """An automatic prune must keep up with a busy executor: not one fsync per instance."""
    storage = SqliteStorage(tmp_path / "s.db", synchronous="OFF")
    ex = await started(storage)
    try:
        for _ in range(70):
            await ex.run(chain("A"))
        writes = []
        real = storage.put_many

        async def counting(items, *, deletes=(), fence=None):
            writes.append(len(list(deletes)))
            await real(items, deletes=deletes, fence=fence)

        storage.put_many = counting
        assert await ex.prune() == 70
        assert len(writes) == 2 and await storage.keys("instances/") == []
    finally:
        await ex.stop()
        await storage.close()
