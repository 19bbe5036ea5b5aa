"""The broker's documented semantics, the same on the memory, SQLite and NATS stores.

Real time, short timeouts: JetStream's ack wait runs on the server, so no fake
clock can speed it up. Where NATS differs it is said in the test and in
docs/events.md: publishers are never blocked by a full subscriber (delivery
pauses instead, JetStream's max ack pending).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lion_nb.patterns import DeliveryMode, Event, EventAck

STORES = ["memory", "sqlite", "nats"]
pytestmark = pytest.mark.timeout(120)


async def recv(rx, timeout: float = 5.0):
    return await asyncio.wait_for(rx.recv(), timeout)


async def nothing_within(rx, seconds: float) -> bool:
    try:
        await asyncio.wait_for(rx.recv(), seconds)
    except asyncio.TimeoutError:
        return True
    return False


@pytest.mark.parametrize("kind", STORES)
async def test_publish_subscribe_ack_round_trip(make_broker, kind):
    broker = make_broker(kind)
    rx, ack = await broker.subscribe("order.created", "order-processor", None)
    await broker.publish(Event("order.created", {"order_id": "12345"}))
    event = await recv(rx)
    assert event.payload == {"order_id": "12345"} and event.attempt == 1
    await ack.send(EventAck.success(event.id, "order-processor"))
    stats = broker.statistics()
    assert (stats.published, stats.delivered, stats.acked) == (1, 1, 1)
    assert await nothing_within(rx, 0.3)


@pytest.mark.parametrize("kind", STORES)
async def test_wildcards_follow_nats_and_never_reach_broker_topics(make_broker, kind):
    broker = make_broker(kind, ack_timeout=5, max_deliveries=1)
    star, star_ack = await broker.subscribe("order.*", "star")
    tail, tail_ack = await broker.subscribe(">", "everything")
    await broker.publish(Event("order.created", 1))
    await broker.publish(Event("order.created.eu", 2))
    got = await recv(star)
    assert got.payload == 1
    await star_ack.success(got)
    assert await nothing_within(star, 0.3)
    seen = []
    for _ in range(2):
        d = await recv(tail)
        seen.append(d.payload)
        await tail_ack.failure(d, "boom")  # last attempt: dead-lettered to $dlq.order...
    assert sorted(seen) == [1, 2]
    # '>' does not swallow the dead letters it caused
    assert await nothing_within(tail, 0.5)


@pytest.mark.parametrize("kind", STORES)
async def test_group_members_each_get_different_events(make_broker, kind):
    broker = make_broker(kind)
    rx1, ack1 = await broker.subscribe("job.run", "w1", group="workers")
    rx2, ack2 = await broker.subscribe("job.run", "w2", group="workers")
    for i in range(20):
        await broker.publish(Event("job.run", i))
    seen: dict[str, list[int]] = {"w1": [], "w2": []}

    async def work(rx, ack, who):
        while len(seen["w1"]) + len(seen["w2"]) < 20:
            try:
                d = await asyncio.wait_for(rx.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            seen[who].append(d.payload)
            await ack.success(d)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(asyncio.gather(work(rx1, ack1, "w1"), work(rx2, ack2, "w2")), 20)
    assert sorted(seen["w1"] + seen["w2"]) == list(range(20))  # each event to one member


@pytest.mark.parametrize("kind", STORES)
async def test_failure_ack_redelivers_after_its_delay_then_dead_letters(make_broker, kind):
    broker = make_broker(kind, max_deliveries=2, ack_timeout=10)
    rx, ack = await broker.subscribe("pay.charge", "payments")
    dlq, dlq_ack = await broker.subscribe("$dlq.pay.charge", "ops")
    adv, _ = await broker.subscribe("$advisory.dead_letter", "ops-advisory")
    await broker.publish(Event("pay.charge", {"amount": 5}))
    first = await recv(rx)
    started = time.monotonic()
    await ack.failure(first, "card declined", delay=0.3)
    second = await recv(rx)
    assert second.attempt == 2 and second.id == first.id
    assert time.monotonic() - started >= 0.25
    await ack.failure(second, "card declined again")
    dead = await recv(dlq)
    assert dead.payload["event"]["id"] == first.id
    assert dead.payload["attempts"] == 2 and "again" in dead.payload["last_error"]
    await dlq_ack.success(dead)
    advisory = await recv(adv)
    assert advisory.payload["event_id"] == first.id
    assert broker.statistics().dead_lettered == 1


@pytest.mark.parametrize("kind", STORES)
async def test_unacked_delivery_is_redelivered_after_the_ack_timeout(make_broker, kind):
    broker = make_broker(kind, ack_timeout=0.5, max_deliveries=2)
    rx, ack = await broker.subscribe("a.b", "slow")
    dlq, _ = await broker.subscribe("$dlq.a.b", "ops")
    await broker.publish(Event("a.b", "x"))
    first = await recv(rx)
    again = await recv(rx, 5)
    assert (again.id, again.attempt) == (first.id, 2)
    dead = await recv(dlq, 5)   # the second attempt times out too: dead-lettered
    assert "no ack within" in dead.payload["last_error"]


@pytest.mark.parametrize("kind", STORES)
async def test_idempotency_key_stores_an_event_once(make_broker, kind):
    broker = make_broker(kind)
    rx, ack = await broker.subscribe("order.created", "p")
    await broker.publish(Event("order.created", 1, idempotency_key="order-1"))
    await broker.publish(Event("order.created", 1, idempotency_key="order-1"))
    d = await recv(rx)
    await ack.success(d)
    assert await nothing_within(rx, 0.5)
    assert broker.statistics().duplicates == 1


@pytest.mark.parametrize("kind", STORES)
async def test_exactly_once_effect_commits_once_per_event(make_broker, kind):
    broker = make_broker(kind, delivery_mode=DeliveryMode.EXACTLY_ONCE, ack_timeout=0.5)
    rx, ack = await broker.subscribe("acct.deposit", "ledger")
    await broker.publish(Event("acct.deposit", {"amount": 7}))
    d = await recv(rx)

    def add(state):
        state["balance"] = state.get("balance", 0) + d.payload["amount"]

    assert await broker.apply_effect("ledger", d, add) is True
    assert await broker.apply_effect("ledger", d, add) is False
    await ack.success(d)
    assert (await broker.subscriber_state("ledger")) == {"balance": 7}


@pytest.mark.parametrize("kind", ["nats"])
async def test_nats_full_subscriber_pauses_delivery_not_publishers(make_broker, kind):
    """NATS differs: max_pending is JetStream's max ack pending; publish never waits."""
    broker = make_broker(kind, max_pending=3, ack_timeout=10)
    rx, ack = await broker.subscribe("q.item", "slow")
    for i in range(10):
        await asyncio.wait_for(broker.publish(Event("q.item", i)), 5)  # never blocks
    held = [await recv(rx) for _ in range(3)]
    assert await nothing_within(rx, 0.5)     # the server holds the rest back
    await ack.success(held[0])
    nxt = await recv(rx)
    assert nxt.payload == 3


