"""Replies are bound to the command they answer and signed; tokens never travel in clear."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import ConfigError
from lion_nb.patterns import (
    Event, EventBroker, SagaDefinitionBuilder, SagaKey, SagaManager, SagaManagerConfig,
    SagaService, SagaStatus, SagaStep, SqliteEventStore,
)
from lion_nb.security import Authority, Capability
from lion_nb.state import SqliteStorage

from saga.helpers import Services, chain, make_manager, settle


@pytest.fixture
async def broker_manager():
    manager, broker, clock = make_manager(step_timeout=5)
    await manager.register_definition(chain(1))
    yield manager, broker, clock
    await manager.close()
    await broker.close()


def reply(key, cid, attempt=1, **fields):
    """A reply signed with ``key`` to a command id nobody asked for (what a forger sends)."""
    return key.seal_reply({"command_id": cid, "attempt": attempt}, ok=True, **fields)


async def test_a_reply_published_before_the_step_runs_is_rejected(broker_manager):
    manager, broker, _ = broker_manager
    await manager.register_service("svc", Services(), via_broker=True)
    await manager.run("chain")                   # the manager now hears its reply topic
    inst = await manager.create_instance("chain", instance_id="order-1")
    cid = "order-1.f.s1.1"                       # the id the first attempt will have
    svc_key = manager.key.for_service("svc")
    await broker.publish(Event("saga.reply.saga-manager", reply(svc_key, cid, result="forged")))
    await broker.publish(Event("saga.reply.saga-manager",
                               {"command_id": cid, "ok": True, "result": "forged"}))
    await settle()
    await manager.start_instance(inst.id)
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPLETED
    assert inst.results == {"s1": {"done": "s1", "seen": []}}   # the service really ran
    assert manager.statistics().rejected_replies == 2


async def test_a_subscriber_without_the_service_key_cannot_answer_for_it(broker_manager):
    manager, broker, clock = broker_manager
    rx, ack = await broker.subscribe("saga.command.svc", "eavesdropper")
    stranger = SagaKey.generate().for_service("svc")            # not the manager's key
    other = manager.key.for_service("other-service")            # the manager's, other service
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    await settle()
    delivery = rx.recv_nowait()
    with pytest.raises(Exception, match="signature"):           # cannot even read it
        stranger.open_command(delivery.payload)
    body = delivery.payload["body"]                              # the clear parts it sees
    cid = body.split('"command_id":"')[1].split('"')[0]
    for key in (stranger, other):
        await broker.publish(Event("saga.reply.saga-manager", reply(key, cid, result="lie")))
    await ack.success(delivery)
    await settle()
    assert inst.status is SagaStatus.RUNNING and manager.statistics().rejected_replies == 2
    genuine = manager.key.for_service("svc")
    command = genuine.open_command(delivery.payload)
    await broker.publish(Event(command["reply_to"], genuine.seal_reply(command, ok=True,
                                                                       result="true")))
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPLETED and inst.results == {"s1": "true"}


async def test_a_reply_naming_another_attempt_is_rejected(broker_manager):
    manager, broker, clock = broker_manager
    rx, ack = await broker.subscribe("saga.command.svc", "svc")
    key = manager.key.for_service("svc")
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    await settle()
    command = key.open_command(rx.recv_nowait().payload)
    wrong = key.seal_reply({**command, "attempt": 2}, ok=True, result="replayed")
    await broker.publish(Event(command["reply_to"], wrong))
    await settle()
    assert inst.status is SagaStatus.RUNNING and manager.statistics().rejected_replies == 1
    await clock.advance(5)
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPENSATED and "SagaStepTimeoutError" in inst.error


async def test_command_ids_are_unambiguous():
    manager, broker, _ = make_manager()
    services = Services()
    await manager.register_service("svc", services)
    one = (SagaDefinitionBuilder("one", "dots in the instance")
           .add_step(SagaStep("c", "C", 1, "svc")).build())
    two = (SagaDefinitionBuilder("two", "dots in the step")
           .add_step(SagaStep("b.f.c", "BFC", 1, "svc")).build())
    for definition in (one, two):
        await manager.register_definition(definition)
    a = await manager.create_instance("one", instance_id="a.f.b")
    b = await manager.create_instance("two", instance_id="a")
    for inst in (a, b):
        await manager.start_instance(inst.id)
        await manager.wait(inst.id)
    ids = [cmd.command_id for cmd in services.commands]
    assert len(ids) == 2 and ids[0] != ids[1]
    await manager.close()
    await broker.close()


def test_a_saga_key_is_long_enough_and_a_service_needs_one():
    with pytest.raises(ConfigError, match="32"):
        SagaKey(b"short")
    with pytest.raises(ConfigError, match="key="):
        SagaService(EventBroker(), "svc", Services())
    with pytest.raises(ConfigError, match="belongs to service 'a'"):
        SagaKey.generate().for_service("a").for_service("b")


async def test_tokens_are_never_at_rest_in_the_event_store_or_the_saga_log(tmp_path):
    authority = Authority.generate()
    key = SagaKey.generate()
    broker = EventBroker().with_event_store(SqliteEventStore(tmp_path / "events.db"))
    storage = SqliteStorage(tmp_path / "sagas.db")
    manager = SagaManager(broker, SagaManagerConfig(name="vault"), storage=storage,
                          authority=authority, key=key)
    await manager.register_definition(
        SagaDefinitionBuilder("pay", "Pay")
        .add_step(SagaStep("charge", "Charge", {}, "payments",
                           requires=["payment:write:orders/*"]).with_compensation({}))
        .build())
    seen = []

    async def payments(cmd):
        seen.extend(cmd.tokens)
        return "charged"

    worker = await SagaService(broker, "payments", payments,
                               key=key.for_service("payments")).start()
    grant = authority.mint(Capability("payment", {"write"}, scope="orders/*"))
    try:
        inst = await manager.run("pay", {}, grants=[grant], timeout=30)
        assert inst.status is SagaStatus.COMPLETED and seen
        assert authority.verify(seen[0]).capability.resource == "payment"
    finally:
        await worker.stop()
        await manager.close()
        await broker.close()
        await storage.close()
    await asyncio.sleep(0)
    at_rest = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for token in [*seen, grant.serialize() if hasattr(grant, "serialize") else str(grant)]:
        secret = token.split(".")[-1].encode()     # the signature part alone is enough
        assert secret not in at_rest


async def test_a_manager_and_a_service_take_the_key_from_the_environment(monkeypatch):
    key = SagaKey.generate()
    monkeypatch.setenv("LION_NB_SAGA_KEY", key.secret.hex())
    manager, broker, _ = make_manager()
    assert manager.key.secret == key.secret
    worker = await SagaService(broker, "svc", Services()).start()
    await manager.register_definition(chain(1))
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPLETED and worker.handled == 1
    await worker.stop()
    await manager.close()
    await broker.close()
    monkeypatch.setenv("LION_NB_SAGA_KEY", "not hex")
    with pytest.raises(ConfigError, match="LION_NB_SAGA_KEY"):
        SagaKey.from_env()
