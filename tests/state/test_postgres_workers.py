"""Submit here, run anywhere: worker processes claim instances from one PostgreSQL database."""

import asyncio
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import read_instance
from lion_nb.errors import SerializationError, StorageCorruptError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import InstanceState, PostgresStorage, StateMachineManager

HERE = Path(__file__).resolve().parent


def chain(n, name="chain"):
    nodes = [Node(f"s{i}", handler="step") for i in range(n)]
    builder = WorkflowBuilder(name).add_nodes(*nodes)
    for a, b in zip(nodes, nodes[1:]):
        builder.connect(a, b)
    return builder.build()


def read_log(path):
    runs = Counter()
    pids = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            pid, iid, node = line.split()
            runs[(iid, node)] += 1
            pids[pid] += 1
    return runs, pids


class Workers:
    """Worker processes (``python -m lion_nb worker``), killed at the end whatever happens."""

    def __init__(self, dsn, log, *, ttl=30.0, sleep=0.0):
        self.dsn, self.log, self.ttl, self.sleep = dsn, log, ttl, sleep
        self.procs: list[subprocess.Popen] = []

    def start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
               "LION_TEST_LOG": str(self.log), "LION_TEST_SLEEP": str(self.sleep)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lion_nb", "worker", "--storage", self.dsn,
             "--handlers", "claim_handlers:HANDLERS", "--lease-ttl", str(self.ttl)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline()
        assert line.startswith("lion_nb worker ready"), proc.stderr.read()
        self.procs.append(proc)
        return proc

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def settled(storage, iid):
    """read_instance of a running instance: the owner may commit between its reads (a torn
    read looks like a gap in the commit sequence), so read again, as executor.follow does."""
    for _ in range(20):
        try:
            return await read_instance(storage, iid)
        except StorageCorruptError:
            await asyncio.sleep(0.01)
    return await read_instance(storage, iid)


async def until_all_finished(storage, ids, timeout):
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} instances unfinished"
        still = []
        for iid in pending:
            header = await storage.get(f"instances/{iid}")
            if header is None or header["state"] not in ("succeeded", "failed", "cancelled"):
                still.append(iid)
        pending = still
        if pending:
            await asyncio.sleep(0.2)


@pytest.fixture
async def submitter(pg_dsn):
    storage = PostgresStorage(pg_dsn)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage))
    await executor.start()
    yield executor
    await executor.stop()
    await storage.close()


async def test_submit_then_a_claiming_executor_runs_it_and_the_submitter_waits(pg_dsn,
                                                                               submitter):
    ids = [await submitter.submit(chain(3), inputs={"n": i}) for i in range(5)]
    assert submitter.instances() == []  # nothing runs here
    stored = await read_instance(submitter.state_manager.storage, ids[0])
    assert stored.state == "pending"
    storage = PostgresStorage(pg_dsn)
    worker = WorkflowExecutor(state_manager=StateMachineManager(storage))

    async def step(ctx):
        return {"n": ctx.inputs.get("n", 0) + sum(r["n"] for r in ctx.results.values()) + 1}

    worker.add_handler("step", step)
    try:
        await worker.start(claim=True, poll=0.02)
        results = [await submitter.wait(iid, timeout=30) for iid in ids]
    finally:
        await worker.stop()
        await storage.close()
    assert [r.state for r in results] == [InstanceState.SUCCEEDED] * 5
    assert results[2]["s2"] == {"n": 9}  # s0 = n+1, s1 = n+s0+1, s2 = n+s1+1
    assert results[0].node_states["s2"].value == "succeeded"


async def test_submit_refuses_what_a_worker_could_not_rebuild(submitter):
    a, b = Node("a", handler="step"), Node("b", handler="step")
    wf = WorkflowBuilder("callable").add_nodes(a, b).connect(
        a, b, condition=lambda r: True).build()
    with pytest.raises(SerializationError):
        await submitter.submit(wf)
    iid = await submitter.submit(chain(1), instance_id="dup")
    with pytest.raises(Exception, match="already exists"):
        await submitter.submit(chain(1), instance_id=iid)


