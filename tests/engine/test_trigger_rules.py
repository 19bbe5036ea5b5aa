"""Every trigger rule x every combination of input outcomes, next to Airflow's decision.

Inputs end as success, failed, skipped, upstream_failed, or "inactive" (the source
succeeded but the edge's condition is false). ``airflow()`` transcribes Airflow's
``TriggerRuleDep`` (all inputs done) with an inactive edge read as a skipped
upstream; ``ours()`` is that decision with the one rule where we differ: a node
with a false input edge and no active one does not run (Airflow's branch operator
skips the children it did not choose, whatever their rule). Pairs run in both
orders, so the tests also show that an outcome never depends on which input ends
first.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from lion_nb.engine import NodeResult, WorkflowExecutor
from lion_nb.errors import ConditionError
from lion_nb.model import Node, TriggerRule, WorkflowBuilder, WorkflowDefinition
from lion_nb.state import NodeState

OUTCOMES = ("success", "failed", "skipped", "upstream_failed", "inactive")
RULES = [r for r in TriggerRule if r is not TriggerRule.ALWAYS]
COMBOS = [(o,) for o in OUTCOMES] + list(itertools.product(OUTCOMES, repeat=2))


def airflow(rule: str, inputs: tuple[str, ...]) -> str:
    """Airflow's decision once every upstream is done ("run", "skipped", "upstream_failed")."""
    ups = ["skipped" if o == "inactive" else o for o in inputs]
    n, s, f = len(ups), ups.count("success"), ups.count("failed")
    uf, k = ups.count("upstream_failed"), ups.count("skipped")
    new = {
        "all_success": "upstream_failed" if uf or f else "skipped" if k else None,
        "all_failed": "skipped" if s or k else None,
        "all_done": None,
        "all_done_min_one_success": "skipped" if k else "upstream_failed" if not s else None,
        "all_skipped": "skipped" if s or f or uf else None,
        "one_success": "skipped" if k == n else "upstream_failed" if s <= 0 else None,
        "one_failed": "skipped" if not (f or uf) else None,
        "one_done": "skipped" if not (f or s) else None,
        "none_failed": "upstream_failed" if uf or f else None,
        "none_failed_min_one_success": ("upstream_failed" if uf or f
                                        else "skipped" if k == n else None),
        "none_skipped": "skipped" if k else None,
    }[rule]
    return new or "run"


def ours(rule: str, inputs: tuple[str, ...]) -> str:
    """lion_nb's decision: Airflow's, but a false edge without an active one skips."""
    theirs = airflow(rule, inputs)
    if theirs == "run" and "inactive" in inputs and "success" not in inputs:
        return "skipped"
    return theirs


_STATE = {"run": NodeState.SUCCEEDED, "skipped": NodeState.SKIPPED,
          "upstream_failed": NodeState.UPSTREAM_FAILED}


async def outcome(ctx):
    await asyncio.sleep(ctx.config["delay"])
    kind = ctx.config["outcome"]
    if kind == "failed":
        raise RuntimeError("planned failure")
    if kind == "skipped":
        return NodeResult.skip(ctx.current_node_id)
    return {"go": kind != "inactive"}


async def target(ctx):
    return sorted(ctx.results)


def matrix(rule: TriggerRule, orders: list[tuple[str, ...]]) -> WorkflowDefinition:
    """One target per combination, its inputs ending in the listed order."""
    b = WorkflowBuilder(f"matrix-{rule.value}")
    for c, combo in enumerate(orders):
        t = Node(f"t{c}", handler="target", trigger_rule=rule)
        b.add_node(t)
        for j, kind in enumerate(combo):
            delay = 0.002 + 0.01 * j  # the j-th input ends j-th
            if kind == "upstream_failed":
                root = Node(f"t{c}.{j}.root", handler="outcome",
                            config={"outcome": "failed", "delay": delay})
                src = Node(f"t{c}.{j}", handler="outcome",
                           config={"outcome": "success", "delay": 0})
                b.add_nodes(root, src).connect(root, src)
            else:
                src = Node(f"t{c}.{j}", handler="outcome",
                           config={"outcome": kind, "delay": delay})
                b.add_node(src)
            cond = "result.go" if kind == "inactive" else None
            b.connect(src, t, cond)
    return b.build()


@pytest.fixture
async def ex():
    executor = WorkflowExecutor()
    executor.add_handler("outcome", outcome)
    executor.add_handler("target", target)
    await executor.start()
    try:
        yield executor
    finally:
        await executor.stop()


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.value)
async def test_every_rule_against_every_input_combination_in_both_orders(ex, rule):
    result = await ex.run(matrix(rule, COMBOS))
    wrong = []
    for c, combo in enumerate(COMBOS):
        expected = ours(rule.value, combo)
        got = result.node_states[f"t{c}"]
        if got is not _STATE[expected]:
            wrong.append(f"{combo}: got {got.value}, expected {expected} "
                         f"(Airflow: {airflow(rule.value, combo)})")
        if got is NodeState.SUCCEEDED:  # it ran: it is not in the errors
            assert f"t{c}" not in result.errors
    assert not wrong, "\n".join(wrong)


def test_we_differ_from_airflow_only_where_a_false_edge_is_the_only_choice():
    differ = {(r.value, c) for r in RULES for c in COMBOS
              if ours(r.value, c) != airflow(r.value, c)}
    assert differ and all("inactive" in c and "success" not in c for _, c in differ)
    assert {r for r, _ in differ} == {"all_done", "all_skipped", "one_failed", "one_done",
                                      "none_failed"}


