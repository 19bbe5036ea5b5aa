"""Tables of events and deliveries, saga steps, capability audit and scheduler statistics."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import pandas as pd
import pytest

from lion_nb.clock import FakeClock
from lion_nb.engine import SchedulerConfig, WorkflowScheduler
from lion_nb.errors import CapabilityDeniedError
from lion_nb.notebook import (
    capability_audit_frame,
    deliveries_frame,
    event_history_frame,
    saga_history_frame,
    saga_steps_frame,
    scheduler_decisions_frame,
    scheduler_statistics_frame,
)
from lion_nb.notebook import SchedulerDecision
from lion_nb.patterns import (
    Event,
    EventBroker,
    EventBrokerConfig,
    SagaDefinitionBuilder,
    SagaManager,
    SagaManagerConfig,
    SagaStep,
)
from lion_nb.security import Authority

BAD = "<script>alert(1)</script>"
TIME = "datetime64[ns, UTC]"
SPAN = "timedelta64[ns]"


def is_category(series) -> bool:
    return isinstance(series.dtype, pd.CategoricalDtype)


def assert_html_is_escaped(df) -> None:
    html = df.to_html()
    assert BAD not in html and "&lt;script&gt;" in html

    class Scan(HTMLParser):
        def handle_starttag(self, tag, attrs):
            assert tag != "script"

    Scan().feed(df._repr_html_() or "")


async def test_events_and_deliveries_have_one_row_per_happening_and_per_delivery():
    clock = FakeClock()
    broker = EventBroker(EventBrokerConfig(max_deliveries=2), clock=clock)
    ok_rx, ok_ack = await broker.subscribe("order.*", "billing")
    bad_rx, bad_ack = await broker.subscribe("order.*", "flaky")
    for i in range(2):
        await broker.publish(Event("order.created", {"n": i}))
    await clock.advance(0.5)
    for _ in range(2):
        await ok_ack.success(await ok_rx.recv())
    for _ in range(4):
        await bad_ack.failure(await bad_rx.recv(), f"nope {BAD}")

    history = event_history_frame(broker)
    assert len(history) == len(broker.history())
    assert str(history["time"].dtype) == TIME
    for c in ("kind", "topic", "subscriber"):
        assert is_category(history[c]), c
    assert str(history["attempt"].dtype) == "Int64"
    assert history["error"].dtype == "string"
    assert set(history["kind"].astype(str)) >= {"published", "delivered", "acked", "failed",
                                               "dead_lettered"}

    d = deliveries_frame(broker)
    d = d[d["topic"] == "order.created"]
    assert len(d) == 4   # 2 events x 2 subscribers
    by_sub = d.groupby("subscriber", observed=True)
    assert dict(by_sub["outcome"].agg(lambda s: set(s.astype(str)))) == {
        "billing": {"acked"}, "flaky": {"dead_lettered"}}
    assert list(d[d["subscriber"] == "flaky"]["attempts"]) == [2, 2]
    assert d["latency"].dtype == SPAN and str(d["published_at"].dtype) == TIME
    acked = d[d["subscriber"] == "billing"]
    assert (acked["latency"] >= pd.Timedelta(seconds=0.5)).all()
    assert_html_is_escaped(d)
    await broker.close()


async def saga_manager():
    mgr = SagaManager(None, SagaManagerConfig())
    b = SagaDefinitionBuilder("trip", "Trip")
    for i, name in enumerate(("flight", "hotel", "car"), 1):
        b.add_step(SagaStep(name, f"book {name}", {"n": i}, "svc").with_compensation({"n": -i}))
    await mgr.register_definition(b.build())
    tries = {"hotel-undo": 0}

    async def handler(cmd):
        if cmd.kind == "step" and cmd.action["n"] == 3:
            raise RuntimeError(f"no cars {BAD}")
        if cmd.kind == "compensate" and cmd.action["n"] == -2:
            tries["hotel-undo"] += 1
            if tries["hotel-undo"] == 1:
                raise ConnectionError("hotel busy")
        return "ok"

    await mgr.register_service("svc", handler)
    return mgr


async def test_saga_steps_frame_has_one_row_per_attempt_forward_and_back():
    mgr = await saga_manager()
    inst = await mgr.run("trip", {})
    assert inst.status == "compensated"
    steps = saga_steps_frame(mgr)
    assert list(zip(steps["step_id"].astype(str), steps["phase"].astype(str),
                    steps["outcome"].astype(str))) == [
        ("flight", "forward", "succeeded"), ("hotel", "forward", "succeeded"),
        ("car", "forward", "failed"),
        ("hotel", "compensate", "failed"), ("hotel", "compensate", "succeeded"),
        ("flight", "compensate", "succeeded")]
    assert list(steps["attempt"]) == [1, 1, 1, 1, 2, 1]
    assert list(steps["status"].astype(str))[-1] == "compensated"
    for c in ("instance_id", "saga_id", "step_id", "phase", "outcome", "status"):
        assert is_category(steps[c]), c
    assert str(steps["started_at"].dtype) == TIME and steps["duration"].dtype == SPAN
    assert (steps["duration"] >= pd.Timedelta(0)).all()
    assert steps["error"].dtype == "string" and "hotel busy" in steps["error"].iloc[3]
    assert_html_is_escaped(steps)

    raw = saga_history_frame(mgr)
    assert len(raw) == len(mgr.history()) and str(raw["time"].dtype) == TIME
    await mgr.close()


def test_capability_audit_frame_has_grants_checks_and_denials():
    authority = Authority.generate()
    token = authority.mint("db:read:orders/*", holder=f"etl {BAD}")
    grants = authority.grant([token], instance_id="inst-1")
    grants.check("db:read:orders/1", node="load")
    with pytest.raises(CapabilityDeniedError):
        grants.check("db:write:orders/1", node="save")
    df = capability_audit_frame(authority)
    assert len(df) == len(authority.audit())
    assert str(df["time"].dtype) == TIME
    for c in ("action", "decision", "node", "instance_id", "holder"):
        assert is_category(df[c]), c
    decisions = df.dropna(subset=["decision"])
    assert set(decisions["decision"].astype(str)) == {"allow", "deny"}
    denied = decisions[decisions["decision"] == "deny"]
    assert list(denied["node"].astype(str)) == ["save"]
    assert_html_is_escaped(df)


async def test_scheduler_statistics_and_decisions_frames():
    scheduler = WorkflowScheduler(SchedulerConfig(max_concurrent_tasks=2))

    async def job():
        await asyncio.sleep(0)

    await asyncio.gather(*[await scheduler.submit(job) for _ in range(5)])
    df = scheduler_statistics_frame({"first": scheduler.statistics(), "again": scheduler})
    assert list(df["label"].astype(str)) == ["first", "again"]
    assert list(df["completed"]) == [5, 5] and str(df["completed"].dtype) == "Int64"
    assert df["wait_p95"].dtype == SPAN and df["throughput"].dtype == "float64"
    assert is_category(df["policy"])
    assert len(scheduler_statistics_frame(scheduler)) == 1

    decisions = scheduler_decisions_frame([
        SchedulerDecision(1.7e9, "deadline_missed", f"n {BAD}", "i1", "late by 2.0 ms"),
        SchedulerDecision(1.7e9 + 1, "policy_changed", None, None, "fifo → edf")])
    assert str(decisions["time"].dtype) == TIME and is_category(decisions["kind"])
    assert_html_is_escaped(decisions)
    await scheduler.close()


def test_empty_sources_give_empty_frames_with_dtypes():
    for frame in (event_history_frame([]), deliveries_frame([]), saga_steps_frame([]),
                  saga_history_frame([]), capability_audit_frame([]),
                  scheduler_statistics_frame({}), scheduler_decisions_frame([])):
        assert frame.empty
    assert str(deliveries_frame([])["published_at"].dtype) == TIME
    assert saga_steps_frame([])["duration"].dtype == SPAN
    with pytest.raises(TypeError):
        event_history_frame(42)
