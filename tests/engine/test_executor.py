"""Executor: join rule, retries, timeouts, threads, failures, cancellation, history."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from lion_nb.clock import FakeClock
from lion_nb.engine import ExecutorConfig, NodeResult, WorkflowExecutor
from lion_nb.engine import SchedulerConfig, WorkflowScheduler
from lion_nb.errors import (CapabilityDeniedError, ConfigError, ExecutorStoppedError,
                            HandlerNotFoundError, IllegalTransitionError,
                            InstanceNotFoundError, NodeFailedError, NodeTimeoutError,
                            ResultNotSerializableError, WorkflowFailedError)
from lion_nb.model import Node, RetryPolicy, TriggerRule, WorkflowBuilder
from lion_nb.state import InstanceState, NodeState, NodeStates, check_instance_transition


def build(*edges, nodes=None):
    """Workflow from (src, dst[, condition]) name tuples; nodes made on demand."""
    nodes = dict(nodes or {})
    for e in edges:
        for name in e[:2]:
            nodes.setdefault(name, Node(name, handler="echo"))
    b = WorkflowBuilder("t").add_nodes(*nodes.values())
    for e in edges:
        b.connect(nodes[e[0]], nodes[e[1]], e[2] if len(e) > 2 else None)
    return b.build()


async def echo(ctx):
    return {"node": ctx.node_name, "inputs": sorted(ctx.results)}


async def test_seed_chain_passes_results_along(executor):
    ran = []

    async def start(ctx):
        ran.append(ctx.node_name)
        return NodeResult.success(ctx.current_node_id, {"message": "Started"})

    async def process(ctx):
        ran.append(ctx.node_name)
        return {"seen": ctx.results["Start"]["message"]}

    await executor.register_node_handler("Start", start)
    await executor.register_node_handler("Process", process)
    wf = build(("Start", "Process"), nodes={"Start": Node("Start"), "Process": Node("Process")})
    result = await executor.run(wf)
    assert result.state is InstanceState.SUCCEEDED
    assert result["Process"] == {"seen": "Started"} and ran == ["Start", "Process"]


async def test_conditional_edge_false_skips_and_skip_propagates(executor):
    executor.add_handler("echo", echo)
    wf = build(("a", "b", "result.node == 'nope'"), ("b", "c"), ("a", "d"))
    result = await executor.run(wf)
    assert result.node_states == {"a": NodeState.SUCCEEDED, "b": NodeState.SKIPPED,
                                  "c": NodeState.SKIPPED, "d": NodeState.SUCCEEDED}
    assert result.state is InstanceState.SUCCEEDED


async def test_join_runs_when_one_incoming_edge_is_active(executor):
    executor.add_handler("echo", echo)
    wf = build(("a", "b", "result.node == 'a'"), ("a", "c", "result.node == 'x'"),
               ("b", "d"), ("c", "d"))
    result = await executor.run(wf)
    assert result.node_states["c"] is NodeState.SKIPPED
    assert result["d"] == {"node": "d", "inputs": ["b"]}


async def test_all_success_rule_skips_when_any_edge_inactive(executor):
    executor.add_handler("echo", echo)
    d = Node("d", handler="echo", trigger_rule=TriggerRule.ALL_SUCCESS)
    wf = build(("a", "b"), ("a", "c", "result.node == 'x'"), ("b", "d"), ("c", "d"),
               nodes={"d": d})
    assert (await executor.run(wf)).node_states["d"] is NodeState.SKIPPED


async def test_failure_marks_dependents_upstream_failed_and_chains_cause(executor):
    async def boom(ctx):
        raise KeyError("missing-column")

    executor.add_handler("echo", echo)
    executor.add_handler("boom", boom)
    cleanup = Node("cleanup", handler="echo", trigger_rule=TriggerRule.ALL_DONE)
    wf = build(("a", "bad"), ("bad", "after"), ("a", "side"), ("after", "cleanup"),
               nodes={"bad": Node("bad", handler="boom"), "cleanup": cleanup})
    result = await executor.run(wf)
    assert result.state is InstanceState.FAILED
    assert result.node_states["after"] is NodeState.UPSTREAM_FAILED
    assert result.node_states["side"] is NodeState.SUCCEEDED  # independent branch went on
    assert result.node_states["cleanup"] is NodeState.SUCCEEDED  # ALL_DONE runs anyway
    with pytest.raises(WorkflowFailedError) as info:
        result.check()
    assert info.value.node == "bad"
    assert isinstance(info.value.__cause__, NodeFailedError)
    assert isinstance(info.value.__cause__.__cause__, KeyError)


async def test_retry_with_backoff_on_fake_clock():
    clock = FakeClock()
    ex = WorkflowExecutor(WorkflowScheduler(SchedulerConfig(clock=clock)))
    await ex.start()
    calls = []

    async def flaky(ctx):
        calls.append((ctx.attempt, clock.monotonic()))
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return "ok"

    ex.add_handler("flaky", flaky)
    wf = build(nodes={"f": Node("f", handler="flaky",
                                retry=RetryPolicy(3, backoff=2.0, multiplier=3.0))})
    iid = await ex.execute_workflow(wf)
    await clock.advance(1.9)
    assert [c[0] for c in calls] == [1]
    await clock.advance(0.2)
    assert [c[0] for c in calls] == [1, 2]
    await clock.advance(6.0)  # second retry waits 2 * 3 s
    result = await ex.wait(iid, timeout=5)
    assert result.state is InstanceState.SUCCEEDED and result.attempts["f"] == 3
    assert [c[1] - calls[0][1] for c in calls] == [0.0, 2.0, 8.0]
    states = [(r.attempt, r.state) for r in ex.history.attempts(iid)]
    assert states == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    await ex.stop()


async def test_timeout_fails_node_with_node_timeout_error(executor):
    async def slow(ctx):
        await asyncio.sleep(30)

    executor.add_handler("slow", slow)
    wf = build(nodes={"s": Node("s", handler="slow", timeout=0.05)})
    result = await executor.run(wf)
    err = result.exceptions["s"]
    assert isinstance(err.__cause__, NodeTimeoutError) and isinstance(err.__cause__, TimeoutError)


async def test_sync_handler_runs_in_a_thread_without_blocking_the_loop(executor):
    started = threading.Event()
    release = threading.Event()

    def blocking(ctx):
        started.set()
        release.wait(5)
        return threading.current_thread().name

    executor.add_handler("blocking", blocking)
    iid = await executor.execute_workflow(build(nodes={"b": Node("b", handler="blocking")}))
    for _ in range(500):  # the loop keeps turning while the handler blocks
        if started.is_set():
            break
        await asyncio.sleep(0.01)
    assert started.is_set() and executor.status(iid) is InstanceState.RUNNING
    release.set()
    result = await executor.wait(iid, timeout=5)
    assert result["b"].startswith("lion_nb-handler")


async def test_unknown_handler_fails_at_start_and_nothing_runs(executor):
    ran = []

    async def a(ctx):
        ran.append(1)

    executor.add_handler("a", a)
    wf = build(nodes={"a": Node("a"), "b": Node("b", handler="nobody")})
    with pytest.raises(HandlerNotFoundError) as info:
        await executor.execute_workflow(wf)
    assert info.value.node == "b" and info.value.handler == "nobody"
    await asyncio.sleep(0.01)
    assert ran == [] and executor.instances() == []


async def test_non_serializable_result_fails_without_retry(executor):
    attempts = []

    async def bad(ctx):
        attempts.append(ctx.attempt)
        return {"when": object()}

    executor.add_handler("bad", bad)
    result = await executor.run(build(nodes={"x": Node("x", handler="bad", retry=3)}))
    assert isinstance(result.exceptions["x"].__cause__, ResultNotSerializableError)
    assert "'x'" in result.errors["x"] and attempts == [1]


async def test_python_objects_allowed_when_json_not_required():
    ex = WorkflowExecutor(config=ExecutorConfig(require_json_results=False))
    await ex.start()

    async def obj(ctx):
        return {1, 2}

    ex.add_handler("obj", obj)
    assert (await ex.run(build(nodes={"o": Node("o", handler="obj")})))["o"] == {1, 2}
    await ex.stop()


async def test_node_result_failure_and_skip(executor):
    async def fail(ctx):
        return NodeResult.failure(ctx.current_node_id, "quota exceeded")

    async def skip(ctx):
        return NodeResult.skip(ctx.current_node_id, "nothing to do")

    executor.add_handler("fail", fail)
    executor.add_handler("skip", skip)
    executor.add_handler("echo", echo)
    wf = build(("s", "after"), nodes={"f": Node("f", handler="fail"),
                                      "s": Node("s", handler="skip")})
    result = await executor.run(wf)
    assert result.node_states["f"] is NodeState.FAILED and "quota" in result.errors["f"]
    assert result.node_states["after"] is NodeState.SKIPPED


async def test_executing_on_stopped_executor_raises():
    ex = WorkflowExecutor()
    ex.add_handler("echo", echo)
    with pytest.raises(ExecutorStoppedError):
        await ex.execute_workflow(build(nodes={"a": Node("a", handler="echo")}))
    await ex.start()
    await ex.stop()
    with pytest.raises(ExecutorStoppedError):
        await ex.execute_workflow(build(nodes={"a": Node("a", handler="echo")}))
    with pytest.raises(ExecutorStoppedError, match="create a new"):
        await ex.start()


async def test_cancel_stops_running_and_queued_nodes(executor):
    started = asyncio.Event()

    async def hang(ctx):
        started.set()
        await asyncio.sleep(60)

    executor.add_handler("hang", hang)
    executor.add_handler("echo", echo)
    wf = build(("h", "after"), nodes={"h": Node("h", handler="hang")})
    iid = await executor.execute_workflow(wf)
    await asyncio.wait_for(started.wait(), 5)
    await executor.cancel(iid)
    result = await executor.wait(iid, timeout=5)
    assert result.state is InstanceState.CANCELLED
    assert result.node_states == {"h": NodeState.CANCELLED, "after": NodeState.CANCELLED}
    # the executor still works afterwards (the worker survived the interrupt)
    assert (await executor.run(build(nodes={"e": Node("e", handler="echo")}))).succeeded


async def test_many_instances_at_once(executor):
    async def work(ctx):
        await asyncio.sleep(0.001)
        return ctx.inputs["n"]

    executor.add_handler("work", work)
    wf = build(("a", "b"), nodes={"a": Node("a", handler="work"), "b": Node("b", handler="work")})
    ids = [await executor.execute_workflow(wf, inputs={"n": n}) for n in range(50)]
    results = [await executor.wait(i, timeout=10) for i in ids]
    assert [r["b"] for r in results] == list(range(50))


async def test_requirements_without_grants_are_denied(executor):
    ran = []

    async def save(ctx):
        ran.append(1)

    executor.add_handler("save", save)
    result = await executor.run(build(nodes={"s": Node("s", handler="save",
                                                       requires=["db:write"])}))
    assert ran == [] and isinstance(result.exceptions["s"].__cause__, CapabilityDeniedError)


async def test_unknown_instance(executor):
    with pytest.raises(InstanceNotFoundError):
        await executor.wait("run-nope")


def test_node_state_machine_refuses_illegal_transitions():
    states = NodeStates(["a"], "run-1")
    with pytest.raises(IllegalTransitionError) as info:
        states.move(0, NodeState.SUCCEEDED)
    assert info.value.entity == "a"
    states.move(0, NodeState.QUEUED)
    states.move(0, NodeState.RUNNING)
    states.move(0, NodeState.SUCCEEDED)
    with pytest.raises(IllegalTransitionError):
        states.move(0, NodeState.RUNNING)


@pytest.mark.parametrize("field, value", [("on_denied", "ignore"), ("default_timeout", 0),
                                          ("max_threads", 0), ("max_threads", 1.5),
                                          ("lease_ttl", -1), ("event_sink", "not callable"),
                                          ("max_node_crashes", 0)])
def test_executor_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        ExecutorConfig(**{field: value})
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_executor_config_is_frozen_and_keyword_only():
    config = ExecutorConfig(fail_fast=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fail_fast = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        ExecutorConfig(True)  # type: ignore[misc]


async def test_set_event_sink_routes_ctx_publish_and_leaves_the_config_alone(executor):
    seen = []

    async def sink(topic, payload, headers):
        seen.append((topic, payload, headers["lion.node"]))

    async def announce(ctx):
        await ctx.publish("t.done", {"n": 1})

    executor.add_handler("announce", announce)
    executor.set_event_sink(sink)
    result = await executor.run(build(nodes={"a": Node("a", handler="announce")}))
    assert result.succeeded and seen == [("t.done", {"n": 1}, "a")]
    assert executor.config.event_sink is None
    executor.set_event_sink(None)
    result = await executor.run(build(nodes={"a": Node("a", handler="announce")}))
    assert "no event sink" in result.errors["a"]


def test_instance_state_machine_refuses_a_second_final_state():
    check_instance_transition("run-1", InstanceState.PENDING, InstanceState.RUNNING)
    check_instance_transition("run-1", InstanceState.RUNNING, InstanceState.SUCCEEDED)
    with pytest.raises(IllegalTransitionError):
        check_instance_transition("run-1", InstanceState.SUCCEEDED, InstanceState.CANCELLED)
