"""Scheduler: policies end to end through the executor, backpressure, preemption, limits."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.clock import FakeClock
from lion_nb.engine import (EventKind, Priority, SchedulerConfig, SchedulingPolicy,
                            WorkflowExecutor, WorkflowScheduler)
from lion_nb.errors import (ConfigError, DeadlineMissedError, QueueFullError, SchedulerClosedError,
                            SchedulerConfigError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import NodeState


def one(name, **kw):
    return WorkflowBuilder(name).add_node(Node(name, handler="work", **kw)).build()


@pytest.fixture
async def make_executor():
    """Started executors on a scheduler made of ``SchedulerConfig(**cfg)``, stopped even when
    an assert fails."""
    made: list[WorkflowExecutor] = []

    async def make(**cfg):
        made.append(WorkflowExecutor(WorkflowScheduler(SchedulerConfig(**cfg))))
        await made[-1].start()
        return made[-1]

    yield make
    for ex in made:
        await ex.stop()


@pytest.fixture
async def make_scheduler():
    """Schedulers made of ``SchedulerConfig(**cfg)``, closed even when an assert fails."""
    made: list[WorkflowScheduler] = []

    def make(**cfg):
        made.append(WorkflowScheduler(SchedulerConfig(**cfg)))
        return made[-1]

    yield make
    for sched in made:
        await sched.close()


@pytest.fixture
def gated_executor(make_executor):
    """One slot, held by a 'gate' node until released, so we control what queues up."""
    async def make(policy, **cfg):
        ex = await make_executor(max_concurrent_tasks=1, policy=policy, **cfg)
        gate = asyncio.Event()
        order: list[str] = []

        async def hold(ctx):
            await gate.wait()

        async def work(ctx):
            order.append(ctx.node_name)

        ex.add_handler("hold", hold)
        ex.add_handler("work", work)
        gate_id = await ex.execute_workflow(
            WorkflowBuilder("gate").add_node(Node("gate", handler="hold")).build())
        for _ in range(50):
            await asyncio.sleep(0)
            if ex.scheduler.running:
                break
        return ex, gate, order, gate_id

    return make


async def drain(ex, ids):
    for i in ids:
        await ex.wait(i, timeout=10)


async def crunch_then_quick(ex, clock, **node):
    """A node that uses up its slice before each of 3 yield points, then a quick one behind
    it; returns the order of their steps."""
    steps: list[str] = []

    async def cruncher(ctx):
        for i in range(3):
            steps.append(f"crunch{i}")
            await clock.sleep(0.2)  # uses up its time slice...
            await ctx.yield_now()   # ...and offers the slot at a yield point

    async def quick(ctx):
        steps.append("quick")

    ex.add_handler("crunch", cruncher)
    ex.add_handler("quick", quick)
    c = await ex.execute_workflow(WorkflowBuilder("c").add_node(
        Node("c", handler="crunch", **node)).build())
    await asyncio.sleep(0)
    q = await ex.execute_workflow(WorkflowBuilder("q").add_node(
        Node("q", handler="quick", **node)).build())
    for _ in range(10):
        await clock.advance(0.2)
    assert (await ex.wait(c, timeout=5)).succeeded
    assert (await ex.wait(q, timeout=5)).succeeded
    return steps


async def test_priority_policy_runs_most_urgent_first_fifo_within_level(gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.PRIORITY)
    ids = [await ex.execute_workflow(one(n, priority=p)) for n, p in
           [("low", Priority.LOW), ("n1", Priority.NORMAL), ("crit", Priority.CRITICAL),
            ("n2", Priority.NORMAL), ("high", Priority.HIGH)]]
    gate.set()
    await drain(ex, [gid, *ids])
    assert order == ["crit", "high", "n1", "n2", "low"]


async def test_per_instance_priority_override(gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.PRIORITY)
    a = await ex.execute_workflow(one("a", priority=Priority.HIGH))
    b = await ex.execute_workflow(one("b", priority=Priority.LOW), priority=Priority.CRITICAL)
    gate.set()
    await drain(ex, [gid, a, b])
    assert order == ["b", "a"]


async def test_edf_runs_earliest_deadline_first_and_no_deadline_last(gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.EDF)
    ids = [await ex.execute_workflow(one(n, deadline=d)) for n, d in
           [("none", None), ("late", 50.0), ("soon", 5.0), ("mid", 20.0)]]
    gate.set()
    await drain(ex, [gid, *ids])
    assert order == ["soon", "mid", "late", "none"]


async def test_change_policy_reorders_queued_work_and_is_observed(gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.FIFO)
    seen = []
    ex.observe.subscribe(seen.append, [EventKind.POLICY_CHANGED])
    ids = [await ex.execute_workflow(one(n, priority=p)) for n, p in
           [("a", Priority.LOW), ("b", Priority.NORMAL), ("c", Priority.HIGH)]]
    await ex.scheduler.change_policy(SchedulingPolicy.PRIORITY)
    assert ex.scheduler.statistics().queued == 3  # nothing lost
    gate.set()
    await drain(ex, [gid, *ids])
    assert order == ["c", "b", "a"]
    assert seen[0].data == {"from": "fifo", "to": "priority", "requeued": 3}


async def test_mlfq_aging_lets_low_priority_finish_under_a_stream_of_urgent_work(
        make_scheduler):
    clock = FakeClock()
    sched = make_scheduler(max_concurrent_tasks=1, policy="mlfq", mlfq_boost_interval=1.0,
                           clock=clock)
    ran: list[str] = []

    async def job(name):
        ran.append(name)
        await clock.sleep(0.3)  # each job holds the slot for 0.3 fake seconds

    await sched.submit(job, "h0", priority=Priority.HIGH)
    low = await sched.submit(job, "low", priority=Priority.LOW)
    for i in range(1, 40):  # a steady stream: one urgent job per 0.3 s
        await sched.submit(job, f"h{i}", priority=Priority.HIGH)
        await clock.advance(0.3)
        if low.done():
            break
    assert low.done() and "low" in ran
    assert ran.index("low") < 10  # it did not wait for the stream to end


async def test_mlfq_demotes_a_task_that_uses_its_quantum_and_preempts_it(make_executor):
    clock = FakeClock()
    ex = await make_executor(max_concurrent_tasks=1, policy=SchedulingPolicy.MLFQ,
                             time_slice=0.1, clock=clock)
    steps = await crunch_then_quick(ex, clock, priority=Priority.HIGH)
    assert steps.index("quick") == 1  # ran at crunch's first yield point


async def test_yield_now_without_waiters_keeps_the_slot(make_executor):
    ex = await make_executor()

    async def polite(ctx):
        for _ in range(100):
            await ctx.yield_now()
        return "done"

    ex.add_handler("polite", polite)
    result = await ex.run(WorkflowBuilder("p").add_node(Node("p", handler="polite")).build())
    assert result["p"] == "done"


async def test_backpressure_submit_waits_and_nowait_raises(make_scheduler):
    sched = make_scheduler(max_queued_tasks=2, max_concurrent_tasks=1)
    gate = asyncio.Event()

    async def hold():
        await gate.wait()

    first = await sched.submit(hold)
    await asyncio.sleep(0.01)  # first is running; the queue is empty
    await sched.submit(hold)
    await sched.submit(hold)
    with pytest.raises(QueueFullError) as info:
        sched.submit_nowait(hold)
    assert info.value.capacity == 2
    waiting = asyncio.ensure_future(sched.submit(hold))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # submit waits while full
    gate.set()
    await asyncio.wait_for(waiting, 5)
    await first


async def test_resource_pool_limits_concurrency(make_executor):
    ex = await make_executor(max_concurrent_tasks=8, resource_limits={"gpu": 2})
    active, peak = 0, 0

    async def train(ctx):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    ex.add_handler("train", train)
    b = WorkflowBuilder("gpus")
    for i in range(6):
        b.add_node(Node(f"t{i}", handler="train", resources=("gpu",)))
    result = await ex.run(b.build())
    assert result.succeeded and peak == 2


async def test_deadline_miss_fail_action_fails_the_node(gated_executor):
    clock = FakeClock()
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.EDF, clock=clock,
                                                deadline_miss="fail")
    iid = await ex.execute_workflow(one("tight", deadline=1.0))
    await clock.advance(2.0)
    gate.set()
    result = await ex.wait(iid, timeout=5)
    assert result.node_states["tight"] is NodeState.FAILED
    assert isinstance(result.exceptions["tight"].__cause__, DeadlineMissedError)
    assert ex.scheduler.statistics().deadline_misses == 1 and order == []
    await drain(ex, [gid])


async def test_deadline_miss_record_action_runs_and_counts(gated_executor):
    clock = FakeClock()
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.EDF, clock=clock)
    iid = await ex.execute_workflow(one("tight", deadline=1.0))
    await clock.advance(2.0)
    gate.set()
    assert (await ex.wait(iid, timeout=5)).succeeded and order == ["tight"]
    assert ex.scheduler.statistics().deadline_misses == 1
    await drain(ex, [gid])


async def test_statistics_snapshot(gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.PRIORITY)
    ids = [await ex.execute_workflow(one(f"w{i}", priority=Priority.HIGH)) for i in range(3)]
    stats = ex.scheduler.statistics()
    assert (stats.policy, stats.queued, stats.running) == ("priority", 3, 1)
    assert stats.queued_by_class["high"] == 3
    gate.set()
    await drain(ex, [gid, *ids])
    assert ex.scheduler.statistics().completed == 4


@pytest.mark.parametrize("kwargs,field", [
    ({"policy": "round-robin"}, "policy"), ({"max_queued_tasks": 0}, "max_queued_tasks"),
    ({"max_concurrent_tasks": -1}, "max_concurrent_tasks"),
    ({"resource_limits": {"gpu": 0}}, "resource_limits"), ({"deadline_miss": "panic"},
                                                          "deadline_miss"),
    ({"mlfq_entry": "middle"}, "mlfq_entry"), ({"preemption": "always"}, "preemption"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(SchedulerConfigError) as info:
        SchedulerConfig(**kwargs)
    assert info.value.field == field and isinstance(info.value, ConfigError)


def test_scheduler_config_is_keyword_only():
    with pytest.raises(TypeError):
        SchedulerConfig(10)  # type: ignore[misc]


async def test_past_deadline_reject_and_closed_scheduler(make_scheduler):
    sched = make_scheduler(past_deadline="reject")

    async def job():
        return 1

    with pytest.raises(DeadlineMissedError):
        await sched.submit(job, deadline=-1.0)
    with pytest.raises(SchedulerConfigError):
        await sched.change_policy("lottery")
    assert await (await sched.submit(job)) == 1
    await sched.close()
    with pytest.raises(SchedulerClosedError):
        await sched.submit(job)
    with pytest.raises(SchedulerClosedError):
        await sched.change_policy(SchedulingPolicy.EDF)


async def test_per_workflow_limit_caps_one_workflow_but_not_others(make_executor):
    ex = await make_executor(max_concurrent_tasks=8, max_per_group=1)
    active: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def work(ctx):
        wf = ctx.inputs["wf"]
        active[wf] = active.get(wf, 0) + 1
        peak[wf] = max(peak.get(wf, 0), active[wf])
        await asyncio.sleep(0.01)
        active[wf] -= 1

    ex.add_handler("work", work)
    wide = WorkflowBuilder("wide").add_nodes(*[Node(f"w{i}", handler="work") for i in range(4)])
    other = WorkflowBuilder("other").add_nodes(*[Node(f"o{i}", handler="work") for i in range(4)])
    ids = [await ex.execute_workflow(wide.build(), inputs={"wf": "wide"}),
           await ex.execute_workflow(other.build(), inputs={"wf": "other"})]
    for i in ids:
        assert (await ex.wait(i, timeout=10)).succeeded
    assert peak == {"wide": 1, "other": 1}


async def test_deadline_miss_demote_runs_behind_tasks_that_can_still_make_it(gated_executor):
    clock = FakeClock()
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.EDF, clock=clock,
                                                deadline_miss="demote")
    late = await ex.execute_workflow(one("late", deadline=1.0))
    await clock.advance(2.0)
    fine = await ex.execute_workflow(one("fine", deadline=60.0))
    gate.set()
    await drain(ex, [gid, late, fine])
    assert order == ["fine", "late"]


@pytest.mark.parametrize("entry, depths", [
    ("top", {"level0": 3, "level1": 0, "level2": 0}),
    ("priority", {"level0": 1, "level1": 1, "level2": 1})])
async def test_mlfq_new_tasks_enter_the_top_level_unless_asked_to_enter_by_priority(
        entry, depths, make_scheduler):
    kwargs = {} if entry == "top" else {"mlfq_entry": entry}
    sched = make_scheduler(max_concurrent_tasks=1, policy="mlfq", clock=FakeClock(), **kwargs)
    gate = asyncio.Event()

    async def job():
        pass

    futures = [await sched.submit(gate.wait)]
    for _ in range(50):
        await asyncio.sleep(0)
        if sched.running:
            break
    for prio in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
        futures.append(await sched.submit(job, priority=prio))
    assert sched.depths() == depths
    gate.set()
    await asyncio.gather(*futures)


async def low_runner_and_arrival(make_executor, preemption, arrival=Priority.HIGH):
    """A LOW node yielding every 1 ms of fake time; another node arrives while it runs."""
    clock = FakeClock()
    kwargs = {} if preemption is None else {"preemption": preemption}
    ex = await make_executor(max_concurrent_tasks=1, policy=SchedulingPolicy.PRIORITY,
                             time_slice=0.05, clock=clock, **kwargs)
    steps: list[str] = []

    async def long(ctx):
        for i in range(100):
            steps.append(f"low{i}")
            await clock.sleep(0.001)
            await ctx.yield_now()

    async def other(ctx):
        steps.append("other")

    ex.add_handler("long", long)
    ex.add_handler("other", other)
    low = await ex.execute_workflow(WorkflowBuilder("l").add_node(
        Node("l", handler="long", priority=Priority.LOW)).build())
    await clock.advance(0.0025)  # the low node is a few steps in, far from its 50 ms slice
    late = await ex.execute_workflow(WorkflowBuilder("h").add_node(
        Node("h", handler="other", priority=arrival)).build())
    for _ in range(120):
        await clock.advance(0.001)
    await ex.wait(low, timeout=5)
    await ex.wait(late, timeout=5)
    return steps.index("other")


async def test_by_default_an_urgent_arrival_waits_for_the_running_slice_to_end(
        make_executor):
    assert await low_runner_and_arrival(make_executor, None) >= 50  # 50 steps of 1 ms: the whole slice


async def test_urgent_preemption_hands_the_slot_over_at_the_next_yield_point(
        make_executor):
    assert await low_runner_and_arrival(make_executor, "urgent") <= 4  # the first yield point after it came


async def test_urgent_preemption_waits_for_the_slice_when_the_arrival_is_not_more_urgent(
        make_executor):
    assert await low_runner_and_arrival(make_executor, "urgent", arrival=Priority.LOW) >= 50


async def test_fifo_round_robin_at_a_yield_point_for_a_normal_priority_node(make_executor):
    # Under FIFO a normal-priority node is queued as a plain call (no task object);
    # its first yield point must still hand the slot to the node waiting behind it.
    clock = FakeClock()
    ex = await make_executor(max_concurrent_tasks=1, time_slice=0.1, clock=clock)
    steps = await crunch_then_quick(ex, clock)
    assert steps.index("quick") == 1  # ran at crunch's first yield point
    stats = ex.scheduler.statistics()
    assert (stats.running, stats.queued, stats.completed) == (0, 0, 2)


async def test_a_cancelled_instance_leaves_no_queued_node_to_run_and_frees_its_slots(
        gated_executor):
    ex, gate, order, gid = await gated_executor(SchedulingPolicy.FIFO)
    ids = [await ex.execute_workflow(one(n)) for n in ("a", "b")]
    await ex.cancel(ids[0])
    gate.set()
    results = [await ex.wait(i, timeout=10) for i in ids]
    assert [r.node_states[n] for r, n in zip(results, "ab")] == [NodeState.CANCELLED,
                                                                 NodeState.SUCCEEDED]
    assert order == ["b"]  # the cancelled node never ran
    assert ex.history.attempts(ids[0])[0].queued_at is not None  # it had been queued
    assert ex.scheduler.running == 0
    await drain(ex, [gid])