async def test_the_default_rule_is_none_failed_min_one_success(ex):
    assert Node("x").trigger_rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    result = await ex.run(matrix(TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                                 [("success", "inactive"), ("inactive", "inactive")]))
    assert result.node_states["t0"] is NodeState.SUCCEEDED  # the branch join runs
    assert result.node_states["t1"] is NodeState.SKIPPED  # no branch chose it


def race(rule: TriggerRule, fast_outcome: str) -> WorkflowDefinition:
    """fast -> t <- slow, where slow runs until the test opens the gate."""
    fast = Node("fast", handler="outcome", config={"outcome": fast_outcome, "delay": 0})
    slow, t = Node("slow"), Node("t", handler="target", trigger_rule=rule)
    return WorkflowBuilder("race").add_nodes(fast, slow, t).connect(fast, t) \
        .connect(slow, t).build()


@pytest.fixture
def gate(ex):
    """The event the "slow" handler waits for."""
    event = asyncio.Event()

    async def slow(ctx):
        await event.wait()
        return 1

    ex.add_handler("slow", slow)
    return event


async def state_soon(ex, iid, node, wanted):
    for _ in range(100):
        if ex.snapshot(iid).node_states[node] is wanted:
            break
        await asyncio.sleep(0.005)
    return ex.snapshot(iid).node_states[node]


@pytest.mark.parametrize("rule, fast_outcome, decided", [
    (TriggerRule.ONE_SUCCESS, "success", NodeState.SUCCEEDED),
    (TriggerRule.ONE_DONE, "success", NodeState.SUCCEEDED),
    (TriggerRule.ONE_FAILED, "failed", NodeState.SUCCEEDED),
    (TriggerRule.ONE_DONE, "failed", NodeState.SUCCEEDED),
    (TriggerRule.ALL_SUCCESS, "failed", NodeState.UPSTREAM_FAILED),
    (TriggerRule.NONE_FAILED, "failed", NodeState.UPSTREAM_FAILED),
    (TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, "failed", NodeState.UPSTREAM_FAILED),
    (TriggerRule.ALL_FAILED, "success", NodeState.SKIPPED),
    (TriggerRule.NONE_SKIPPED, "skipped", NodeState.SKIPPED),
])
async def test_rules_that_can_decide_early_do_not_wait_for_the_slow_input(
        ex, gate, rule, fast_outcome, decided):
    iid = await ex.execute_workflow(race(rule, fast_outcome))
    assert await state_soon(ex, iid, "t", decided) is decided
    assert ex.snapshot(iid).node_states["slow"] is NodeState.RUNNING
    gate.set()
    await ex.wait(iid)


async def test_all_success_waits_for_every_input_before_skipping(ex, gate):
    """A skip could still turn into upstream_failed: the decision waits for the rest."""
    iid = await ex.execute_workflow(race(TriggerRule.ALL_SUCCESS, "skipped"))
    await asyncio.sleep(0.05)
    assert ex.snapshot(iid).node_states["t"] is NodeState.PENDING
    gate.set()
    assert (await ex.wait(iid)).node_states["t"] is NodeState.SKIPPED


async def test_always_runs_at_once_without_waiting_for_its_inputs(ex, gate):
    iid = await ex.execute_workflow(race(TriggerRule.ALWAYS, "success"))
    assert await state_soon(ex, iid, "t", NodeState.SUCCEEDED) is NodeState.SUCCEEDED
    assert ex.snapshot(iid).node_states["slow"] is NodeState.RUNNING
    gate.set()
    assert (await ex.wait(iid)).succeeded


async def test_a_raising_condition_fails_its_target_naming_the_edge(ex):
    """The source keeps its success; the target fails whatever its rule, never silently."""
    def boom(result):
        raise KeyError("missing")

    for rule in (TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, TriggerRule.ALL_DONE):
        src = Node("src", handler="outcome", config={"outcome": "success", "delay": 0})
        t = Node("t", handler="target", trigger_rule=rule)
        result = await ex.run(WorkflowBuilder("w").add_nodes(src, t).connect(src, t, boom)
                              .build())
        assert result.node_states["src"] is NodeState.SUCCEEDED
        assert result.node_states["t"] is NodeState.FAILED and not result.succeeded
        error = result.exceptions["t"]
        assert isinstance(error, ConditionError)
        assert (error.source, error.target) == ("src", "t") and error.edge
        assert list(result.errors) == ["t"]


async def test_succeeded_nodes_never_appear_in_errors(ex):
    src = Node("src", handler="outcome", config={"outcome": "failed", "delay": 0})
    cleanup = Node("cleanup", handler="target", trigger_rule=TriggerRule.ALL_DONE)
    result = await ex.run(WorkflowBuilder("w").add_nodes(src, cleanup).connect(src, cleanup)
                          .build())
    assert result.node_states["cleanup"] is NodeState.SUCCEEDED
    assert list(result.errors) == ["src"]


def test_format_1_documents_keep_their_old_meaning_and_format_2_says_what_it_means():
    src, t = Node("src"), Node("t", trigger_rule=TriggerRule.ONE_SUCCESS)
    doc = WorkflowBuilder("w").add_nodes(src, t).connect(src, t).build().to_dict()
    assert doc["format_version"] == 2 and doc["nodes"][1]["trigger_rule"] == "one_success"
    assert WorkflowDefinition.from_dict(doc).node("t").trigger_rule is TriggerRule.ONE_SUCCESS
    # Format 1 called the default join "one_success": it loads as that join, renamed.
    old = {**doc, "format_version": 1}
    assert WorkflowDefinition.from_dict(old).node("t").trigger_rule \
        is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    old["nodes"] = [{k: v for k, v in n.items() if k != "trigger_rule"} for n in doc["nodes"]]
    assert WorkflowDefinition.from_dict(old).node("t").trigger_rule \
        is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
