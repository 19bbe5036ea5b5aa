"""What a user is told when the server, the stream or the input is wrong: fast and clear."""

from __future__ import annotations

import socket
import time

import pytest

from lion_nb.errors import (
    BrokerConnectionError, ConfigError, EventError, StreamClashError,
)
from lion_nb.patterns import Event, EventBroker, NatsEventStore

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_raises_a_clear_error_within_seconds():
    url = f"nats://127.0.0.1:{free_port()}"
    broker = EventBroker().with_event_store(NatsEventStore(url, connect_timeout=1))
    started = time.monotonic()
    with pytest.raises(BrokerConnectionError) as caught:
        await broker.publish(Event("a.b", 1))
    assert time.monotonic() - started < 10
    assert caught.value.url == url and "cannot reach" in str(caught.value)
    await broker.close()


async def test_server_without_jetstream_is_named_as_such(nats_server):
    from lion_nb.patterns.nats import LocalNatsServer
    with LocalNatsServer(jetstream=False).start() as plain:
        broker = EventBroker().with_event_store(NatsEventStore(plain.url))
        with pytest.raises(BrokerConnectionError, match="no JetStream") as caught:
            await broker.subscribe("a.b", "s")
        assert caught.value.url == plain.url
        await broker.close()


async def test_a_foreign_stream_of_the_same_name_is_not_taken_over(nats_url, broker_name):
    import nats
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"LION_{broker_name.upper()}"
    await js.add_stream(name=stream, subjects=[f"other.{broker_name}.>"])
    try:
        broker = EventBroker().with_event_store(NatsEventStore(nats_url, name=broker_name))
        with pytest.raises(StreamClashError) as caught:
            await broker.publish(Event("a.b", 1))
        assert caught.value.stream == stream
        await broker.close()
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_a_stream_owning_the_subjects_is_reported(nats_url, broker_name):
    import nats
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=f"SQUAT_{broker_name}", subjects=[f"lion.{broker_name}.>"])
    try:
        broker = EventBroker().with_event_store(NatsEventStore(nats_url, name=broker_name))
        with pytest.raises(StreamClashError, match="overlap"):
            await broker.publish(Event("a.b", 1))
        await broker.close()
    finally:
        await js.delete_stream(f"SQUAT_{broker_name}")
        await nc.close()


@pytest.mark.parametrize("name", ["", "has space", "dots.in.it", "x" * 40, 7])
def test_broker_name_must_be_able_to_name_a_stream(name):
    with pytest.raises(ConfigError) as caught:
        NatsEventStore("nats://127.0.0.1:4222", name=name)
    assert caught.value.field == "name"


def test_storage_is_file_or_memory():
    with pytest.raises(ConfigError):
        NatsEventStore(storage="disk")


async def test_payload_that_is_not_json_is_refused_at_publish(make_broker):
    broker = make_broker("nats")
    with pytest.raises(EventError, match="not JSON"):
        await broker.publish(Event("a.b", {"when": object()}))


async def test_a_message_that_is_not_an_event_is_dead_lettered_not_parsed(make_broker, nats_url,
                                                                          broker_name):
    import asyncio

    import nats
    broker = make_broker("nats", ack_timeout=5)
    rx, ack = await broker.subscribe("a.b", "s")
    dlq, _ = await broker.subscribe("$dlq.a.b", "ops")
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(f"lion.{broker_name}.u.a.b", b"{not json")
        await nc.jetstream().publish(f"lion.{broker_name}.u.a.b",
                                     b'{"id": "x", "topic": "c.d", "payload": 1}')
    finally:
        await nc.close()
    await broker.publish(Event("a.b", "fine"))
    good = await asyncio.wait_for(rx.recv(), 5)
    assert good.payload == "fine"
    await ack.success(good)
    errors = sorted([(await asyncio.wait_for(dlq.recv(), 5)).payload["last_error"]
                     for _ in range(2)])
    assert "not JSON" in errors[0] + errors[1]
    assert "does not match the subject" in errors[0] + errors[1]
