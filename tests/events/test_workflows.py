"""Workflows meet events: ctx.publish through a broker, and event-triggered instances."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.engine import WorkflowExecutor
from lion_nb.errors import LionError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.patterns import Event, EventAck, EventBroker, WorkflowTrigger, connect_broker


@pytest.fixture
async def pair():
    ex, broker = WorkflowExecutor(), EventBroker()
    await ex.start()
    yield ex, broker
    await ex.stop()
    await broker.close()


async def test_node_publishes_through_the_broker_with_its_origin(pair):
    ex, broker = pair
    rx, ack = await broker.subscribe("invoice.>", "mailer")
    connect_broker(ex, broker)

    async def bill(ctx):
        await ctx.publish("invoice.created", {"order": ctx.inputs["order"]})
        return "billed"

    ex.add_handler("bill", bill)
    result = await ex.run(WorkflowBuilder("billing").add_node(Node("bill")).build(),
                          inputs={"order": "A-7"})
    delivery = await asyncio.wait_for(rx.recv(), 5)
    assert delivery.payload == {"order": "A-7"}
    assert delivery.headers["lion.node"] == "bill"
    assert delivery.headers["lion.instance_id"] == result.instance_id
    await ack.send(EventAck.success(delivery.id, "mailer"))


async def test_publish_without_a_broker_is_a_clear_error():
    ex = WorkflowExecutor()
    await ex.start()

    async def bill(ctx):
        await ctx.publish("x.y", 1)

    ex.add_handler("bill", bill)
    result = await ex.run(WorkflowBuilder("b").add_node(Node("bill")).build())
    assert "no event sink" in result.errors["bill"]
    assert isinstance(result.exceptions["bill"].__cause__, LionError)
    await ex.stop()


async def test_events_start_workflows_and_failures_are_redelivered(pair):
    ex, broker = pair
    seen = []

    async def handle(ctx):
        seen.append((ctx.inputs["order"], ctx.attempt))
        if ctx.inputs["order"] == "bad" and len(seen) < 3:
            raise RuntimeError("flaky downstream")
        return ctx.inputs["order"]

    ex.add_handler("handle", handle)
    wf = WorkflowBuilder("on-order").add_node(Node("handle")).build()
    trigger = await WorkflowTrigger.start(broker, ex, "order.created", wf, ack_timeout=30)
    await broker.publish(Event("order.created", {"order": "ok"}))
    await broker.publish(Event("order.created", {"order": "bad"}))
    for _ in range(500):
        stats = broker.statistics()
        if stats.acked == 2:
            break
        await asyncio.sleep(0.01)
    assert broker.statistics().acked == 2
    assert [o for o, _ in seen].count("bad") == 2  # first run failed, redelivery succeeded
    assert len(trigger.instances) == 3
    await trigger.stop()
