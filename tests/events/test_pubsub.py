"""Publish/subscribe basics: the seed example, fan-out, groups, wildcards, filters, views."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.engine import EventKind, ObserveStream
from lion_nb.patterns import (
    Delivery, Event, EventAck, EventBroker, EventBrokerConfig, InMemoryEventStore, TopicPattern,
)

from events.helpers import drain, make_broker


async def test_seed_example_runs_as_written():
    broker = EventBroker(EventBrokerConfig()).with_event_store(InMemoryEventStore())
    event_rx, ack_tx = await broker.subscribe("order.created", "order-processor", None)
    await broker.publish(Event("order.created", {"order_id": "12345", "customer": "ABC Corp"}))
    event = await event_rx.recv()
    assert event.payload == {"order_id": "12345", "customer": "ABC Corp"}
    assert event.attempt == 1 and event.subscriber == "order-processor"
    await ack_tx.send(EventAck.success(event.id, "order-processor"))
    stats = broker.statistics()
    assert (stats.published, stats.delivered, stats.acked) == (1, 1, 1)
    assert stats.pending == {"order-processor": 0}
    await broker.close()


async def test_async_for_ends_when_broker_closes():
    broker, _ = make_broker()
    rx, ack = await broker.subscribe("a.b", "s")
    for i in range(3):
        await broker.publish(Event("a.b", i))
    seen = []

    async def consume():
        async for delivery in rx:
            seen.append(delivery.payload)
            await ack.success(delivery)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await broker.close()
    await task
    assert seen == [0, 1, 2]


async def test_fan_out_gives_every_subscriber_its_own_copy_and_state():
    broker, _ = make_broker()
    rx1, ack1 = await broker.subscribe("order.created", "billing")
    rx2, _ = await broker.subscribe("order.created", "shipping")
    await broker.publish(Event("order.created", {"n": 1}))
    d1, d2 = await rx1.recv(), await rx2.recv()
    assert d1.id == d2.id and (d1.subscriber, d2.subscriber) == ("billing", "shipping")
    await ack1.success(d1)
    assert broker.statistics().pending == {"billing": 0, "shipping": 1}


async def test_group_members_share_work_each_event_to_one_member():
    broker, _ = make_broker()
    rx_a, ack_a = await broker.subscribe("job.>", "worker-a", group="workers")
    rx_b, ack_b = await broker.subscribe("job.>", "worker-b", group="workers")
    ids = [await broker.publish(Event("job.run", i)) for i in range(6)]
    got_a = []
    got_b = []
    for _ in range(3):
        got_a.append(await rx_a.recv())
        got_b.append(await rx_b.recv())
    assert sorted(d.id for d in got_a + got_b) == sorted(ids)
    assert not set(d.id for d in got_a) & set(d.id for d in got_b)
    for d in got_a:
        await ack_a.success(d)
    for d in got_b:
        await ack_b.success(d)
    assert broker.statistics().pending == {"workers": 0}


async def test_group_member_cannot_ack_what_another_member_holds():
    broker, _ = make_broker()
    rx_a, _ = await broker.subscribe("job", "worker-a", group="workers")
    _, ack_b = await broker.subscribe("job", "worker-b", group="workers")
    await broker.publish(Event("job", 1))
    d = await rx_a.recv()
    from lion_nb.errors import AckError
    with pytest.raises(AckError, match="worker-a"):
        await ack_b.send(EventAck.success(d.id, "worker-b"))


async def test_group_member_leaving_hands_its_unacked_events_to_the_others():
    broker, _ = make_broker()
    rx_a, _ = await broker.subscribe("job", "worker-a", group="workers")
    rx_b, ack_b = await broker.subscribe("job", "worker-b", group="workers")
    await broker.publish(Event("job", "x"))
    held = await rx_a.recv()
    await broker.unsubscribe("worker-a")
    again = await rx_b.recv()
    assert again.id == held.id and again.attempt == 2
    await ack_b.success(again)


@pytest.mark.parametrize("pattern, topic, matches", [
    ("order.created", "order.created", True),
    ("order.*", "order.created", True),
    ("order.*", "order.created.eu", False),
    ("order.*", "order", False),
    ("order.>", "order.created", True),
    ("order.>", "order.created.eu", True),
    ("order.>", "order", False),
    ("*.created", "invoice.created", True),
    (">", "anything.at.all", True),
    (">", "$dlq.order.created", False),
    ("$dlq.>", "$dlq.order.created", True),
])
async def test_wildcards(pattern, topic, matches):
    broker, _ = make_broker()
    rx, _ = await broker.subscribe(pattern, "s")
    if topic.startswith("$"):
        broker._route(Event(topic, 1, timestamp=0.0), broker._targets(Event(topic, 1)))
    else:
        await broker.publish(Event(topic, 1))
    assert len(await drain(rx)) == (1 if matches else 0)


async def test_filters_callable_and_declarative():
    broker, _ = make_broker()
    rx_big, _ = await broker.subscribe("order.>", "big", "payload.total > 100 and "
                                       "payload.region in ['eu', 'uk']")
    rx_fn, _ = await broker.subscribe("order.>", "fn", lambda e: e.payload["total"] % 2 == 0)
    for total, region in [(50, "eu"), (150, "eu"), (151, "us"), (300, "uk")]:
        await broker.publish(Event("order.created", {"total": total, "region": region}))
    assert [d.payload["total"] for d in await drain(rx_big)] == [150, 300]
    assert [d.payload["total"] for d in await drain(rx_fn)] == [50, 150, 300]


async def test_filter_that_raises_skips_only_that_subscriber(caplog):
    broker, _ = make_broker()
    rx_bad, _ = await broker.subscribe("t", "bad", lambda e: 1 / 0)
    rx_ok, _ = await broker.subscribe("t", "ok")
    await broker.publish(Event("t", 1))
    assert len(await drain(rx_ok)) == 1 and await drain(rx_bad) == []
    assert "bad" in caplog.text


async def test_observe_stream_history_and_subscriptions():
    stream = ObserveStream()
    seen = []
    stream.subscribe(seen.append)
    broker = EventBroker(EventBrokerConfig(), observe=stream)
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    d = await rx.recv()
    await ack.success(d)
    assert [e.kind for e in seen] == [EventKind.EVENT_PUBLISHED, EventKind.EVENT_DELIVERED,
                                      EventKind.EVENT_ACKED]
    assert seen[1].data["subscriber"] == "s" and seen[1].attempt == 1
    rows = broker.history()
    assert [r["kind"] for r in rows] == ["published", "delivered", "acked"]
    assert set(rows[0]) == {"time", "kind", "topic", "event_id", "subscriber", "attempt", "error"}
    assert broker.subscriptions()[0]["pattern"] == "t"


async def test_late_subscriber_replays_from_offset_and_time():
    broker, clock = make_broker()
    for i in range(5):
        await broker.publish(Event("metric.cpu", i))
        await clock.advance(10)
    await broker.publish(Event("other", "x"))
    rx, _ = await broker.subscribe("metric.*", "late", from_offset=3)
    await broker.publish(Event("metric.cpu", "live"))
    assert [d.payload for d in await drain(rx)] == [2, 3, 4, "live"]
    t2 = (await broker.replay("metric.>"))[2].timestamp
    rx2, _ = await broker.subscribe("metric.*", "late2", since=t2)
    assert [d.payload for d in await drain(rx2)] == [2, 3, 4, "live"]
    assert [e.payload for e in await broker.replay("metric.*", from_offset=4, limit=2)] == [3, 4]


async def test_delivery_reads_like_the_event():
    broker, _ = make_broker()
    rx, _ = await broker.subscribe("t", "s")
    ev = Event("t", {"k": 1}, headers={"h": "v"}, idempotency_key="key-1")
    await broker.publish(ev)
    d = await rx.recv()
    assert isinstance(d, Delivery) and d.event is ev
    assert (d.topic, d.payload, d.headers) == ("t", {"k": 1}, {"h": "v"})
    assert d.idempotency_key == "key-1"
    assert d.offset == 1 and d.timestamp is not None and not d.redelivered


@pytest.mark.parametrize("pattern", [">", "*", "*.*", "foo.>", "foo.*", "*.bar", "foo.*.bar"])
@pytest.mark.parametrize("not_a_topic", ["", ".", ".foo", "foo.", "foo..bar", "..", "foo.bar.",
                                         ".foo.bar"])
def test_a_string_that_is_not_a_topic_matches_no_pattern(pattern, not_a_topic):
    assert TopicPattern(pattern).matches(not_a_topic) is False


def test_valid_topics_still_match_the_wildcards():
    assert TopicPattern(">").matches("foo")
    assert TopicPattern("*").matches("foo")
    assert TopicPattern("foo.>").matches("foo.bar.baz")
    assert TopicPattern("foo.*.bar").matches("foo.x.bar")


async def test_a_held_delivery_keeps_its_attempt_after_a_redelivery():
    broker, clock = make_broker(ack_timeout=5)
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1))
    first = await rx.recv()
    await clock.advance(6)  # no ack: delivered again
    second = await rx.recv()
    assert (first.attempt, first.subscriber, second.attempt) == (1, "s", 2)
    assert first is not second and first.id == second.id
    await ack.success(second)
    await ack.success(second)  # a repeated ack is a no-op
    assert broker.statistics().acked == 1


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 7, 100])
async def test_history_keeps_the_last_rows_in_order_whatever_the_limit(limit):
    broker, clock = make_broker(history_limit=limit, ack_timeout=5)
    rx, ack = await broker.subscribe("t", "s")
    await broker.publish(Event("t", 1, id="e1"))
    d = await rx.recv()
    await clock.advance(1)
    await ack.success(d)
    await broker.publish(Event("t", 2, id="e2"))
    d = await rx.recv()
    await ack.failure(d, "boom", delay=0)
    d = await rx.recv()
    await ack.success(d)
    want = [("published", "e1", None, 0), ("delivered", "e1", "s", 1), ("acked", "e1", "s", 1),
            ("published", "e2", None, 0), ("delivered", "e2", "s", 1),
            ("failed", "e2", "s", 1), ("redelivery", "e2", "s", 1),
            ("delivered", "e2", "s", 2), ("acked", "e2", "s", 2)]
    rows = broker.history()
    assert [(r["kind"], r["event_id"], r["subscriber"], r["attempt"]) for r in rows] \
        == want[-limit:]
    times = [r["time"] for r in rows]
    assert times == sorted(times) and all(isinstance(t, float) for t in times)
    if limit >= len(want):
        assert rows[2]["time"] - rows[1]["time"] == pytest.approx(1.0)
