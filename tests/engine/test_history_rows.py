"""History rows kept as columns, attempt ends reported without events, results read lazily
(issue 21: what a run allocates per node)."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from lion_nb.engine import (AttemptRecord, EventKind, ExecEvent, ExecutorConfig, NodeResult,
                            WorkflowExecutor)
from lion_nb.engine import ScheduledTask, SchedulerConfig, WorkflowScheduler
from lion_nb.model import Node, RetryPolicy, WorkflowBuilder
from lion_nb.state import NodeState


def layered(n: int, width: int = 10) -> WorkflowBuilder:
    nodes = [Node(f"n{i}", handler="echo") for i in range(n)]
    builder = WorkflowBuilder("layers").add_nodes(*nodes)
    for i in range(width, n):
        builder.connect(nodes[i - width], nodes[i])
    return builder


@pytest.fixture
async def executor():
    ex = WorkflowExecutor()
    ex.add_handler("echo", lambda ctx: ctx.node_name)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


async def test_a_run_keeps_no_record_object_per_attempt(executor):
    result = await executor.run(layered(300).build())
    gc.collect()
    assert result.succeeded
    assert sum(type(o) is AttemptRecord for o in gc.get_objects()) == 0
    records = executor.history.records
    assert len(records) == 300 and records[0].node == "n0" and records[-1].state == "succeeded"
    first = records[0]
    assert first.queued_at <= first.started_at <= first.finished_at
    assert first.instance_id == result.instance_id and first.workflow == "layers"
    assert [r.node for r in records[:3]] == ["n0", "n1", "n2"]
    assert records == list(records) and records != [] and len(list(iter(records))) == 300


async def test_rows_keep_failures_retries_and_skips(executor):
    calls = {"flaky": 0}

    def flaky(ctx):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first time")
        return 1

    executor.add_handler("flaky", flaky)
    executor.add_handler("skip", lambda ctx: NodeResult.skip(ctx.current_node_id, "no"))
    a = Node("a", handler="flaky", retry=RetryPolicy(max_attempts=2))
    b, c = Node("b", handler="skip"), Node("c", handler="echo")
    result = await executor.run(WorkflowBuilder("w").add_nodes(a, b, c).connect(b, c).build())
    rows = [(r.node, r.attempt, r.state) for r in executor.history.attempts(result.instance_id)]
    assert ("a", 1, "failed") in rows and ("a", 2, "succeeded") in rows
    assert ("b", 1, "skipped") in rows and ("c", 0, "skipped") in rows
    failed = next(r for r in executor.history.records if r.state == "failed")
    assert "first time" in failed.error and failed.duration is not None
    assert executor.history.rows()[0].keys() >= {"node", "state", "duration", "error"}


async def test_forgotten_instances_leave_the_rows(executor):
    definition = layered(20).build()
    ids = [(await executor.run(definition)).instance_id for _ in range(3)]
    executor.history.forget(ids[0])
    assert len(executor.history.records) == 40
    assert {r.instance_id for r in executor.history.records} == set(ids[1:])


async def test_subscribers_get_attempt_ends_as_events_or_as_fields(executor):
    events: list[ExecEvent] = []
    fields: list[tuple] = []
    sub_events = executor.observe.subscribe(events.append, [EventKind.NODE_SUCCEEDED])
    sub_fields = executor.observe.subscribe(lambda ev: None, [EventKind.NODE_SUCCEEDED],
                                            on_attempt=lambda *args: fields.append(args))
    try:
        await executor.run(layered(3).build())
    finally:
        sub_events.close()
        sub_fields.close()
    assert [e.node for e in events] == ["n0", "n1", "n2"]
    assert set(events[0].data) == {"queued_at", "started_at"}
    kind, when, _iid, node, attempt, queued, started, extra = fields[0]
    assert (kind, node, attempt, extra) == (EventKind.NODE_SUCCEEDED, "n0", 1, None)
    assert queued <= started <= when
    assert EventKind.NODE_SUCCEEDED in executor.observe.wanted
    assert EventKind.NODE_QUEUED not in executor.observe.wanted


async def test_a_results_dict_is_made_when_read_and_is_plain_json():
    ex = WorkflowExecutor(config=ExecutorConfig(record_history=False))
    ex.add_handler("echo", lambda ctx: {"name": ctx.node_name})
    await ex.start()
    try:
        result = await ex.run(layered(30).build())
    finally:
        await ex.stop()
    assert type(result.results) is dict and type(result.node_states) is dict
    assert json.loads(json.dumps(result.results))["n29"] == {"name": "n29"}
    assert result.node_states["n0"] is NodeState.SUCCEEDED and result.attempts["n3"] == 1
    assert result["n5"] == {"name": "n5"} and result.results is result.results
    assert len(ex.history.records) == 0


async def test_a_broken_attempt_subscriber_alone_breaks_no_run(executor):
    # The engine calls a lone on_attempt subscriber directly (no stream in between):
    # what it raises is logged, as the stream does for every other subscriber.
    executor.history.detach()

    def broken(*args):
        raise RuntimeError("broken view")

    sub = executor.observe.subscribe(lambda ev: None, [EventKind.NODE_SUCCEEDED],
                                     on_attempt=broken)
    try:
        result = await executor.run(layered(30).build())
    finally:
        sub.close()
    assert result.succeeded and len(result.results) == 30


@pytest.mark.parametrize("policy, objects", [("fifo", 0), ("priority", 201)])
async def test_queued_fifo_nodes_hold_no_task_object(policy, objects):
    ex = WorkflowExecutor(WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=1,
                                                            policy=policy)))
    gate = asyncio.Event()

    async def hold(ctx):
        await gate.wait()

    ex.add_handler("hold", hold)
    ex.add_handler("echo", lambda ctx: ctx.node_name)
    await ex.start()
    try:
        first = await ex.execute_workflow(
            WorkflowBuilder("gate").add_node(Node("gate", handler="hold")).build())
        wide = WorkflowBuilder("wide").add_nodes(*[Node(f"w{i}", handler="echo")
                                                   for i in range(200)]).build()
        second = await ex.execute_workflow(wide)
        for _ in range(20):
            await asyncio.sleep(0)
        assert ex.scheduler.statistics().queued == 200
        assert sum(type(o) is ScheduledTask for o in gc.get_objects()) == objects
        gate.set()
        assert (await ex.wait(first, timeout=10)).succeeded
        assert (await ex.wait(second, timeout=10)).succeeded
    finally:
        await ex.stop()
