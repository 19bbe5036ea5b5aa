"""Bad input is refused at the call that caused it, naming the culprit."""

from __future__ import annotations

import pytest

from lion_nb.errors import (
    AckError, BrokerClosedError, ConditionError, ConfigError, DefinitionError, EventError,
    EventTypeError, LionError, SubscriberError, TopicError,
)
from lion_nb.model import RetryPolicy
from lion_nb.patterns import Event, EventAck, EventBrokerConfig, RetryBackoff, TopicPattern
from lion_nb.patterns.events import validate_topic

from events.helpers import make_broker


@pytest.mark.parametrize("topic", ["", ".", "order.", ".order", "order..created", "order created",
                                   "order.*", "order.>", "ordér", "a/b", None, 42, "x" * 256])
async def test_publish_rejects_empty_and_invalid_topics(topic):
    broker, _ = make_broker()
    with pytest.raises(TopicError) as info:
        await broker.publish(Event(topic, 1))
    assert info.value.topic == topic


async def test_publish_on_broker_topics_is_reserved():
    broker, _ = make_broker()
    with pytest.raises(TopicError, match="reserved"):
        await broker.publish(Event("$dlq.order", 1))


@pytest.mark.parametrize("pattern", ["", "order.>.x", "order.**", "a..b", ">.a", "a.b>"])
async def test_subscribe_rejects_invalid_patterns(pattern):
    broker, _ = make_broker()
    with pytest.raises(TopicError, match="pattern|topic") as info:
        await broker.subscribe(pattern, "s")
    assert info.value.topic == pattern


def test_topic_error_messages_name_the_problem():
    with pytest.raises(TopicError, match="empty segment"):
        validate_topic("a..b")
    with pytest.raises(TopicError, match="must not be empty"):
        validate_topic("")
    with pytest.raises(TopicError, match="last segment"):
        TopicPattern("a.>.b")


async def test_double_subscribe_with_the_same_id_is_refused():
    broker, _ = make_broker()
    await broker.subscribe("a", "s")
    with pytest.raises(SubscriberError, match="already subscribed") as info:
        await broker.subscribe("b", "s")
    assert info.value.subscriber == "s"


@pytest.mark.parametrize("sid", ["", "   ", None, 3])
async def test_subscriber_id_must_be_a_non_empty_string(sid):
    broker, _ = make_broker()
    with pytest.raises(SubscriberError):
        await broker.subscribe("a", sid)


async def test_group_and_subscriber_names_do_not_mix():
    broker, _ = make_broker()
    await broker.subscribe("a", "name")
    with pytest.raises(SubscriberError, match="already a subscriber"):
        await broker.subscribe("a", "m1", group="name")
    await broker.subscribe("a", "m2", group="g")
    with pytest.raises(SubscriberError, match="subscribed to 'a', not 'b'"):
        await broker.subscribe("b", "m3", group="g")
    with pytest.raises(SubscriberError, match="another filter"):
        await broker.subscribe("a", "m4", "payload.x == 1", group="g")


async def test_ack_for_unknown_event_or_subscriber():
    broker, _ = make_broker()
    rx, ack = await broker.subscribe("a", "s")
    with pytest.raises(AckError, match="not pending") as info:
        await ack.send(EventAck.success("no-such-event", "s"))
    assert (info.value.event_id, info.value.subscriber) == ("no-such-event", "s")
    with pytest.raises(AckError, match="unknown subscriber 'ghost'") as info:
        await broker.ack(EventAck.success("e", "ghost"))
    assert info.value.subscriber == "ghost"
    with pytest.raises(AckError, match="channel of 's'"):
        await ack.send(EventAck.success("e", "other"))
    with pytest.raises(TypeError):
        await ack.send("not an ack")


async def test_ack_for_an_event_not_yet_received_is_stale():
    broker, _ = make_broker()
    _, ack = await broker.subscribe("a", "s")
    eid = await broker.publish(Event("a", 1))
    with pytest.raises(AckError, match="stale.*not delivered yet"):
        await ack.send(EventAck.success(eid, "s"))


