"""At-least-once on a FakeClock: timeouts, failures, backoff, dead letters, backpressure."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import AckError, SubscriberFullError
from lion_nb.model import RetryPolicy
from lion_nb.patterns import Event, EventAck

from events.helpers import drain, make_broker


async def test_subscriber_that_never_acks_is_redelivered_then_dead_lettered():
    broker, clock = make_broker(ack_timeout=30, max_deliveries=3)
    rx, _ = await broker.subscribe("order.created", "lazy")
    dlq_rx, dlq_ack = await broker.subscribe("$dlq.order.created", "dlq-reader")
    adv_rx, _ = await broker.subscribe("$advisory.dead_letter", "ops")
    event_id = await broker.publish(Event("order.created", {"order_id": 7}))

    first = await rx.recv()
    assert (first.id, first.attempt) == (event_id, 1)
    await clock.advance(29.9)
    assert await drain(rx) == []                      # not before the timeout
    await clock.advance(0.1)
    second = await drain(rx)
    assert [(d.id, d.attempt) for d in second] == [(event_id, 2)]
    await clock.advance(30)
    assert [d.attempt for d in await drain(rx)] == [3]
    await clock.advance(30)                           # third timeout: max_deliveries reached
    assert await drain(rx) == []

    dead = await dlq_rx.recv()
    assert dead.payload["event"]["id"] == event_id
    assert dead.payload["event"]["payload"] == {"order_id": 7}
    assert dead.payload["attempts"] == 3 and dead.payload["subscriber"] == "lazy"
    assert "no ack within 30s" in dead.payload["last_error"]
    advisory = await adv_rx.recv()
    assert advisory.payload["event_id"] == event_id
    assert advisory.payload["dead_letter_id"] == dead.id
    await dlq_ack.success(dead)
    stats = broker.statistics()
    assert (stats.delivered, stats.redelivered, stats.dead_lettered) == (5, 2, 1)
    assert stats.pending["lazy"] == 0
    kinds = [r["kind"] for r in broker.history() if r["subscriber"] == "lazy"]
    assert kinds == ["delivered", "redelivery", "delivered", "redelivery", "delivered",
                     "dead_lettered"]
    await broker.close()


async def test_failure_ack_redelivers_with_explicit_delay_and_keeps_the_error():
    broker, clock = make_broker(max_deliveries=2)
    rx, ack = await broker.subscribe("t", "s")
    dlq_rx, _ = await broker.subscribe("$dlq.t", "d")
    await broker.publish(Event("t", 1))
    d1 = await rx.recv()
    await ack.send(EventAck.failure(d1, "s", ValueError("bad row"), delay=5))
    await clock.advance(4.9)
    assert await drain(rx) == []
    await clock.advance(0.1)
    (d2,) = await drain(rx)
    assert d2.attempt == 2 and d2.redelivered
    await ack.failure(d2, "still bad")
    dead = await dlq_rx.recv()
    assert dead.payload["last_error"] == "still bad" and dead.payload["attempts"] == 2
    assert broker.statistics().failed == 2


async def test_backoff_grows_between_redeliveries():
    broker, clock = make_broker(ack_timeout=1000, max_deliveries=10,
                                backoff=RetryPolicy(backoff=1, multiplier=2, max_backoff=5))
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    waits = []
    d = await rx.recv()
    for _ in range(4):
        await ack.failure(d, "boom")
        waited = 0.0
        while True:
            ready = await drain(rx)
            if ready:
                d = ready[0]
                break
            await clock.advance(0.5)
            waited += 0.5
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 5.0]


async def test_no_ack_timeout_uses_backoff_too():
    broker, clock = make_broker(ack_timeout=10, backoff=RetryPolicy(backoff=3))
    rx, _ = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    await rx.recv()
    await clock.advance(12.9)
    assert await drain(rx) == []
    await clock.advance(0.1)
    assert [d.attempt for d in await drain(rx)] == [2]


async def test_stale_ack_from_an_earlier_attempt_is_rejected():
    broker, clock = make_broker(ack_timeout=10)
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    old = await rx.recv()
    await clock.advance(10)
    new = (await drain(rx))[0]
    with pytest.raises(AckError, match="stale ack.*attempt 1") as info:
        await ack.send(EventAck.success(old, "s"))
    assert (info.value.event_id, info.value.subscriber) == (old.id, "s")
    with pytest.raises(AckError, match="stale"):
        await ack.send(EventAck.success(old.id, "s", attempt=1))
    await ack.send(EventAck.success(new, "s"))
    with pytest.raises(AckError, match="already acknowledged"):
        await ack.send(EventAck.success(old, "s"))    # the stale attempt stays stale


async def test_a_repeated_success_ack_is_accepted_and_changes_nothing():
    # JetStream takes a second ack of a message; so do we (a retried ack must be safe),
    # but only the same verdict on the same attempt: anything else is still an AckError.
    broker, _ = make_broker()
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    d = await rx.recv()
    await ack.send(EventAck.success(d, "s"))
    await ack.send(EventAck.success(d, "s"))
    await ack.send(EventAck.success(d.id, "s"))
    await ack.send_many([EventAck.success(d, "s")])
    assert broker.statistics().acked == 1
    assert [r["kind"] for r in broker.history()].count("acked") == 1
    with pytest.raises(AckError, match="already acknowledged"):
        await ack.send(EventAck.failure(d, "s", "changed my mind"))
    with pytest.raises(AckError, match="already acknowledged"):
        await ack.send(EventAck.success(d.id, "s", attempt=2))


async def test_ack_while_waiting_for_redelivery_is_rejected():
    broker, clock = make_broker(ack_timeout=10, backoff=RetryPolicy(backoff=60))
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    d = await rx.recv()
    await clock.advance(10)
    with pytest.raises(AckError, match="retry delay"):
        await ack.send(EventAck.success(d.id, "s"))


async def test_poison_event_does_not_block_the_others():
    broker, clock = make_broker(max_deliveries=3)
    rx, ack = await broker.subscribe("t", "s")
    for i in range(5):
        await broker.publish(Event("t", "poison" if i == 0 else i))
    handled = []
    for _ in range(7):  # 4 good events + 3 attempts of the poison one
        d = await rx.recv()
        if d.payload == "poison":
            await ack.failure(d, "cannot parse")
        else:
            handled.append(d.payload)
            await ack.success(d)
    assert handled == [1, 2, 3, 4]
    assert broker.statistics().dead_lettered == 1


async def test_publish_raises_when_a_subscriber_is_full_and_told_not_to_wait():
    broker, _ = make_broker(max_pending=2, on_full="raise")
    rx, ack = await broker.subscribe("t", "slow")
    await broker.publish(Event("t", 1))
    await broker.publish(Event("t", 2))
    with pytest.raises(SubscriberFullError, match="slow") as info:
        await broker.publish(Event("t", 3))
    assert info.value.subscriber == "slow"
    await ack.success(await rx.recv())
    await broker.publish(Event("t", 3))
    assert broker.statistics().pending == {"slow": 2}


async def test_publish_waits_for_room_by_default():
    broker, _ = make_broker(max_pending=1)
    rx, ack = await broker.subscribe("t", "slow")
    await broker.publish(Event("t", 1))
    blocked = asyncio.ensure_future(broker.publish(Event("t", 2)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()
    with pytest.raises(SubscriberFullError):
        await broker.publish(Event("t", 3), wait=False)
    await ack.success(await rx.recv())
    await blocked
    assert (await rx.recv()).payload == 2


async def test_unacked_inflight_counts_against_max_pending():
    broker, _ = make_broker(max_pending=1, on_full="raise")
    rx, _ = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    await rx.recv()  # in flight, not acked
    with pytest.raises(SubscriberFullError):
        await broker.publish(Event("t", 2))


async def test_close_wakes_a_blocked_publisher():
    from lion_nb.errors import BrokerClosedError
    broker, _ = make_broker(max_pending=1)
    await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    blocked = asyncio.ensure_future(broker.publish(Event("t", 2)))
    await asyncio.sleep(0)
    await broker.close()
    with pytest.raises(BrokerClosedError):
        await blocked
