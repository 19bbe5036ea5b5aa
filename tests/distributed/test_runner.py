"""DaskRunner on a real LocalCluster of two worker processes (one module-scoped cluster)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

# tests/ is on sys.path here, and so on the spawned worker processes, which inherit it.
import dask_handlers as h
from distributed import Client, LocalCluster, Worker

from lion_nb.distributed import DaskRunner
from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.errors import (
    ExecutionError,
    HandlerNotSerializableError,
    NodeFailedError,
    NodeTimeoutError,
    ResultNotSerializableError,
)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import InstanceState, NodeState

HANDLERS = {"Load": h.load, "Flaky": h.flaky, "Big": h.big, "Small": h.small,
            "AfterSmall": h.after_small, "Broken": h.broken, "AfterBroken": h.after_broken,
            "Join": h.join}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each; a worker lost mid-task fails its task at once."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", scheduler_kwargs={"allowed_failures": 0}) as c:
        yield c


@pytest.fixture
async def runner(cluster):
    """A DaskRunner with its own asynchronous client on the module's cluster."""
    async with DaskRunner(cluster.scheduler_address) as r:
        await r.client.wait_for_workers(2)
        yield r


async def run(definition, handlers, runner, **kwargs):
    """Run one instance on a fresh executor using ``runner`` (None: the local runner)."""
    ex = WorkflowExecutor(config=ExecutorConfig(runner=runner))
    for name, fn in handlers.items():
        ex.add_handler(name, fn)
    async with ex:
        return await ex.run(definition, **kwargs)


def branching_workflow(total_in_config: int = 1):
    load, flaky, big, small = Node("Load"), Node("Flaky", retry=1), Node("Big"), Node("Small")
    after_small, broken = Node("AfterSmall"), Node("Broken", retry=1)
    after_broken, join = Node("AfterBroken"), Node("Join", config={"k": total_in_config})
    b = WorkflowBuilder("branching").add_nodes(load, flaky, big, small, after_small, broken,
                                               after_broken, join)
    b.connect(load, big, "result.total > 100").connect(load, small, "result.total <= 100")
    b.connect(small, after_small).connect(load, broken).connect(broken, after_broken)
    b.connect(big, join).connect(flaky, join)
    return b.build()


def single(name, **node_kwargs):
    return WorkflowBuilder(name).add_node(Node(name, **node_kwargs)).build()


async def processing(client, prefix):
    """Keys starting with ``prefix`` that some worker is running now."""
    busy = await client.processing()
    return [k for keys in busy.values() for k in keys if str(k).startswith(prefix)]


async def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


# --- same semantics as the local runner ------------------------------------------------

@pytest.mark.parametrize("total", [150, 50])
async def test_conditional_dag_with_retries_and_failure_matches_local_runner(runner, total):
    wf = branching_workflow()
    local = await run(wf, HANDLERS, None, inputs={"total": total}, instance_id=f"cmp-{total}")
    remote = await run(wf, HANDLERS, runner, inputs={"total": total},
                       instance_id=f"cmp-{total}")
    assert remote.state is local.state is InstanceState.FAILED
    assert remote.node_states == local.node_states
    assert remote.results == local.results
    assert remote.attempts == local.attempts
    assert remote.errors.keys() == local.errors.keys() == {"Broken"}
    assert isinstance(remote.exceptions["Broken"].__cause__, h.Boom)  # came back as itself
    expected = "big" if total > 100 else "small"
    assert remote.node_states["Big" if expected == "big" else "Small"] is NodeState.SUCCEEDED
    workers = {p.worker for p in runner.placements()}
    assert all(w.startswith("tcp://") for w in workers)


async def test_placements_record_each_attempt_and_its_worker(runner):
    await run(branching_workflow(), HANDLERS, runner, instance_id="place")
    flaky = [p for p in runner.placements() if p.node == "Flaky"]
    assert [(p.attempt, p.outcome) for p in flaky] == [(1, "failed"), (2, "succeeded")]
    assert all(p.worker and p.worker.startswith("tcp://") for p in flaky)
    assert runner.dashboard_link and runner.dashboard_link.startswith("http")