async def test_a_worker_without_the_handler_fails_the_instance_and_says_why(pg_dsn,
                                                                             submitter):
    iid = await submitter.submit(chain(2))
    storage = PostgresStorage(pg_dsn)
    worker = WorkflowExecutor(state_manager=StateMachineManager(storage))
    try:
        await worker.start(claim=True, poll=0.02)
        result = await submitter.wait(iid, timeout=30)
    finally:
        await worker.stop()
        await storage.close()
    assert result.state is InstanceState.FAILED
    assert "no registered handler 'step'" in str(result.error)


@pytest.mark.timeout(600)
async def test_three_workers_claim_1000_instances_each_runs_exactly_once(pg_dsn, submitter,
                                                                         tmp_path):
    log = tmp_path / "runs.log"
    workflow = chain(2)
    ids = [await submitter.submit(workflow, inputs={"n": i}) for i in range(1000)]
    workers = Workers(pg_dsn, log)
    try:
        for _ in range(3):
            workers.start()
        await until_all_finished(submitter.state_manager.storage, ids, timeout=400)
    finally:
        workers.close()
    runs, pids = read_log(log)
    assert set(runs) == {(iid, f"s{k}") for iid in ids for k in range(2)}
    assert set(runs.values()) == {1}, [k for k, v in runs.items() if v > 1][:5]
    assert len(pids) >= 2, f"one worker did everything: {pids}"
    sample = await submitter.wait(ids[7])
    assert sample.succeeded and sample["s1"] == {"n": 7 + (7 + 1) + 1}


@pytest.mark.timeout(600)
async def test_sigkill_sweep_two_workers_lose_nothing_and_rerun_nothing_committed(
        pg_dsn, submitter, tmp_path):
    log = tmp_path / "runs.log"
    workflow = chain(6)
    ids = [await submitter.submit(workflow, inputs={"n": i}) for i in range(60)]
    storage = submitter.state_manager.storage
    rng = random.Random(17)
    ttl = 1.0
    workers = Workers(pg_dsn, log, ttl=ttl, sleep=0.01)
    runs_when_committed: dict[tuple[str, str], int] = {}
    kills = 0
    try:
        survivor = workers.start()
        victim = workers.start()
        for _ in range(4):  # kill the second worker mid-run, again and again
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            committed = set()
            for iid in ids:  # what is committed now must never run again...
                stored = await settled(storage, iid)
                committed |= {(iid, rec["name"]) for rec in stored.nodes.values()
                              if rec["state"] != "running"}  # not a start record
            runs_at_kill, _ = read_log(log)  # ...so its runs so far are all it ever gets
            for key in committed - set(runs_when_committed):
                runs_when_committed[key] = runs_at_kill[key]
            victim = workers.start()
        started = time.monotonic()
        await until_all_finished(storage, ids, timeout=300)
        assert survivor.poll() is None
    finally:
        workers.close()
    runs, _ = read_log(log)
    assert kills == 4 and runs_at_kill
    assert runs_when_committed
    for key, before in runs_when_committed.items():
        assert runs[key] == before, f"{key} was committed, then ran again"
    for i, iid in enumerate(ids):
        result = await submitter.wait(iid)
        assert result.succeeded, (iid, result.error)
        assert result.results == await uninterrupted(i)
    assert time.monotonic() - started < 60


async def uninterrupted(n):
    executor = WorkflowExecutor(config=ExecutorConfig())

    async def step(ctx):
        return {"n": ctx.inputs.get("n", 0) + sum(r["n"] for r in ctx.results.values()) + 1}

    executor.add_handler("step", step)
    async with executor:
        return (await executor.run(chain(6), inputs={"n": n})).results


# --- the submitting notebook watches what runs elsewhere ------------------------------------

