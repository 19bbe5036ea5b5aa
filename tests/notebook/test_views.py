"""SchedulerView, SagaView and EventView driven by real runs: final state, update cap, escaping."""

from __future__ import annotations

import asyncio
import threading
import time
from html.parser import HTMLParser

from lion_nb.clock import FakeClock
from lion_nb.engine import WorkflowExecutor
from lion_nb.engine import EventKind as K
from lion_nb.engine import ExecEvent, ObserveStream
from lion_nb.engine import SchedulerConfig, WorkflowScheduler
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import EventView, SagaView, SchedulerView
from lion_nb.patterns import (
    Event,
    EventBroker,
    EventBrokerConfig,
    SagaDefinitionBuilder,
    SagaManager,
    SagaManagerConfig,
    SagaStep,
)

BAD = "<script>alert(1)</script><img src=x onerror=alert(1)>"




class Inert(HTMLParser):
    """Fails on any script tag, event handler attribute or javascript: URL."""

    def handle_starttag(self, tag, attrs):
        assert tag != "script"
        for k, v in attrs:
            assert not k.startswith("on") and "javascript:" not in (v or "")


def assert_inert(*fragments: str) -> None:
    for f in fragments:
        Inert().feed(f)


def comm_id(widget) -> str:
    return widget.comm.comm_id


# --- SchedulerView ------------------------------------------------------------------------------


def stats_without_clock(s):
    # Throughput divides by the time since the scheduler started: it moves while we look.
    return {k: v for k, v in vars(s).items() if k != "throughput"}


async def test_scheduler_view_ends_matching_the_engine_with_policy_change_and_misses(frontend):
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=2))
    ex = WorkflowExecutor(scheduler)
    await ex.start()

    async def work(ctx):
        await asyncio.sleep(0.005)

    ex.add_handler("work", work)
    b = WorkflowBuilder("mix")
    b.add_nodes(*[Node(f"job {i}", handler="work", priority=i % 4,
                       deadline=0.001 if i == 7 else None) for i in range(30)])
    view = SchedulerView(ex)   # an executor is followed through its scheduler
    assert view.scheduler is scheduler
    iid = await ex.execute_workflow(b.build())
    await asyncio.sleep(0.02)
    await scheduler.change_policy("priority")
    await ex.wait(iid)
    view.close()
    assert stats_without_clock(view.stats) == stats_without_clock(scheduler.statistics())
    assert view.stats.completed == 30 and view.stats.deadline_misses >= 1
    assert view.slots.value == 0 and view.slots.max == 2
    assert view.slots.description == "0/2 slots"
    assert "policy <b>priority</b>" in view.title.value and "was fifo" in view.title.value
    kinds = [d.kind for d in view.decisions]
    assert "policy_changed" in kinds and "deadline_missed" in kinds
    assert any(d.node == "job 7" for d in view.decisions if d.kind == "deadline_missed")
    assert "deadline misses" in view.figures.value and "#82071e" in view.figures.value
    assert "high" in view.queue.value and "low" in view.queue.value  # priority classes
    await ex.stop()


async def test_scheduler_view_follows_a_busy_scheduler_without_events_at_the_end(frontend):
    # Raw submits emit no event the view follows: its re-reads must catch them.
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=3))
    view = SchedulerView(scheduler, interval=0.02, idle_poll=0.05)

    async def job():
        await asyncio.sleep(0.01)

    futures = [await scheduler.submit(job) for _ in range(9)]
    await asyncio.gather(*futures)
    await asyncio.sleep(0.1)  # a few intervals: no event arrives, the view re-reads
    assert view.stats.completed == 9 and view.stats.running == 0
    assert "completed <b style='font-variant-numeric:tabular-nums'>9</b>" in view.figures.value
    flushes = view.flushes
    await asyncio.sleep(0.12)
    assert view.flushes - flushes <= 3  # idle: only the slow heartbeat, not every interval
    view.close()
    closed_at = view.flushes
    await asyncio.sleep(0.12)
    assert view.flushes == closed_at  # closed: no timer left
    # What a saved notebook keeps of it: the same figures as static HTML, the bar drawn.
    snapshot = view.snapshot_html()
    assert view.figures.value in snapshot and "0/3 slots" in snapshot
    assert "text/html" in view._repr_mimebundle_()
    await scheduler.close()