# --- failures of the cluster and of the clock ---------------------------------------------

async def test_remote_timeout_fails_node_and_cancels_dask_task(runner):
    wf = single("Slow", timeout=0.5)
    t0 = time.monotonic()
    res = await run(wf, {"Slow": h.slow_async}, runner)
    assert time.monotonic() - t0 < 5
    assert res.node_states["Slow"] is NodeState.FAILED
    err = res.exceptions["Slow"]
    assert err.node == "Slow"
    assert isinstance(err, NodeTimeoutError) or isinstance(err.__cause__, NodeTimeoutError)
    await until(lambda: _none_processing(runner.client, "Slow-"))


async def test_instance_cancel_cancels_running_dask_task(runner):
    ex = WorkflowExecutor(config=ExecutorConfig(runner=runner))
    ex.add_handler("Slow", h.slow_async)
    async with ex:
        iid = await ex.execute_workflow(single("Slow"))
        await until(lambda: _some_processing(runner.client, "Slow-"))
        await ex.cancel(iid)
        res = await ex.wait(iid)
    assert res.state is InstanceState.CANCELLED
    assert res.node_states["Slow"] is NodeState.CANCELLED
    assert [p.outcome for p in runner.placements()] == ["cancelled"]
    await until(lambda: _none_processing(runner.client, "Slow-"))


async def _some_processing(client, prefix):
    return bool(await processing(client, prefix))


async def _none_processing(client, prefix):
    return not await processing(client, prefix)


async def test_unpicklable_handler_fails_with_clear_error_naming_the_node(runner):
    lock = threading.Lock()

    def locked(ctx):
        with lock:
            return 1

    res = await run(single("Locked"), {"Locked": locked}, runner)
    err = res.exceptions["Locked"]
    assert isinstance(err, NodeFailedError) and err.node == "Locked"
    assert isinstance(err.__cause__, HandlerNotSerializableError)
    assert res.attempts["Locked"] == 1  # final: retrying cannot make it picklable
    assert "'Locked'" in str(err) and "cannot be pickled" in str(err)
    assert "lion.run_on" in str(err)  # says how to keep it local


async def test_unpicklable_result_is_not_retried_and_names_the_node(runner):
    def returns_lock(ctx):
        return threading.Lock()

    ex = WorkflowExecutor(config=ExecutorConfig(runner=runner, require_json_results=False))
    ex.add_handler("Lock", returns_lock)
    async with ex:
        res = await ex.run(single("Lock", retry=3))
    err = res.exceptions["Lock"]
    assert isinstance(err.__cause__ or err, ResultNotSerializableError)
    assert "'Lock'" in str(err)
    assert res.attempts["Lock"] == 1  # retrying cannot fix it


async def test_handler_errors_come_back_as_themselves_with_the_worker_traceback(runner):
    await runner.warm_up()
    res = await run(single("Broken"), {"Broken": h.broken}, runner)
    cause = res.exceptions["Broken"].__cause__
    assert isinstance(cause, h.Boom)
    note = "\n".join(getattr(cause, "__notes__", []))
    assert "raised on Dask worker tcp://" in note and "dask_handlers.py" in note


async def test_exception_that_cannot_be_rebuilt_still_names_node_and_worker(runner):
    res = await run(single("Picky"), {"Picky": h.picky}, runner)
    cause = res.exceptions["Picky"].__cause__
    assert isinstance(cause, ExecutionError) and cause.node == "Picky"
    assert "Picky: 7 at Picky" in str(cause) and "tcp://" in str(cause)


# --- placement: local nodes, runner sets, worker resources -------------------------------