@pytest.mark.parametrize("kind", STORES)
async def test_new_subscription_replays_the_log_from_an_offset(make_broker, kind):
    broker = make_broker(kind)
    for i in range(3):
        await broker.publish(Event("hist.item", i))
    assert [e.payload for e in await broker.replay("hist.*", from_offset=2)] == [1, 2]
    rx, ack = await broker.subscribe("hist.item", "late", from_offset=2)
    got = [await recv(rx) for _ in range(2)]
    assert [d.payload for d in got] == [1, 2]
    for d in got:
        await ack.success(d)
    await broker.publish(Event("hist.item", 3))
    assert (await recv(rx)).payload == 3


# -- JetStream's acknowledgement kinds, on every store ------------------------------------


@pytest.mark.parametrize("kind", STORES)
async def test_terminate_dead_letters_at_once_with_the_reason(make_broker, kind):
    broker = make_broker(kind, max_deliveries=5, ack_timeout=10)
    rx, ack = await broker.subscribe("pay.charge", "payments")
    dlq, _ = await broker.subscribe("$dlq.pay.charge", "ops")
    await broker.publish(Event("pay.charge", {"card": "stolen"}))
    d = await recv(rx)
    await ack.terminate(d, "card reported stolen")
    dead = await recv(dlq)
    assert dead.payload["attempts"] == 1 and dead.payload["last_error"] == "card reported stolen"
    assert await nothing_within(rx, 0.5)                 # never redelivered
    assert EventAck.terminate(d, "payments", "x").final


@pytest.mark.parametrize("kind", STORES)
async def test_in_progress_restarts_the_ack_timeout(make_broker, kind):
    broker = make_broker(kind, ack_timeout=2.0, max_deliveries=3)
    rx, ack = await broker.subscribe("job.long", "worker")
    await broker.publish(Event("job.long", 1))
    d = await recv(rx)
    for _ in range(3):                        # 2.4 s of work in all, never 2 s without word
        await asyncio.sleep(0.8)
        await ack.in_progress(d)
    assert await nothing_within(rx, 0.3)
    await ack.success(d)
    assert await nothing_within(rx, 2.2)
    assert broker.statistics().redelivered == 0


@pytest.mark.parametrize("kind", STORES)
async def test_backoff_list_sets_the_delay_before_each_redelivery(make_broker, kind):
    broker = make_broker(kind, ack_timeout=10, max_deliveries=4)
    rx, ack = await broker.subscribe("flaky.op", "retrier", backoff=[0.2, 1.5])
    await broker.publish(Event("flaky.op", 1))
    gaps = []
    d = await recv(rx)
    for _ in range(3):
        t = time.monotonic()
        await ack.failure(d, "try again")
        d = await recv(rx)
        gaps.append(time.monotonic() - t)
    assert d.attempt == 4
    assert 0.15 <= gaps[0] < 1.3 and gaps[1] >= 1.4 and gaps[2] >= 1.4  # the last repeats


@pytest.mark.parametrize("kind", STORES)
async def test_max_ack_pending_pauses_delivery_not_publishers(make_broker, kind):
    broker = make_broker(kind, ack_timeout=10)
    rx, ack = await broker.subscribe("q.item", "slow", max_ack_pending=2)
    for i in range(5):
        await asyncio.wait_for(broker.publish(Event("q.item", i)), 5)
    first, second = await recv(rx), await recv(rx)
    assert await nothing_within(rx, 0.4)
    await ack.success(first)
    third = await recv(rx)
    assert sorted(d.payload for d in (first, second, third)) == [0, 1, 2]


@pytest.mark.parametrize("bad", [[], [-1], ["1"], [float("inf")], 3])
async def test_backoff_list_is_checked(make_broker, bad):
    from lion_nb.errors import SubscriberError
    broker = make_broker("memory")
    with pytest.raises(SubscriberError, match="backoff"):
        await broker.subscribe("a.b", "s", backoff=bad)
