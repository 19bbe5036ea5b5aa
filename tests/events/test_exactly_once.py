"""Exactly-once: publisher de-duplication and effects committed at most once per subscriber."""

from __future__ import annotations

import pytest

from lion_nb.errors import AckError, SubscriberError
from lion_nb.patterns import DeliveryMode, Event, EventAck, InMemoryEventStore, SqliteEventStore

from events.helpers import drain, make_broker


async def test_duplicate_publish_within_the_window_is_stored_once():
    store = InMemoryEventStore()
    broker, clock = make_broker(store, dedup_window=60)
    rx, _ = await broker.subscribe("pay", "s")
    first = await broker.publish(Event("pay", {"amount": 5}, idempotency_key="pay-42"))
    await clock.advance(59)
    again = await broker.publish(Event("pay", {"amount": 5}, idempotency_key="pay-42"))
    assert again == first and len(store) == 1
    assert len(await drain(rx)) == 1
    assert broker.statistics().duplicates == 1
    await clock.advance(2)  # the window has passed: a new event
    assert await broker.publish(Event("pay", {"amount": 5}, idempotency_key="pay-42")) != first
    assert len(store) == 2


async def test_republishing_the_same_event_id_is_stored_once():
    store = InMemoryEventStore()
    broker, _ = make_broker(store)
    rx, _ = await broker.subscribe("t", "s")
    ev = Event("t", 1)
    await broker.publish(ev)
    await broker.publish(Event("t", 1, id=ev.id))
    assert len(store) == 1 and len(await drain(rx)) == 1


async def test_publish_many_dedups_keys_inside_the_batch():
    broker, _ = make_broker()
    rx, _ = await broker.subscribe("t", "s")
    ids = await broker.publish_many([Event("t", i, idempotency_key=f"k{i % 2}") for i in range(4)])
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]
    assert [d.payload for d in await drain(rx)] == [0, 1]


async def test_idempotency_keys_survive_a_restart(tmp_path):
    db = tmp_path / "events.db"
    broker, clock = make_broker(SqliteEventStore(db), dedup_window=60)
    first = await broker.publish(Event("pay", 1, idempotency_key="once"))
    await broker.close()
    broker2, _ = make_broker(SqliteEventStore(db), clock=clock, dedup_window=60)
    assert await broker2.publish(Event("pay", 1, idempotency_key="once")) == first
    assert len(await broker2.replay("pay")) == 1
    await broker2.close()


def _add(amount):
    def effect(state):
        state["total"] = state.get("total", 0) + amount
        state.setdefault("seen", []).append(amount)
    return effect


async def test_crash_between_effect_and_ack_applies_the_effect_once(tmp_path):
    db = tmp_path / "ledger.db"
    broker, clock = make_broker(SqliteEventStore(db))
    rx, ack = await broker.subscribe("pay", "ledger", mode=DeliveryMode.EXACTLY_ONCE)
    await broker.publish_many([Event("pay", {"amount": a}) for a in (10, 20, 30)])
    d1 = await rx.recv()
    await ack.send(EventAck.success(d1, "ledger", effects=_add(d1.payload["amount"])))
    d2 = await rx.recv()
    assert await broker.apply_effect("ledger", d2, _add(d2.payload["amount"]))
    # The process dies here: the effect of d2 is committed, its ack never sent.
    # Closing writes nothing more than a crash would have left on disk.
    await broker.close()

    broker2, _ = make_broker(SqliteEventStore(db), clock=clock)
    rx2, ack2 = await broker2.subscribe("pay", "ledger", mode=DeliveryMode.EXACTLY_ONCE)
    redelivered = await drain(rx2)
    assert [d.payload["amount"] for d in redelivered] == [30]   # d2 is not handed out again
    for d in redelivered:
        await ack2.send(EventAck.success(d, "ledger", effects=_add(d.payload["amount"])))
    state = await broker2.subscriber_state("ledger")
    assert state == {"total": 60, "seen": [10, 20, 30]}
    assert broker2.statistics().pending == {"ledger": 0}
    await broker2.close()


async def test_effect_from_a_timed_out_attempt_and_its_redelivery_applies_once():
    broker, clock = make_broker(ack_timeout=5, delivery_mode="exactly_once")
    rx, ack = await broker.subscribe("pay", "ledger")
    await broker.publish(Event("pay", {"amount": 7}))
    slow = await rx.recv()
    await clock.advance(5)                                   # attempt 1 timed out
    fast = (await drain(rx))[0]
    assert await broker.apply_effect("ledger", fast, _add(7))
    await ack.send(EventAck.success(fast, "ledger"))
    assert not await broker.apply_effect("ledger", slow, _add(7))   # the slow one is late
    with pytest.raises(AckError):
        await ack.send(EventAck.success(slow, "ledger", effects=_add(7)))
    assert (await broker.subscriber_state("ledger"))["total"] == 7


async def test_processed_but_unacked_event_is_finished_not_redelivered_after_timeout():
    broker, clock = make_broker(ack_timeout=5)
    rx, _ = await broker.subscribe("pay", "ledger", mode="exactly_once")
    await broker.publish(Event("pay", 1))
    d = await rx.recv()
    assert await broker.apply_effect("ledger", d, {"last": 1})
    await clock.advance(5)
    assert await drain(rx) == []
    assert broker.statistics().pending == {"ledger": 0}
    assert await broker.subscriber_state("ledger") == {"last": 1}


async def test_effects_need_an_exactly_once_subscription():
    broker, _ = make_broker()
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    d = await rx.recv()
    with pytest.raises(SubscriberError, match="EXACTLY_ONCE"):
        await broker.apply_effect("s", d, {"x": 1})
    with pytest.raises(AckError, match="exactly-once"):
        await ack.send(EventAck.success(d, "s", effects={"x": 1}))
    await ack.success(d)  # the refused ack left the delivery intact


async def test_effect_that_raises_changes_nothing():
    broker, _ = make_broker(delivery_mode="exactly_once")
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    d = await rx.recv()

    def broken(state):
        state["half"] = True
        raise RuntimeError("effect failed")

    with pytest.raises(RuntimeError):
        await broker.apply_effect("s", d, broken)
    assert await broker.subscriber_state("s") == {}
    assert await broker.apply_effect("s", d, {"done": True})