async def test_scheduler_view_says_idle_names_misses_and_keeps_a_history(frontend):
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=2))
    ex = WorkflowExecutor(scheduler)
    await ex.start()

    async def work(ctx):
        await asyncio.sleep(0.01)

    ex.add_handler("work", work)
    b = WorkflowBuilder("mix")
    b.add_nodes(*[Node(f"job {i}", handler="work", deadline=0.001 if i == 9 else None)
                  for i in range(40)])
    view = SchedulerView(ex, interval=0.02, idle_poll=0.05)
    iid = await ex.execute_workflow(b.build())
    await asyncio.sleep(0.05)
    assert "/s now" in view.figures.value  # busy: the recent rate
    await scheduler.change_policy("priority")
    await ex.wait(iid)
    await asyncio.sleep(0.4)
    view.close()
    # Idle: no stale "…/s now"; the history of depth and throughput stays after close.
    assert "/s now" not in view.figures.value and "idle" in view.figures.value
    assert len(view.history) >= 2 and max(d for _, d, _ in view.history) > 0
    assert "depth <code>" in view.figures.value and "█" in view.figures.value
    assert "depth <code>" in view.snapshot_html()
    log = view.log.value
    assert "ran late" in log and ", record" not in log
    queued_fill = "#ddf4ff"
    policy_line = next(line for line in log.split("<li>") if "policy changed" in line)
    assert queued_fill not in policy_line  # not drawn as queued work
    await ex.stop()


async def test_scheduler_view_caps_updates_per_second_on_a_10k_task_run(frontend):
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=16))
    ex = WorkflowExecutor(scheduler)
    await ex.start()

    async def step(ctx):
        await asyncio.sleep(0.0002)

    ex.add_handler("step", step)
    b = WorkflowBuilder("big")
    nodes = [Node(f"n{i}", handler="step") for i in range(10_000)]
    b.add_nodes(*nodes)
    for i in range(50, len(nodes)):
        b.connect(nodes[i - 50], nodes[i])
    view = SchedulerView(scheduler)
    start = time.monotonic()
    result = await ex.run(b.build())
    elapsed = time.monotonic() - start
    view.close()
    assert result.succeeded
    assert view.stats.completed == scheduler.statistics().completed >= 10_000
    # At most 10 flushes a second, plus the first and the forced final one.
    assert view.flushes <= 10 * elapsed + 3
    for w in view._widgets:
        assert frontend.per_second_peak(comm_id(w)) <= 12
    await ex.stop()


async def test_scheduler_view_events_from_a_worker_thread_are_handed_to_the_loop(frontend):
    scheduler = WorkflowScheduler()
    view = SchedulerView(scheduler)
    flushed_on = []
    real = view._render
    view._render = lambda: (flushed_on.append(threading.get_ident()), real())
    ev = ExecEvent(K.POLICY_CHANGED, time.time(), None, None, 0,
                   {"from": "fifo", "to": "edf", "requeued": 0})
    t = threading.Thread(target=scheduler.observe.emit, args=(ev,))
    t.start()
    t.join()
    assert flushed_on == []
    await asyncio.sleep(0.15)
    assert flushed_on == [threading.get_ident()]
    assert [d.kind for d in view.decisions] == ["policy_changed"]
    view.close()


# --- SagaView ------------------------------------------------------------------------------------


async def saga_manager(fail_at: int | None, observe: bool = True, delay: float = 0.0):
    mgr = SagaManager(None, SagaManagerConfig(),
                      observe=ObserveStream() if observe else None)
    b = SagaDefinitionBuilder("order", f"Order {BAD}")
    for i in (1, 2, 3, 4):
        b.add_step(SagaStep(f"s{i}", f"step {i} {BAD}" if i == 2 else f"step {i}", {"n": i},
                            "svc").with_compensation({"undo": i}))
    await mgr.register_definition(b.build())

    async def handler(cmd):
        await asyncio.sleep(delay)
        if cmd.kind == "step" and cmd.action["n"] == fail_at:
            raise RuntimeError(f"step {fail_at} failed {BAD}")
        return cmd.action

    await mgr.register_service("svc", handler)
    return mgr


