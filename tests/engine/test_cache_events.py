"""Events of reused nodes (issue 19): one NODES_REUSED per batch for subscribers that ask,
one NODE_SUCCEEDED per node (reason "reused") for every other one, in the order nodes end.
"""

from __future__ import annotations

import pytest

from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor
from lion_nb.engine import EventKind as K
from lion_nb.model import Node, WorkflowBuilder


def chain(*names):
    nodes = [Node(n) for n in names]
    b = WorkflowBuilder("etl").add_nodes(*nodes)
    for x, y in zip(nodes, nodes[1:]):
        b.connect(x, y)
    return b.build()


@pytest.fixture
async def executor():
    ex = WorkflowExecutor(config=ExecutorConfig(cache=Cache()))
    for name in "abcd":
        async def h(ctx, name=name):
            return None if name in "ab" else {"node": name}
        ex.add_handler(name, h)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def node_events(events, iid):
    return [(e.kind, e.node, (e.data or {}).get("reason"), (e.data or {}).get("nodes"))
            for e in events if e.instance_id == iid and e.kind is not K.INSTANCE_STARTED
            and e.kind is not K.INSTANCE_FINISHED]


async def test_a_batch_subscriber_gets_one_event_and_others_one_per_node(executor):
    flow = chain("a", "b", "c", "d")
    await executor.run(flow)
    batched, every, succeeded = [], [], []
    with executor.observe.subscribe(batched.append, (K.NODES_REUSED, K.NODE_SUCCEEDED)), \
            executor.observe.subscribe(every.append), \
            executor.observe.subscribe(succeeded.append, (K.NODE_SUCCEEDED,)):
        result = await executor.run(flow)
    assert result.reused == ["a", "b", "c", "d"]
    iid = result.instance_id
    assert node_events(batched, iid) == [(K.NODES_REUSED, None, None, ["a", "b", "c", "d"])]
    singles = [(K.NODE_SUCCEEDED, n, "reused", None) for n in "abcd"]
    assert node_events(every, iid) == singles  # a subscriber to everything: no batch kind
    assert node_events(succeeded, iid) == singles
    assert {e.attempt for e in every if e.instance_id == iid and e.node} == {0}
    rows = [r for r in executor.history.attempts(iid)]
    assert [(r.node, r.state, r.attempt, r.reason) for r in rows] == [
        (n, "reused", 0, "reused") for n in "abcd"]


async def test_reused_nodes_are_reported_before_the_node_that_runs_after_them(executor):
    flow = chain("a", "b", "c", "d")
    await executor.run(flow)
    batched, every = [], []
    with executor.observe.subscribe(batched.append, (K.NODES_REUSED, K.NODE_QUEUED,
                                                     K.NODE_SUCCEEDED)), \
            executor.observe.subscribe(every.append):
        result = await executor.run(flow, rerun=["c"])
    iid = result.instance_id
    assert node_events(batched, iid) == [
        (K.NODES_REUSED, None, None, ["a", "b"]),
        (K.NODE_QUEUED, "c", None, None), (K.NODE_SUCCEEDED, "c", "forced", None),
        (K.NODE_QUEUED, "d", None, None), (K.NODE_SUCCEEDED, "d", "forced", None)]
    kinds = [(kind, node) for kind, node, _, _ in node_events(every, iid)]
    assert kinds[:3] == [(K.NODE_SUCCEEDED, "a"), (K.NODE_SUCCEEDED, "b"), (K.NODE_QUEUED, "c")]
    assert [r.state for r in executor.history.attempts(iid)] == [
        "reused", "reused", "succeeded", "succeeded"]


async def test_a_detail_rides_in_the_batch_and_in_the_single_events(executor):
    flow = chain("a", "b", "c")
    await executor.run(flow)
    batched, every = [], []
    with executor.observe.subscribe(batched.append, (K.NODES_REUSED,)), \
            executor.observe.subscribe(every.append):
        result = await executor.run(flow, start_from="c")
    iid = result.instance_id
    (batch,) = [e for e in batched if e.instance_id == iid]
    assert batch.data == {"nodes": ["a", "b"],
                          "details": {"a": "from the last run", "b": "from the last run"}}
    details = [e.data.get("reason_detail") for e in every
               if e.instance_id == iid and e.kind is K.NODE_SUCCEEDED and e.attempt == 0]
    assert details == ["from the last run"] * 2
    rows = {r.node: r.reason_detail for r in executor.history.attempts(iid)}
    assert rows["a"] == rows["b"] == "from the last run"


async def test_a_subscriber_that_raises_on_a_batch_breaks_nothing(executor, caplog):
    flow = chain("a", "b")
    await executor.run(flow)

    def broken(event):
        raise RuntimeError("view bug")
    with executor.observe.subscribe(broken, (K.NODES_REUSED,)), \
            executor.observe.subscribe(broken, (K.NODE_SUCCEEDED,)):
        result = await executor.run(flow)
    assert result.succeeded and result.reused == ["a", "b"]
    assert "view bug" in caplog.text