async def test_the_submitter_follows_history_and_a_run_view_of_an_instance_run_elsewhere(
        pg_dsn, submitter):
    pytest.importorskip("ipywidgets")
    from lion_nb.notebook import RunView

    a, b, c = Node("a", handler="step"), Node("b", handler="flaky", retry=1), Node("c",
                                                                                 handler="step")
    wf = WorkflowBuilder("watched").add_nodes(a, b, c).connect(a, b).connect(b, c).build()
    iid = await submitter.submit(wf, inputs={"n": 1})
    first = await submitter.follow(iid, interval=0.05)
    assert first.state is InstanceState.PENDING and submitter.snapshot(iid).state == "pending"
    view = RunView(submitter, iid, picture=False)
    storage = PostgresStorage(pg_dsn)
    worker = WorkflowExecutor(state_manager=StateMachineManager(storage))
    tries = Counter()

    async def step(ctx):
        await asyncio.sleep(0.3)  # long enough for a poll to see it running
        return {"n": 1}

    async def flaky(ctx):
        tries[ctx.attempt] += 1
        await asyncio.sleep(0.3)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return {"n": 2}

    worker.add_handler("step", step)
    worker.add_handler("flaky", flaky)
    try:
        await worker.start(claim=True, poll=0.02)
        result = await submitter.wait(iid, timeout=60)
    finally:
        await worker.stop()
        await storage.close()
    assert result.succeeded and result["b"] == {"n": 2} and result.attempts["b"] == 2
    # History rows come from the committed records the follower polled.
    rows = [(r.node, r.attempt, r.state) for r in submitter.history.attempts(iid)]
    assert rows == [("a", 1, "succeeded"), ("b", 1, "failed"), ("b", 2, "succeeded"),
                    ("c", 1, "succeeded")], rows
    for rec in submitter.history.attempts(iid):
        assert rec.worker and "|" in rec.worker, rec  # the owner id of the worker
        # Times are when a poll saw the change (a start a poll missed is None).
        assert rec.finished_at is not None and (rec.duration or 0) >= 0, rec
    inst = submitter.history.instances[iid]
    assert inst.state == "succeeded" and inst.workflow == "watched"
    # The view followed it to the end through the same stream.
    for _ in range(100):
        if view.closed:
            break
        await asyncio.sleep(0.05)
    assert view.closed and view.instance_state == "succeeded"
    assert view.progress.value == 3 and "finished" in view.title.value
    assert submitter.snapshot(iid).state is InstanceState.SUCCEEDED


async def test_following_a_finished_or_unknown_instance(pg_dsn, submitter):
    from lion_nb.errors import InstanceNotFoundError

    with pytest.raises(InstanceNotFoundError, match="follow"):
        submitter.snapshot("nope")
    with pytest.raises(InstanceNotFoundError):
        await submitter.follow("nope")
    iid = await submitter.submit(chain(2), inputs={"n": 0})
    storage = PostgresStorage(pg_dsn)
    worker = WorkflowExecutor(state_manager=StateMachineManager(storage))
    worker.add_handler("step", lambda ctx: {"n": 1})
    try:
        await worker.start(claim=True, poll=0.02)
        await submitter.wait(iid, timeout=30)
    finally:
        await worker.stop()
        await storage.close()
    view = None
    if importlib.util.find_spec("ipywidgets") is not None:
        from lion_nb.notebook import RunView
        view = RunView(submitter, picture=False)  # follows the next instance started
    # Followed after the fact: its history is read back at once.
    done = await submitter.follow(iid)
    assert done.succeeded
    if view is not None:
        await asyncio.sleep(0.05)  # the view hears of it through the loop
        assert view.instance_id == iid and view.closed and view.instance_state == "succeeded"
    assert [(r.node, r.state) for r in submitter.history.attempts(iid)] == [
        ("s0", "succeeded"), ("s1", "succeeded")]
    assert (await submitter.wait(iid)).results == done.results


# --- stop on a shared database -----------------------------------------------------------