async def test_saga_view_shows_steps_2_and_1_compensated_in_reverse_order(frontend):
    mgr = await saga_manager(fail_at=3, delay=0.01)
    inst = await mgr.create_instance("order", {"id": 1})
    view = SagaView(mgr, inst.id)
    await mgr.start_instance(inst.id)
    await mgr.wait(inst.id)
    # Final at once: the view flushed when the saga ended, not a timer tick later.
    assert view.closed and view.status == "compensated"
    assert view.steps == {"s1": "compensated", "s2": "compensated", "s3": "failed",
                          "s4": "pending"}
    assert view.compensation_path == inst.compensation_path == ["s2", "s1"]
    assert view.compensated_seen == ["s2", "s1"]  # the stream reported them in that order
    html = view.compensation.value
    assert html.index("step 2") < html.index("step 1") and "<ol" in html
    table = view.steps_html.value
    assert table.count("↺ compensated") == 2 and "✘ failed" in table
    # The bar measures what its text says: the undoing, full once both steps are undone.
    assert view.progress.bar_style == "warning" and view.progress.description == "2/2 undone"
    assert (view.progress.value, view.progress.max) == (2, 2)
    assert "not run" in table and "· pending" not in table  # step 4 never ran
    assert_inert(view.title.value, table, html, view.log.value)
    assert "&lt;script&gt;" in table
    await mgr.close()


async def test_saga_picture_numbers_each_undone_step_and_shows_payloads_as_text(frontend):
    from lion_nb.notebook import describe
    mgr = await saga_manager(fail_at=3)
    inst = await mgr.run("order", {"id": 5})
    dot = mgr_dot(inst)
    # Two undone steps, two numbered arrows: from the failed step 3 to 2, then 2 to 1.
    assert "undo 1" in dot and "undo 2" in dot and "undo 3" not in dot
    assert "{'undo'" not in dot and "undo: 1" in dot
    assert "not run" in dot
    assert "{'undo'" not in describe(inst)
    await mgr.close()


def mgr_dot(inst) -> str:
    from lion_nb.notebook import Picture
    return Picture(inst).dot


async def test_saga_view_follows_the_next_saga_started(frontend):
    mgr = await saga_manager(fail_at=None)
    view = SagaView(mgr)
    assert "waiting" in view.title.value
    done = await mgr.run("order", {"id": 2})
    assert view.instance_id == done.id and view.closed
    assert view.status == "completed" and set(view.steps.values()) == {"succeeded"}
    assert view.progress.value == 4 and view.progress.bar_style == "success"
    assert view.compensation.value == ""
    await mgr.close()


async def test_saga_view_without_an_observe_stream_polls_the_instance(frontend):
    mgr = await saga_manager(fail_at=2, observe=False, delay=0.01)
    inst = await mgr.create_instance("order", {"id": 3})
    view = SagaView(mgr, inst.id, poll=0.02)
    await mgr.start_instance(inst.id)
    await mgr.wait(inst.id)
    await asyncio.sleep(0.1)
    assert view.status == "compensated" and view.compensation_path == ["s1"]
    flushes = view.flushes
    await asyncio.sleep(0.1)
    assert view.flushes == flushes  # final: polling stopped
    view.close()
    await mgr.close()


async def test_saga_view_of_a_finished_saga_shows_it_and_stops(frontend):
    mgr = await saga_manager(fail_at=4)
    inst = await mgr.run("order", {"id": 4})
    view = SagaView(mgr, inst.id)
    assert view.closed and view.compensation_path == ["s3", "s2", "s1"]
    assert view.title.value.count("compensated") == 1
    await mgr.close()


# --- EventView ------------------------------------------------------------------------------------


