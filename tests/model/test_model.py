"""Model: builder validation, conditions, topology and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from lion_nb.errors import (ConditionError, CycleError, DefinitionError, DuplicateIdError,
                            RequirementError, SerializationError, UnknownNodeError)
from lion_nb.model import (Condition, Edge, EdgeId, Node, NodeId, Priority, RetryPolicy,
                           TriggerRule, WorkflowBuilder, WorkflowDefinition)


def diamond():
    a, b, c, d = Node("a"), Node("b"), Node("c"), Node("d")
    wf = (WorkflowBuilder("diamond").add_nodes(a, b, c, d)
          .connect(a, b).connect(a, c, "result.go").connect(b, d).connect(c, d).build())
    return wf, (a, b, c, d)


def test_node_shorthand_and_seed_forms_are_equivalent():
    nid = NodeId.new()
    full, short = Node(nid, "Start"), Node("Start")
    assert full.id == nid and full.name == short.name == "Start"
    assert isinstance(short.id, NodeId) and short.id != full.id
    assert full.handler == "Start"
    e1, e2 = Edge(EdgeId.new(), full.id, short.id), Edge(full.id, short.id)
    assert (e1.source, e1.target) == (e2.source, e2.target)


def test_build_rejects_cycle_and_names_it_from_the_edge_added_last():
    a, b, c = Node("a"), Node("b"), Node("c")
    builder = WorkflowBuilder("w").add_nodes(a, b, c).connect(a, b).connect(b, c)
    builder.connect(c, a)  # found once, by build(), so edge order costs nothing
    with pytest.raises(CycleError) as info:
        builder.build()
    assert info.value.cycle == ["c", "a", "b", "c"]
    assert "edge c -> a closes the cycle c -> a -> b -> c" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_cycle_behind_a_tail_and_before_a_branch_is_still_named():
    names = "abcdefg"
    nodes = {n: Node(n) for n in names}
    builder = WorkflowBuilder("w").add_nodes(*nodes.values())
    for s, t in ["ab", "bc", "cd", "de", "ec", "ef", "bg"]:  # c -> d -> e -> c
        builder.connect(s, t)
    with pytest.raises(CycleError) as info:
        builder.build()
    assert info.value.cycle == ["e", "c", "d", "e"]


def test_edges_child_first_build_the_same_definition_as_parents_first():
    nodes = [Node(f"n{i}") for i in range(200)]
    forward = WorkflowBuilder("w").add_nodes(*nodes)
    backward = WorkflowBuilder("w").add_nodes(*nodes)
    for i in range(199):
        forward.connect(nodes[i], nodes[i + 1])
    for i in reversed(range(199)):
        backward.connect(nodes[i], nodes[i + 1])
    assert [n.name for n in backward.build().topological_order()] == \
        [n.name for n in forward.build().topological_order()]


def test_connect_accepts_node_names_and_names_an_unknown_one():
    builder = WorkflowBuilder("w").add_nodes(Node("a"), Node("b"))
    wf = builder.connect("a", "b").build()
    assert [n.name for n in wf.successors("a")] == ["b"]
    with pytest.raises(UnknownNodeError, match="'typo' is neither a node") as info:
        builder.connect("a", "typo")
    assert info.value.node_id == "typo"


def test_self_loop_is_a_cycle():
    a = Node("a")
    with pytest.raises(CycleError):
        WorkflowBuilder("w").add_node(a).connect(a, a)


def test_duplicate_ids_and_names_rejected():
    a = Node("a")
    with pytest.raises(DuplicateIdError):
        WorkflowBuilder("w").add_node(a).add_node(a)
    with pytest.raises(DuplicateIdError, match="name 'a'"):
        WorkflowBuilder("w").add_node(a).add_node(Node("a"))
    b = Node("b")
    edge = Edge(a.id, b.id)
    builder = WorkflowBuilder("w").add_nodes(a, b).add_edge(edge)
    with pytest.raises(DuplicateIdError):
        builder.add_edge(edge)


def test_unknown_endpoint_names_the_node():
    a = Node("a")
    ghost = NodeId.new()
    with pytest.raises(UnknownNodeError) as info:
        WorkflowBuilder("w").add_node(a).add_edge(Edge(a.id, ghost))
    assert info.value.node_id == ghost


def test_empty_workflow_and_bad_node_values_rejected():
    with pytest.raises(DefinitionError):
        WorkflowBuilder("w").build()
    with pytest.raises(DefinitionError):
        Node("")
    with pytest.raises(DefinitionError, match="timeout"):
        Node("x", timeout=-1)
    with pytest.raises(DefinitionError):
        Node("x", retry=-2)


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "result.__class__", "open('x')", "len(result)",
    "[x for x in result]", "lambda: 1", "other > 1", "result[result]", "",
])
def test_condition_rejects_calls_attributes_imports(expr):
    with pytest.raises(ConditionError):
        Condition(expr)


def test_condition_rejected_at_build_time_through_edge():
    a, b = Node("a"), Node("b")
    with pytest.raises(ConditionError):
        WorkflowBuilder("w").add_nodes(a, b).connect(a, b, "result.x()")


def test_condition_evaluates_fields_and_logic():
    cond = Condition("result.total > 100 and result.ok")
    assert cond.evaluate({"total": 150, "ok": True})
    assert not cond.evaluate({"total": 150, "ok": False})
    assert Condition("result['a b'] in ('x', 'y')").evaluate({"a b": "y"})
    assert Condition("not result").evaluate(0)
    assert Condition("result.items[0] == -1").evaluate({"items": [-1]})
    with pytest.raises(ConditionError, match="no field 'total'"):
        cond.evaluate({"ok": True})
    assert Condition(lambda r: r > 1).evaluate(2)


def test_topology_roots_leaves_order():
    wf, (a, b, c, d) = diamond()
    assert [n.name for n in wf.roots()] == ["a"]
    assert [n.name for n in wf.leaves()] == ["d"]
    order = [n.name for n in wf.topological_order()]
    assert order.index("a") < order.index("b") < order.index("d")
    assert {n.name for n in wf.predecessors("d")} == {"b", "c"}
    assert wf.node(b.id) is b and wf.node("b") is b


def test_json_round_trip_keeps_structure_and_settings():
    a = Node("a", retry=RetryPolicy(3, backoff=0.5), timeout=2.0, priority=Priority.HIGH,
             deadline=5.0, config={"k": [1, 2]}, requires=["db:read"],
             trigger_rule=TriggerRule.ALL_DONE)
    b = Node("b")
    wf = WorkflowBuilder("w", metadata={"owner": "team"}).add_nodes(a, b) \
        .connect(a, b, "result.n >= 2").build()
    back = WorkflowDefinition.from_json(wf.to_json())
    assert back.id == wf.id and back.fingerprint() == wf.fingerprint()
    a2 = back.node("a")
    assert (a2.retry, a2.timeout, a2.priority, a2.deadline, dict(a2.config), a2.requires,
            a2.trigger_rule) == (a.retry, 2.0, Priority.HIGH, 5.0, {"k": [1, 2]},
                                 ("db:read",), TriggerRule.ALL_DONE)
    assert back.edges[0].condition.expression == "result.n >= 2"


def test_callable_condition_says_so_when_saved():
    a, b = Node("a"), Node("b")
    wf = WorkflowBuilder("w").add_nodes(a, b).connect(a, b, lambda r: True).build()
    with pytest.raises(SerializationError) as info:
        wf.to_dict()
    assert info.value.field == "edges[0].condition"


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.pop("nodes"), "nodes"),
    (lambda d: d["nodes"][1].pop("name"), "nodes[1].name"),
    (lambda d: d["edges"][0].update(target="n-nowhere"), "edges[0]"),
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d["nodes"][0].update(priority="URGENT"), "nodes[0]"),
])
def test_malformed_document_names_the_field(mutate, field):
    wf, _ = diamond()
    doc = wf.to_dict()
    mutate(doc)
    with pytest.raises(SerializationError) as info:
        WorkflowDefinition.from_dict(doc)
    assert info.value.field == field


def test_malformed_json_text():
    with pytest.raises(SerializationError):
        WorkflowDefinition.from_json("{not json")
    with pytest.raises(SerializationError):
        WorkflowDefinition.from_json(json.dumps({"format": "other"}))


def test_nodes_and_edges_are_immutable():
    a = Node("a")
    with pytest.raises(AttributeError):
        a.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize("options,field", [
    ({"requires": 3}, "requires"), ({"resources": 3}, "resources"),
    ({"resources": ["gpu", 1]}, "resources"), ({"config": 3}, "config"),
    ({"handler": 3}, "handler"), ({"handler": ""}, "handler"), ({"retry": "x"}, "retry"),
    ({"timeout": True}, "timeout"), ({"deadline": False}, "deadline"),
])
def test_node_options_of_the_wrong_type_are_definition_errors_naming_node_and_field(options,
                                                                                    field):
    with pytest.raises(DefinitionError) as info:
        Node("load", **options)
    assert info.value.node == "load" and info.value.field == field
    assert "'load'" in str(info.value)


def test_one_resource_may_be_given_as_a_string():
    assert Node("train", resources="gpu").resources == ("gpu",)
    assert Node("train", resources=["gpu", "ssd"]).resources == ("gpu", "ssd")


def test_nodes_declaring_the_same_requirements_share_them_and_typos_still_fail():
    # The dispatch gate looks requirements up by tuple: one shared tuple per set of
    # requirements is matched by identity.
    a = Node("a", requires=["db:read:orders/*", "mail:publish"])
    b = Node("b", requires=("db:read:orders/*", "mail:publish"))
    assert a.requires == ("db:read:orders/*", "mail:publish") and a.requires is b.requires
    assert Node("c", requires="db:read:orders/*").requires == ("db:read:orders/*",)
    with pytest.raises(DefinitionError, match="requires"):
        Node("d", requires=["db:read:orders/*", 7])
    with pytest.raises(RequirementError):
        Node("e", requires=["db:read:orders/**x", "db:read:orders/*"])
    loaded = WorkflowDefinition.from_json(WorkflowBuilder("w").add_nodes(a).build().to_json())
    assert loaded.nodes[0].requires is a.requires
