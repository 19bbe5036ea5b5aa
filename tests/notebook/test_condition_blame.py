"""A condition that raises is blamed on its edge and source, not the target's handler.

docs/semantics.md: the condition "fails the edge's target with a ConditionError that
names the edge". The target never ran, so the instance's error, the tables, the picture
and its tooltips name the edge and its source as the culprit (issue 18).
"""

from __future__ import annotations

from html.parser import HTMLParser

from lion_nb.errors import ConditionError, WorkflowFailedError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import STATE_STYLE, RunView, attempts_frame, picture


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


async def test_the_attempts_table_shows_the_edge_and_no_attempt_of_the_target(executor):
    await _run(executor)
    row = attempts_frame(executor).set_index("node").loc["bill"]
    assert row["state"] == "failed" and row["attempt"] == 0
    assert "condition on edge 'orders' -> 'bill' raised" in row["error"]
    assert row["duration"] != row["duration"] or row["duration"] is None  # never ran: NaT


class _Tooltips(HTMLParser):
    """The titles of the tooltip boxes laid over a picture's nodes and edge labels."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "span" and dict(attrs).get("class") == "lion-nb-tip":
            self.titles.append(dict(attrs)["title"])


async def test_the_picture_paints_the_edge_and_says_the_target_never_ran(executor, frontend):
    result = await _run(executor)
    pic = picture(result)
    edge = next(line for line in pic.dot.splitlines() if "n0 -> n1" in line)
    failed = STATE_STYLE["failed"]
    assert f'color="{failed.border}"' in edge and "✘ raised" in edge and "penwidth=2" in edge
    assert "no field" in edge  # its tooltip: the error
    bill = next(line for line in pic.dot.splitlines() if line.strip().startswith("n1 "))
    assert "never ran: condition from orders raised" in bill
    plain = next(line for line in pic.dot.splitlines() if "n0 -> n2" in line)
    assert failed.border not in plain
    # Hovering the edge's label shows the error (a tooltip of its own, after the nodes').
    tips = _Tooltips()
    tips.feed(pic.mimebundle()["text/html"])
    assert len(tips.titles) == 4 and "no field 'total'" in tips.titles[3]
    # The live view's final picture says the same.
    view = RunView(executor, result.instance_id)
    await view.drawn()
    assert "✘ raised" in view.svg and "never ran: condition from orders raised" in view.svg
