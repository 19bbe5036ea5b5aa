"""A condition that raises is blamed on its edge and source, not the target's handler.

docs/semantics.md: the condition "fails the edge's target with a ConditionError that
names the edge". The target never ran, so the instance's error, the tables, the picture
and its tooltips name the edge and its source as the culprit (issue 18).
"""

from __future__ import annotations

from lion_nb.errors import ConditionError, WorkflowFailedError
from lion_nb.model import Node, WorkflowBuilder


def _workflow():
    a, b, c = Node("orders"), Node("bill"), Node("ship")
    return (WorkflowBuilder("shop").add_nodes(a, b, c)
            .connect(a, b, "result.total > 3").connect(a, c).build())


async def _run(executor):
    executor.add_handler("orders", lambda ctx: {"count": 1})  # no "total" field
    executor.add_handler("bill", lambda ctx: "billed")
    executor.add_handler("ship", lambda ctx: "shipped")
    return await executor.run(_workflow())


async def test_the_instance_error_names_the_edge_and_its_source(executor):
    result = await _run(executor)
    error = result.error
    assert isinstance(error, WorkflowFailedError)
    cause = result.exceptions["bill"]
    assert isinstance(cause, ConditionError) and error.__cause__ is cause
    assert (error.node, error.source, error.edge) == ("bill", "orders", cause.edge)
    assert "failed at the condition on edge 'orders' -> 'bill' ('bill' never ran)" in str(error)
    assert "no field 'total'" in str(error) and "failed at node" not in str(error)
    assert result.node_states["ship"].value == "succeeded"  # the source's other edges


async def test_a_handler_failure_still_names_the_node_and_no_edge(executor):
    def bill(ctx):
        raise ValueError("card declined")

    executor.add_handler("orders", lambda ctx: {"total": 10})
    executor.add_handler("bill", bill)
    executor.add_handler("ship", lambda ctx: None)
    result = await executor.run(_workflow())
    assert (result.error.node, result.error.source, result.error.edge) == ("bill", None, None)
    assert "failed at node 'bill'" in str(result.error)
