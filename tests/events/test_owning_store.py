"""The store contract's other half: a store that owns delivery, used with no broker change."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import AckError, EventError
from lion_nb.patterns import Event, EventAck
from lion_nb.patterns.events import ACKED, DEAD, PENDING

from events.helpers import make_broker
from events.helpers.server_store import ServerStore


async def recv(rx, timeout=2.0):
    return await asyncio.wait_for(rx.recv(), timeout)


async def test_publish_deliver_ack_goes_through_the_store():
    store = ServerStore()
    broker, _ = make_broker(store, ack_timeout=5)
    rx, ack = await broker.subscribe("order.*", "s")
    eid = await broker.publish(Event("order.created", {"n": 1}))
    assert await broker.publish(Event("order.created", {"n": 1}, id=eid)) == eid  # Msg-Id
    d = await recv(rx)
    assert (d.id, d.attempt) == (eid, 1)
    await ack.success(d)
    assert store.verdicts == [("s", eid, ACKED, None, None)]
    assert broker.statistics().acked == 1 and broker.statistics().duplicates == 1
    await asyncio.sleep(0.05)
    with pytest.raises(asyncio.QueueEmpty):
        rx.recv_nowait()


async def test_failure_naks_with_the_delay_and_the_store_redelivers():
    store = ServerStore()
    broker, _ = make_broker(store, ack_timeout=5, max_deliveries=3)
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    first = await recv(rx)
    await ack.failure(first, "busy", delay=0.01)
    assert store.verdicts[-1][2:] == (PENDING, 0.01, "busy")
    second = await recv(rx)
    assert second.attempt == 2
    with pytest.raises(AckError, match="stale"):
        await ack.send(EventAck.success(first, "s"))
    await ack.failure(second, "busy")
    third = await recv(rx)
    dlq, _ = await broker.subscribe("$dlq.t", "ops")
    await ack.failure(third, "still busy")            # last attempt: term + dead letter
    assert store.verdicts[-1][2] == DEAD
    dead = await recv(dlq)
    assert dead.payload["attempts"] == 3 and dead.payload["last_error"] == "still busy"


async def test_ack_wait_and_max_deliver_belong_to_the_store():
    store = ServerStore()
    broker, _ = make_broker(store, ack_timeout=0.05, max_deliveries=2)
    rx, _ = await broker.subscribe("t", "s")
    dlq, _ = await broker.subscribe("$dlq.t", "ops")
    await broker.publish(Event("t", "never acked"))
    assert (await recv(rx)).attempt == 1
    assert (await recv(rx)).attempt == 2              # the store's ack wait redelivered
    dead = await recv(dlq)                            # the store gave up: the broker says so
    assert dead.payload["last_error"] == "ack wait exceeded"
    assert broker.statistics().dead_lettered == 1
    assert broker.statistics().pending["s"] == 0


async def test_filters_stay_in_the_broker_and_filtered_events_are_acked():
    store = ServerStore()
    broker, _ = make_broker(store)
    rx, _ = await broker.subscribe("t", "s", "payload.n > 1")
    await broker.publish(Event("t", {"n": 1}))
    await broker.publish(Event("t", {"n": 2}))
    assert (await recv(rx)).payload == {"n": 2}
    assert [v[2:] for v in store.verdicts] == [(ACKED, None, "filtered")]


async def test_a_store_that_cannot_commit_effects_says_so():
    broker, _ = make_broker(ServerStore())
    rx, ack = await broker.subscribe("t", "s", mode="exactly_once")
    await broker.publish(Event("t", 1))
    with pytest.raises(EventError, match="cannot commit effects"):
        await ack.success(await recv(rx), effects={"x": 1})
