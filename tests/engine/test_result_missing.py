"""``result[name]`` for a node without a result says why, naming the culprit."""

from __future__ import annotations

import pytest

from lion_nb.errors import LionError, NoResultError
from lion_nb.model import Edge, Node, WorkflowBuilder


async def test_missing_result_names_the_failed_upstream_node(executor):
    load, save, note = Node("load"), Node("save"), Node("note")
    flow = (WorkflowBuilder("etl").add_nodes(load, save, note)
            .add_edge(Edge(load.id, save.id))
            .add_edge(Edge(load.id, note.id, condition="result.rows > 10")).build())

    def boom(ctx):
        raise ValueError("disk full")

    executor.add_handler("load", boom)
    executor.add_handler("save", lambda ctx: 1)
    executor.add_handler("note", lambda ctx: 1)
    result = await executor.run(flow)
    with pytest.raises(NoResultError) as caught:
        result["save"]
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, LionError)
    assert caught.value.node == "save" and caught.value.state == "upstream_failed"
    assert "depends on failed (load)" in str(caught.value)
    with pytest.raises(NoResultError, match="it failed: .*disk full"):
        result["load"]
    with pytest.raises(NoResultError, match="has no node 'nope'"):
        result["nope"]


async def test_missing_result_of_a_skipped_node_says_it_was_skipped(executor):
    load, note = Node("load"), Node("note")
    flow = (WorkflowBuilder("etl").add_nodes(load, note)
            .add_edge(Edge(load.id, note.id, condition="result.rows > 10")).build())
    executor.add_handler("load", lambda ctx: {"rows": 3})
    executor.add_handler("note", lambda ctx: 1)
    result = await executor.run(flow)
    assert result["load"] == {"rows": 3}
    with pytest.raises(NoResultError, match="skipped") as caught:
        result["note"]
    assert caught.value.state == "skipped"
