"""Bad input is refused at the call that caused it, naming the saga and the step."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from lion_nb.errors import (
    ConfigError, SagaDefinitionError, SagaError, SagaNotFoundError, SagaStateError,
)
from lion_nb.model import RetryPolicy
from lion_nb.patterns import (
    Event, SagaDefinitionBuilder, SagaManagerConfig, SagaStatus, SagaStep,
)
from lion_nb.state import MemoryStorage

from saga.helpers import Services, chain, make_manager, settle


def test_duplicate_step_ids_are_refused_and_named():
    builder = SagaDefinitionBuilder("order-saga", "Orders").add_step(
        SagaStep("x", "X", {}, "svc").with_compensation({}))
    with pytest.raises(SagaDefinitionError, match="duplicate step id 'x' in saga 'order-saga'"
                       ) as info:
        builder.add_step(SagaStep("x", "X again", {}, "svc"))
    assert info.value.saga == "order-saga" and info.value.step == "x"
    with pytest.raises(SagaDefinitionError, match="duplicate step id 'y'"):
        builder.add_parallel(SagaStep("y", "Y", {}, "svc").with_compensation({}),
                             SagaStep("y", "Y", {}, "svc").with_compensation({}))


def test_a_saga_with_no_steps_is_refused():
    with pytest.raises(SagaDefinitionError, match="saga 'empty' has no steps") as info:
        SagaDefinitionBuilder("empty", "Nothing").build()
    assert info.value.saga == "empty"


@pytest.mark.parametrize("make, match", [
    (lambda: SagaStep("", "n", {}, "svc"), "step id"),
    (lambda: SagaStep("a", "n", {}, "bad service"), "not a usable topic segment"),
    (lambda: SagaStep("a", "n", {"when": object()}, "svc"), "action of step 'a'"),
    (lambda: SagaStep("a", "n", {}, "svc").with_compensation(float("nan")), "compensation"),
    (lambda: SagaStep("a", "n", {}, "svc").with_timeout(0), "timeout of step 'a'"),
    (lambda: SagaStep("a", "n", {}, "svc").with_retry(0), "max_attempts of step 'a'"),
    (lambda: SagaStep("a", "n", {}, "svc").with_compensation(None), "pivot"),
    (lambda: SagaDefinitionBuilder("s", "S").add_step("not a step"), "takes SagaStep"),
    (lambda: SagaDefinitionBuilder("s", "S").add_parallel(SagaStep("a", "n", {}, "svc")),
     "at least two"),
    (lambda: SagaDefinitionBuilder("s", "S").add_parallel(
        SagaStep("a", "n", {}, "svc"), SagaStep("b", "n", {}, "svc").with_compensation(1)),
     "pivot"),
])
def test_malformed_steps_are_refused_where_they_are_made(make, match):
    with pytest.raises(SagaDefinitionError, match=match):
        make()


@pytest.mark.parametrize("field, value", [
    ("name", "bad name"), ("name", ""), ("step_timeout", -1), ("step_timeout", float("inf")),
    ("compensation_timeout", True), ("step_attempts", 1.5), ("compensation_attempts", 0),
    ("history_limit", -1), ("keep_finished", None), ("local_dispatch", "yes"),
    ("step_backoff", "soon"), ("compensation_backoff", -1.0),
])
def test_bad_manager_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field) as info:
        SagaManagerConfig(**{field: value})
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_manager_config_is_frozen_keyword_only_and_takes_one_retry_type():
    config = SagaManagerConfig(step_backoff=0.5, compensation_backoff=RetryPolicy(backoff=2))
    assert config.step_backoff == RetryPolicy(backoff=0.5)
    assert config.compensation_backoff.delay(2) == 4.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        SagaManagerConfig("positional")  # type: ignore[misc]


async def test_unknown_definition_and_instance_ids():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(1))
    with pytest.raises(SagaNotFoundError, match="unknown saga definition 'nope'.*'chain'") \
            as info:
        await manager.create_instance("nope", {})
    assert info.value.saga == "nope"
    with pytest.raises(SagaNotFoundError, match="unknown saga instance 'ghost'"):
        await manager.start_instance("ghost")
    with pytest.raises(SagaNotFoundError):
        await manager.wait("ghost")
    with pytest.raises(TypeError, match="SagaDefinition"):
        await manager.register_definition(SagaDefinitionBuilder("x", "X"))
    await manager.close()
    await broker.close()


async def test_starting_an_instance_twice_is_refused():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(2))
    await manager.register_service("svc", Services())
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    with pytest.raises(SagaStateError, match="already running") as info:
        await manager.start_instance(inst.id)
    assert info.value.saga == "chain" and info.value.state is SagaStatus.RUNNING
    await manager.wait(inst.id)
    with pytest.raises(SagaStateError, match="already completed"):
        await manager.start_instance(inst.id)
    with pytest.raises(SagaStateError, match="already exists"):
        await manager.create_instance("chain", instance_id=inst.id)
    await manager.close()
    await broker.close()


async def test_a_reply_with_malformed_data_fails_the_step_and_names_it():
    manager, broker, _ = make_manager()
    saga = (SagaDefinitionBuilder("m", "malformed")
            .add_step(SagaStep("s1", "S1", 1, "good").with_compensation(0))
            .add_step(SagaStep("s2", "S2", 2, "weird").with_compensation(0))
            .build())
    await manager.register_definition(saga)
    good = Services()
    await manager.register_service("good", good, via_broker=True)
    rx, ack = await broker.subscribe("saga.command.weird", "weird")
    key = manager.key.for_service("weird")

    async def weird():
        async for d in rx:
            cmd = key.open_command(d.payload)
            await broker.publish(Event(cmd["reply_to"], "not even an object"))  # unsigned
            await broker.publish(Event(cmd["reply_to"], key.seal_reply(
                cmd, ok="yes")))                                              # ok not a bool
            await ack.success(d)

    server = asyncio.ensure_future(weird())
    inst = await manager.run("m")
    assert inst.status is SagaStatus.COMPENSATED
    assert inst.failed_step == "s2"
    assert "SagaReplyError" in inst.error and "'ok'" in inst.error and "'s2'" in inst.error
    assert good.steps("compensate") == ["s1"]
    assert manager.statistics().malformed_replies == 1     # signed, but not well formed
    assert manager.statistics().rejected_replies == 1      # not signed: never looked at
    assert any(r["event"] == "rejected_reply" for r in manager.history())
    server.cancel()
    await manager.close()
    await broker.close()


async def test_a_result_that_is_not_json_fails_the_step_when_the_log_is_persisted():
    manager, broker, _ = make_manager(storage=MemoryStorage())
    await manager.register_definition(chain(2))

    async def handler(cmd):
        return {"at": object()} if cmd.step_id == "s2" else "fine"

    await manager.register_service("svc", handler)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATED
    assert "not JSON-serializable" in inst.error and "'s2'" in inst.error
    with pytest.raises(SagaError, match="not JSON-serializable"):
        await manager.create_instance("chain", {"when": object()})
    await manager.close()
    await broker.close()


async def test_a_step_for_a_service_nobody_serves_without_a_broker_fails_clearly():
    from lion_nb.patterns import SagaManager
    manager = SagaManager(None)
    await manager.register_definition(chain(1, service="nobody"))
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATED
    assert "no handler is registered for service 'nobody'" in inst.error
    with pytest.raises(SagaError, match="has none"):
        await manager.register_service("x", Services(), via_broker=True)
    with pytest.raises(TypeError, match="callable"):
        await manager.register_service("x", 42)
    await manager.close()
    with pytest.raises(SagaError, match="closed"):
        await manager.create_instance("chain")
    await settle()