async def test_a_stopped_worker_hands_its_submitted_instances_to_the_others(pg_dsn, submitter,
                                                                            tmp_path):
    """Stop means "let go": another claiming executor continues at once, no resume()."""
    started = asyncio.Event()
    release = asyncio.Event()
    runs = Counter()

    def executor_with(storage):
        ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                              config=ExecutorConfig(lease_ttl=30.0))

        async def step(ctx):
            runs[(ctx.instance_id, ctx.node_name)] += 1
            if ctx.node_name == "s1":
                started.set()
                await release.wait()
            return {"n": 1}

        ex.add_handler("step", step)
        return ex

    iid = await submitter.submit(chain(3), inputs={"n": 0})
    first_storage, second_storage = PostgresStorage(pg_dsn), PostgresStorage(pg_dsn)
    first = executor_with(first_storage)
    second = executor_with(second_storage)
    try:
        await first.start(claim=True, poll=0.02)
        await asyncio.wait_for(started.wait(), 30)
        await first.stop()  # s0 committed, s1 running: cancelled here, handed back
        await second.start(claim=True, poll=0.02)
        release.set()
        # Well within the 30 s lease: nobody waited for an expiry.
        result = await submitter.wait(iid, timeout=10)
    finally:
        await first.stop()
        await second.stop()
        await first_storage.close()
        await second_storage.close()
    assert result.succeeded
    assert runs[(iid, "s0")] == 1 and runs[(iid, "s1")] == 2 and runs[(iid, "s2")] == 1
    assert await submitter.state_manager.storage.keys("queue/") == []


async def test_an_instance_started_here_stays_paused_after_stop_until_resume(pg_dsn):
    storage = PostgresStorage(pg_dsn)
    gate = asyncio.Event()

    async def step(ctx):
        if ctx.node_name == "s1":
            await gate.wait()
        return {"n": 1}

    ex = WorkflowExecutor(state_manager=StateMachineManager(storage))
    ex.add_handler("step", step)
    other_storage = PostgresStorage(pg_dsn)
    other = WorkflowExecutor(state_manager=StateMachineManager(other_storage))
    other.add_handler("step", step)
    try:
        await ex.start()
        iid = await ex.execute_workflow(chain(2))
        while (await settled(storage, iid)).node_states.get("s0") != "succeeded":
            await asyncio.sleep(0.02)
        await ex.stop()
        await other.start(claim=True, poll=0.02)
        await asyncio.sleep(0.5)  # a claimer does not take it: it was never submitted
        assert (await read_instance(storage, iid)).state == "running"
        assert other.instances() == []
        gate.set()
        await other.resume(iid)
        assert (await other.wait(iid, timeout=30)).succeeded
    finally:
        await ex.stop()
        await other.stop()
        await storage.close()
        await other_storage.close()


async def test_a_follower_that_polls_rarely_still_lists_every_attempt(pg_dsn, submitter):
    """A retry that began and failed between two polls still gets its history row."""
    wf = WorkflowBuilder("rare").add_node(Node("x", handler="flaky", retry=2)).build()
    iid = await submitter.submit(wf)
    await submitter.follow(iid, interval=30)  # one read now, the next one far away
    storage = PostgresStorage(pg_dsn)
    worker = WorkflowExecutor(state_manager=StateMachineManager(storage))

    def flaky(ctx):
        if ctx.attempt < 3:
            raise RuntimeError(f"try {ctx.attempt}")
        return {"ok": True}

    worker.add_handler("flaky", flaky)
    try:
        await worker.start(claim=True, poll=0.02)
        await wait_stored_state(storage, iid)
    finally:
        await worker.stop()
        await storage.close()
    remote = await submitter.follow(iid)  # already followed: the last poll's view
    assert remote.state is InstanceState.PENDING
    await submitter.stop()  # ends the follower; follow anew reads it now
    fresh = WorkflowExecutor(state_manager=submitter.state_manager)
    done = await fresh.follow(iid)
    assert done.succeeded and done.attempts["x"] == 3
    assert [(r.attempt, r.state) for r in fresh.history.attempts(iid)] == [
        (1, "failed"), (2, "failed"), (3, "succeeded")]


async def wait_stored_state(storage, iid):
    for _ in range(300):
        header = await storage.get(f"instances/{iid}")
        if header["state"] == "succeeded":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not finished")
