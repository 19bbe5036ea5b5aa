"""What a large graph does not allocate per node or edge until it is read (issue 21)."""

from __future__ import annotations

import gc
import json

import pytest

from lion_nb.errors import CycleError, DuplicateIdError
from lion_nb.model import Edge, EdgeId, Node, NodeId, WorkflowBuilder, WorkflowDefinition


def live(kind: type) -> int:
    """Objects of exactly this type the collector tracks now."""
    gc.collect()
    return sum(type(o) is kind for o in gc.get_objects())


def chain(n: int) -> tuple[list[Node], WorkflowBuilder]:
    nodes = [Node(f"n{i}") for i in range(n)]
    builder = WorkflowBuilder("chain").add_nodes(*nodes)
    for a, b in zip(nodes, nodes[1:]):
        builder.connect(a, b)
    return nodes, builder


def test_connect_and_build_make_no_edge_object_per_edge():
    before = live(Edge)
    _, builder = chain(500)
    definition = builder.build()
    assert live(Edge) == before  # the definition keeps ints, not 499 Edge objects
    edges = definition.edges  # made when read, once
    assert len(edges) == 499 and live(Edge) == before + 499
    assert definition.edges is edges
    assert [(e.source, e.target) for e in edges[:2]] == [
        (definition.nodes[0].id, definition.nodes[1].id),
        (definition.nodes[1].id, definition.nodes[2].id)]


def test_lazily_made_edge_ids_are_stable_across_reads_and_builds():
    _, builder = chain(5)
    first, second = builder.build(), builder.build()
    ids = [e.id for e in first.edges]
    assert len(set(ids)) == 4 and all(isinstance(i, EdgeId) for i in ids)
    assert [first.edge_id(k) for k in range(4)] == ids
    assert [e.id for e in second.edges] == ids  # one builder names its edges one way
    # a definition read back from JSON keeps them
    assert [e.id for e in WorkflowDefinition.from_json(first.to_json()).edges] == ids


def test_an_edge_id_of_another_edge_is_refused():
    nodes, builder = chain(3)
    taken = builder.build().edges[0].id
    with pytest.raises(DuplicateIdError) as err:
        builder.add_edge(Edge(taken, nodes[0].id, nodes[2].id))
    assert err.value.id == taken


def test_cycle_error_names_the_closing_edge_by_its_id():
    nodes, builder = chain(4)
    builder.connect(nodes[3], nodes[1])
    with pytest.raises(CycleError) as err:
        builder.build()
    assert err.value.cycle == ["n3", "n1", "n2", "n3"]
    assert err.value.edge_id.startswith("e-")


def test_node_ids_are_drawn_when_first_read():
    nodes, builder = chain(300)
    definition = builder.build()
    definition.fingerprint()
    definition.topological_order()
    assert all(n.assigned_id is None for n in nodes)  # nothing read an id: none was made
    node = nodes[7]
    assert node.assigned_id is None
    assert node.id == node.id and node.assigned_id == node.id  # drawn once, then kept
    assert definition.node(node.id) is node and definition.index[node.id] == 7
    assert len({n.id for n in nodes}) == 300


def test_ids_given_or_read_before_adding_are_checked_for_duplicates():
    a, b = Node("a"), Node(NodeId("fixed"), "b")
    builder = WorkflowBuilder("w").add_nodes(a, b)
    with pytest.raises(DuplicateIdError):
        builder.add_node(Node(NodeId("fixed"), "c"))
    c = Node("c")
    builder.add_node(c).add_edge(Edge(a.id, c.id))  # ids read after adding: found
    builder.connect(a.id, b).connect("b", c)
    assert [(e.source, e.target) for e in builder.build().edges] == [
        (a.id, c.id), (a.id, b.id), (b.id, c.id)]


def test_a_definition_built_from_edges_still_works_with_the_public_constructor():
    a, b = Node("a"), Node("b")
    definition = WorkflowDefinition("w", (a, b), (Edge(a, b, condition="result > 1"),))
    assert definition.conditions[0] is definition.edges[0].condition
    assert definition.successors("a") == [b]
    assert json.loads(definition.to_json())["edges"][0]["condition"] == "result > 1"


def test_an_edge_refused_after_build_leaves_the_built_definition_alone():
    a, b, c = Node("a"), Node("b"), Node("c")
    builder = WorkflowBuilder("w").add_nodes(a, b, c).connect(a, b)
    first = builder.build()
    with pytest.raises(DuplicateIdError):
        builder.connect(a, b)
    builder.connect(b, c)
    assert [(e.source, e.target) for e in first.edges] == [(a.id, b.id)]
    assert len(builder.build().edges) == 2
