"""Compensations retry with backoff; a stuck one waits for an operator; pivots and aborts."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import SagaStateError
from lion_nb.model import RetryPolicy
from lion_nb.patterns import SagaStatus, StepStatus

from saga.helpers import Services, chain, make_manager, settle


async def test_compensation_failing_twice_then_succeeding_backs_off_and_compensates():
    manager, broker, clock = make_manager(compensation_backoff=RetryPolicy(
        backoff=1.0, multiplier=2.0, max_backoff=60.0))
    await manager.register_definition(chain(3))
    services = Services(fail_steps=["s3"], comp_failures={"s2": 2})
    await manager.register_service("svc", services)
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    await settle()
    assert services.steps("compensate") == ["s2"]
    await clock.advance(1.0)                  # backoff after attempt 1: 1 s
    assert services.steps("compensate") == ["s2", "s2"]
    await clock.advance(1.9)                  # after attempt 2: 2 s
    assert services.steps("compensate") == ["s2", "s2"]
    await clock.advance(0.1)
    await manager.wait(inst.id)
    assert services.steps("compensate") == ["s2", "s2", "s2", "s1"]
    assert inst.status is SagaStatus.COMPENSATED
    assert inst.steps["s2"].comp_attempts == 3
    assert manager.statistics().compensation_attempts_failed == 2
    await manager.close()
    await broker.close()


async def test_compensation_failing_for_good_needs_attention_then_operator_retry_succeeds():
    manager, broker, _ = make_manager(compensation_attempts=3)
    await manager.register_definition(chain(3))
    services = Services(fail_steps=["s3"], comp_failures={"s2": -1})
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATION_FAILED
    assert inst.status.needs_attention
    assert inst.failed_step == "s2"
    assert "'s2'" in inst.error and "undo s2 broke" in inst.error and "3 attempt" in inst.error
    assert inst.steps["s2"].status is StepStatus.COMPENSATION_FAILED
    assert inst.steps["s1"].status is StepStatus.SUCCEEDED          # not undone yet
    assert manager.statistics().needs_attention == 1
    assert await manager.wait(inst.id) is inst                     # resting: returns at once

    services.comp_failures["s2"] = 0                                # the operator fixed it
    await manager.retry(inst.id)
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPENSATED
    assert inst.compensation_path == ["s2", "s1"]
    assert "'s3'" in inst.error                   # the reason it rolled back is kept
    assert manager.statistics().needs_attention == 0
    await manager.close()
    await broker.close()


async def test_mark_resolved_skips_the_stuck_compensation_and_continues():
    manager, broker, _ = make_manager(compensation_attempts=1)
    await manager.register_definition(chain(3))
    services = Services(fail_steps=["s3"], comp_failures={"s2": -1})
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATION_FAILED
    await manager.mark_resolved(inst.id, "refunded by hand")
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPENSATED
    assert inst.steps["s2"].resolved == "refunded by hand"
    assert services.steps("compensate") == ["s2", "s1"]
    await manager.close()
    await broker.close()


async def test_operator_actions_are_refused_when_nothing_is_stuck():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(2))
    await manager.register_service("svc", Services())
    inst = await manager.run("chain")
    for action in (manager.retry, manager.mark_resolved):
        with pytest.raises(SagaStateError, match="completed") as info:
            await action(inst.id)
        assert info.value.state is SagaStatus.COMPLETED
    await manager.close()
    await broker.close()


async def test_after_a_pivot_the_saga_only_goes_forward():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(4, pivots=[2]))
    services = Services(fail_steps=["s4"])
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.FAILED and inst.status.needs_attention
    assert services.steps("compensate") == []            # nothing rolled back past the pivot
    assert inst.failed_step == "s4" and "pivot" in inst.error
    services.fail_steps.clear()
    await manager.retry(inst.id)                          # forward again
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPLETED and inst.error is None
    assert services.steps("step") == ["s1", "s2", "s3", "s4", "s4"]
    await manager.close()
    await broker.close()


async def test_failure_before_the_pivot_still_compensates():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(3, pivots=[3]))
    services = Services(fail_steps=["s3"])
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATED
    assert services.steps("compensate") == ["s2", "s1"]
    await manager.close()
    await broker.close()


async def test_mark_resolved_after_a_pivot_carries_on_forward():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(3, pivots=[1]))
    services = Services(fail_steps=["s2"])
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.FAILED
    await manager.mark_resolved(inst.id, "shipped by hand")
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPLETED
    assert services.steps("step") == ["s1", "s2", "s3"]
    await manager.close()
    await broker.close()


async def test_user_abort_waits_for_the_step_in_flight_then_compensates():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(4))
    gate = asyncio.Event()
    services = Services()

    async def handler(cmd):
        if cmd.kind == "step" and cmd.step_id == "s2":
            await gate.wait()
        return await services(cmd)

    await manager.register_service("svc", handler)
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    await settle()
    await manager.abort(inst.id, "customer cancelled")
    assert inst.abort_reason == "customer cancelled"
    gate.set()
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPENSATED
    assert services.steps("step") == ["s1", "s2"]
    assert services.steps("compensate") == ["s2", "s1"]
    assert inst.error == "aborted: customer cancelled"
    await manager.close()
    await broker.close()


async def test_abort_of_a_created_saga_ends_it_without_work():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(2))
    services = Services()
    await manager.register_service("svc", services)
    inst = await manager.create_instance("chain")
    await manager.abort(inst.id)
    assert inst.status is SagaStatus.COMPENSATED and services.calls == []
    with pytest.raises(SagaStateError, match="compensated"):
        await manager.start_instance(inst.id)
    await manager.close()
    await broker.close()


async def test_abort_is_refused_after_a_pivot_and_when_finished():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(3, pivots=[1]))
    gate = asyncio.Event()

    async def handler(cmd):
        if cmd.step_id == "s2":
            await gate.wait()
        return "ok"

    await manager.register_service("svc", handler)
    inst = await manager.create_instance("chain")
    await manager.start_instance(inst.id)
    await settle()
    with pytest.raises(SagaStateError, match="pivot step 's1'"):
        await manager.abort(inst.id)
    gate.set()
    await manager.wait(inst.id)
    with pytest.raises(SagaStateError, match="completed"):
        await manager.abort(inst.id)
    await manager.close()
    await broker.close()