async def test_nodes_run_locally_by_config_or_runner_set(cluster):
    lock = threading.Lock()

    def here(ctx):  # unpicklable: proves it never left this process
        with lock:
            return f"pid:{os.getpid()}"

    b = WorkflowBuilder("mixed")
    a = Node("Here", config={"lion.run_on": "local"})
    c = Node("There")
    d = Node("AlsoHere")
    b.add_nodes(a, c, d).connect(a, c).connect(c, d)
    async with DaskRunner(cluster.scheduler_address, local={"AlsoHere"}) as r:
        res = await run(b.build(), {"Here": here, "There": h.where, "AlsoHere": here}, r)
    assert res.results["Here"] == res.results["AlsoHere"] == f"pid:{os.getpid()}"
    assert res.results["There"] != f"pid:{os.getpid()}"
    placed = {p.node: p.worker for p in r.placements()}
    assert "Here" not in placed and "AlsoHere" not in placed  # the engine ran them itself
    assert placed["There"].startswith("tcp://")


async def test_default_local_with_cluster_set(cluster):
    async with DaskRunner(cluster.scheduler_address, default="local", cluster={"There"}) as r:
        assert not r.accepts(Node("X"))
        assert r.accepts(Node("There"))
        assert r.accepts(Node("Y", config={"lion.run_on": "cluster"}))
    with pytest.raises(ValueError):
        DaskRunner(cluster.scheduler_address, default="gpu")


async def test_node_resources_run_only_on_workers_declaring_them(runner):
    async with Worker(runner.client.scheduler.address, nthreads=1,
                      resources={"gpu": 1}) as gpu_worker:
        res = await run(single("Train", resources=("gpu",)), {"Train": h.where}, runner)
    assert res.results["Train"] == f"pid:{os.getpid()}"  # the in-process gpu worker
    assert runner.placements()[-1].worker == gpu_worker.address


async def test_synchronous_client_is_bridged(cluster):
    client = await asyncio.to_thread(Client, cluster.scheduler_address)
    try:
        r = DaskRunner(client)
        res = await run(single("Where"), {"Where": h.where}, r)
        assert res.results["Where"].startswith("pid:")
        assert res.results["Where"] != f"pid:{os.getpid()}"
    finally:
        await asyncio.to_thread(client.close)


def test_importing_the_package_does_not_import_dask():
    code = ("import sys, lion_nb.distributed as d; assert 'distributed' not in sys.modules; "
            "d.DaskRunner; assert 'distributed' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- last: kills a worker process (its nanny restarts it) -------------------------------

async def test_worker_killed_mid_task_is_retried_on_another_worker(runner, tmp_path: Path):
    from lion_nb.engine import read_instance
    from lion_nb.state import SqliteStorage, StateMachineManager

    pid_file = tmp_path / "victim.pid"
    storage = SqliteStorage(tmp_path / "state.db")
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(runner=runner))
    ex.add_handler("Load", h.load)
    ex.add_handler("Victim", h.victim)
    load, victim = Node("Load"), Node("Victim", retry=1, config={"pid_file": str(pid_file)})
    wf = WorkflowBuilder("kill").add_nodes(load, victim).connect(load, victim).build()
    try:
        async with ex:
            iid = await ex.execute_workflow(wf)
            await until(_exists(pid_file))
            killed = int(pid_file.read_text())
            os.kill(killed, signal.SIGKILL)
            res = await ex.wait(iid)
        stored = await read_instance(storage, iid)
    finally:
        await storage.close()
    assert res.state is InstanceState.SUCCEEDED, res.errors
    assert res.attempts["Victim"] == 2
    assert res.results["Victim"] != killed
    first, second = [p for p in runner.placements() if p.node == "Victim"]
    assert first.outcome == "lost" and second.outcome == "succeeded"
    assert first.worker and second.worker and first.worker != second.worker
    # Durable state holds the committed result of the attempt that finished, once.
    assert stored.state == "succeeded" and stored.results == res.results
    await runner.client.wait_for_workers(2)


def _exists(path: Path):
    async def check():
        return path.exists() and path.read_text() != ""
    return check


def test_exports_are_complete_and_documented():
    import lion_nb.distributed as pkg
    assert pkg.__all__ == sorted(pkg.__all__)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert isinstance(value, str) or value.__doc__, name
    assert set(pkg.__all__) <= set(dir(pkg))