async def test_unsubscribe_unknown_and_acks_after_unsubscribe():
    broker, _ = make_broker()
    with pytest.raises(SubscriberError, match="unknown subscriber 'x'"):
        await broker.unsubscribe("x")
    rx, ack = await broker.subscribe("a", "s")
    await broker.unsubscribe("s")
    with pytest.raises(AckError, match="unsubscribed"):
        await ack.send(EventAck.success("e", "s"))
    assert await rx.recv() is None              # the channel is closed: recv() says so
    with pytest.raises(SubscriberError, match="unsubscribed"):
        rx.recv_nowait()


async def test_everything_fails_clearly_on_a_closed_broker():
    broker, _ = make_broker()
    rx, ack = await broker.subscribe("a", "s")
    await broker.close()
    await broker.close()  # idempotent
    with pytest.raises(BrokerClosedError):
        await broker.publish(Event("a", 1))
    with pytest.raises(BrokerClosedError):
        await broker.publish_many([Event("a", 1)])
    with pytest.raises(BrokerClosedError):
        await broker.subscribe("a", "t")
    assert await rx.recv() is None              # as the seed's `while let Some(e) = rx.recv()`
    with pytest.raises(BrokerClosedError):
        rx.recv_nowait()
    with pytest.raises(BrokerClosedError):
        await ack.send(EventAck.success("e", "s"))
    assert [d async for d in rx] == []


async def test_bad_filters_are_refused_at_subscribe():
    broker, _ = make_broker()
    for bad in ["__import__('os')", "payload.x ==", "lambda: 1", "open('f')", "x > 1", 42]:
        with pytest.raises(ConditionError):
            await broker.subscribe("a", "s", bad)


async def test_with_event_store_after_first_use_is_refused():
    from lion_nb.patterns import InMemoryEventStore
    broker, _ = make_broker()
    await broker.publish(Event("a", 1))
    with pytest.raises(EventError, match="before the broker is used"):
        broker.with_event_store(InMemoryEventStore())
    with pytest.raises(EventTypeError) as info:
        make_broker()[0].with_event_store("not a store")
    assert info.value.value == "not a store"


@pytest.mark.parametrize("bad", [{"topic": "a"}, "a", None])
async def test_publishing_what_is_not_an_event_names_it(bad):
    broker, _ = make_broker()
    with pytest.raises(EventTypeError, match="takes an Event") as info:
        await broker.publish(bad)
    assert info.value.value == bad and isinstance(info.value, LionError)
    with pytest.raises(EventTypeError, match="takes Events"):
        await broker.publish_many([Event("a", 1), bad])
    assert broker.statistics().published == 0


@pytest.mark.parametrize("kwargs", [{"ack_timeout": 0}, {"max_deliveries": 0},
                                    {"max_pending": 0}, {"on_full": "drop"},
                                    {"dedup_window": -1}, {"dead_letter_prefix": "dlq"}])
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ConfigError) as info:
        EventBrokerConfig(**kwargs)
    assert info.value.field == next(iter(kwargs))
    assert isinstance(info.value, ValueError)   # what a Python user would catch, too


def test_config_is_frozen_and_keyword_only():
    import dataclasses
    config = EventBrokerConfig(ack_timeout=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ack_timeout = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        EventBrokerConfig(5)  # type: ignore[misc]


def test_invalid_backoff_and_failure_delay():
    with pytest.raises(DefinitionError):
        RetryPolicy(multiplier=0.5)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError):
        RetryBackoff(multiplier=0.5)
    with pytest.raises(AckError) as info:
        EventAck.failure("e", "s", "x", delay=-1)
    assert info.value.event_id == "e"


def test_retry_backoff_is_a_deprecated_retry_policy():
    with pytest.warns(DeprecationWarning, match="RetryPolicy"):
        old = RetryBackoff(1, 3, 10)
    assert isinstance(old, RetryPolicy)
    assert (old.initial, old.multiplier, old.maximum) == (1, 3, 10)
    assert [old.delay(n) for n in (1, 2, 3)] == [1, 3, 9]
    assert EventBrokerConfig(backoff=old).backoff is old


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"busy_timeout": -1}])
def test_invalid_sqlite_store_options_are_refused(tmp_path, kwargs):
    from lion_nb.patterns import SqliteEventStore
    with pytest.raises(ConfigError) as info:
        SqliteEventStore(tmp_path / "e.db", **kwargs)
    assert info.value.field == next(iter(kwargs))