async def test_event_view_counts_pending_and_dead_letters_per_subscriber(frontend):
    clock = FakeClock()
    broker = EventBroker(EventBrokerConfig(max_deliveries=2), clock=clock,
                         observe=ObserveStream())
    good_rx, good_ack = await broker.subscribe("order.*", "billing")
    bad_rx, bad_ack = await broker.subscribe("order.*", f"flaky {BAD}")
    _lazy_rx, _ = await broker.subscribe("order.*", "lazy")
    view = EventView(broker)
    for i in range(3):
        await broker.publish(Event("order.created", {"n": i}))
    for _ in range(3):
        await good_ack.success(await good_rx.recv())
    for _ in range(6):  # every event fails twice for the flaky subscriber: dead letters
        await bad_ack.failure(await bad_rx.recv(), f"no {BAD}")
    view.close()
    stats = broker.statistics()
    assert view.stats == stats
    assert stats.dead_lettered == 3
    assert view.dead_lettered == {f"flaky {BAD}": 3}
    assert view.redelivered == {f"flaky {BAD}": 3}
    pending = {s["name"]: s["pending"] for s in view.subscriptions}
    assert pending == {"billing": 0, f"flaky {BAD}": 0, "lazy": 3}
    assert "no &lt;script&gt;" in view.table.value
    assert_inert(view.title.value, view.figures.value, view.table.value, view.log.value)
    assert "dead lettered" in view.log.value
    # Zero pending is not an alarm: no red chip with a 0 in it.
    row = next(r for r in view.table.value.split("<tr>") if "flaky" in r)
    assert "✘ 0" not in row
    # Each log line tells its delivery apart: the event id and the time.
    lines = view.log.value.split("<li>")[1:]
    assert len(lines) == 5 and len(set(lines)) == 5
    assert all("event <code" in line and ":" in line.split("<small")[1] for line in lines)
    await broker.close()


async def test_event_view_without_a_stream_reads_the_broker_history(frontend):
    broker = EventBroker(EventBrokerConfig(max_deliveries=1))
    rx, ack = await broker.subscribe("job.run", "worker")
    await broker.publish(Event("job.run", {}))
    await ack.failure(await rx.recv(), "boom")
    view = EventView(broker, poll=0.02)   # built after the fact: seeded from history
    assert view.dead_lettered == {"worker": 1} and view.last_error == {"worker": "boom"}
    await broker.publish(Event("job.run", {}))
    await asyncio.sleep(0.1)
    # (published also counts the dead letter and its advisory, published by the broker)
    assert view.stats == broker.statistics() and view.stats.delivered == 1
    assert {s["name"]: s["pending"] for s in view.subscriptions}["worker"] == 1
    await broker.close()
    view.close()


def test_views_render_without_a_running_loop():
    # A script: built outside any loop, flush() and close() still work synchronously.
    scheduler = WorkflowScheduler()
    view = SchedulerView(scheduler)
    view.flush()
    view.close()
    assert view.closed and "policy <b>fifo</b>" in view.title.value
    assert repr(view).startswith("SchedulerView(fifo")


async def test_event_view_caps_updates_per_second_under_a_flood_of_events(frontend):
    stream = ObserveStream()
    broker = EventBroker(EventBrokerConfig(max_pending=100_000), observe=stream)
    rx, ack = await broker.subscribe("tick.*", "counter")
    view = EventView(broker, observe=stream)
    start = time.monotonic()
    for i in range(5_000):
        await broker.publish(Event("tick.now", {"i": i}))
        if i % 10 == 0:  # spread over a second or two: the cap is per second
            await asyncio.sleep(0.002)
    for _ in range(5_000):
        await ack.success(await rx.recv())
    elapsed = time.monotonic() - start
    view.close()
    assert view.stats == broker.statistics() and view.stats.acked == 5_000
    assert 5 <= view.flushes <= 10 * elapsed + 3  # it did follow along, within the cap
    for w in view._widgets:
        assert frontend.per_second_peak(comm_id(w)) <= 12
    await broker.close()


async def test_saga_view_caps_updates_per_second_on_a_long_saga(frontend):
    mgr = SagaManager(None, SagaManagerConfig(), observe=ObserveStream())
    b = SagaDefinitionBuilder("long", "Long saga")
    for i in range(150):
        b.add_step(SagaStep(f"s{i}", f"step {i}", {"n": i}, "svc").with_compensation({}))
    await mgr.register_definition(b.build())

    async def handler(cmd):
        await asyncio.sleep(0.004)  # about 1.2 s in all: the cap is per second
        if cmd.kind == "step" and cmd.action["n"] == 149:
            raise RuntimeError("last step fails")

    await mgr.register_service("svc", handler)
    view = SagaView(mgr)
    start = time.monotonic()
    inst = await mgr.run("long", {})
    elapsed = time.monotonic() - start
    assert view.closed and view.compensation_path == inst.compensation_path
    assert view.compensation_path == [f"s{i}" for i in range(148, -1, -1)]
    assert 5 <= view.flushes <= 10 * elapsed + 3  # it did follow along, within the cap
    for w in view._widgets:
        assert frontend.per_second_peak(comm_id(w)) <= 12
    await mgr.close()
