"""Sagas run their steps in order, pass results along, and undo exactly what completed."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import SagaServiceError, SagaStepTimeoutError
from lion_nb.patterns import (
    EventBroker, SagaDefinitionBuilder, SagaManager, SagaManagerConfig, SagaStatus, SagaStep,
    StepStatus,
)

from saga.helpers import Services, chain, make_manager, settle

N = 4


async def test_seed_example_runs_as_written():
    broker = EventBroker()
    saga = (SagaDefinitionBuilder("order-saga", "Order Processing")
            .add_step(SagaStep("create-order", "Create Order", {"action": "create_order"},
                               "order-service")
                      .with_compensation({"action": "cancel_order"}))
            .add_step(SagaStep("reserve-inventory", "Reserve Inventory",
                               {"action": "reserve_inventory"}, "inventory-service")
                      .with_compensation({"action": "release_inventory"}))
            .add_step(SagaStep("process-payment", "Process Payment", {"action": "charge_payment"},
                               "payment-service")
                      .with_compensation({"action": "refund_payment"}))
            .build())
    saga_manager = SagaManager(broker, SagaManagerConfig())
    await saga_manager.register_definition(saga)
    services = Services()
    for name in ("order-service", "inventory-service", "payment-service"):
        await saga_manager.register_service(name, services)
    instance = await saga_manager.create_instance("order-saga", {"order_id": "12345"})
    await saga_manager.start_instance(instance.id)
    done = await saga_manager.wait(instance.id)
    assert done is instance and instance.status is SagaStatus.COMPLETED
    assert services.steps("step") == ["create-order", "reserve-inventory", "process-payment"]
    assert [c.data for c in services.commands] == [{"order_id": "12345"}] * 3
    await saga_manager.close()
    await broker.close()


@pytest.mark.parametrize("via_broker", [False, True], ids=["local", "broker"])
@pytest.mark.parametrize("position", range(1, N + 1))
async def test_failure_at_each_position_compensates_completed_steps_in_reverse(
        position, via_broker):
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(N))
    services = Services(fail_steps=[f"s{position}"])
    await manager.register_service("svc", services, via_broker=via_broker)
    inst = await manager.run("chain", {"k": 1})
    assert inst.status is SagaStatus.COMPENSATED
    completed = [f"s{i}" for i in range(1, position)]
    assert services.steps("step") == completed + [f"s{position}"]
    assert services.steps("compensate") == completed[::-1]
    assert inst.compensation_path == completed[::-1]
    assert inst.steps[f"s{position}"].status is StepStatus.FAILED
    assert all(inst.steps[s].status is StepStatus.COMPENSATED for s in completed)
    assert inst.failed_step == f"s{position}" and f"'s{position}'" in inst.error
    assert "broke" in inst.error and "'chain'" in inst.error
    await manager.close()
    await broker.close()


async def test_results_reach_later_steps_and_compensations():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(3))
    services = Services(fail_steps=["s3"])
    await manager.register_service("svc", services)
    inst = await manager.run("chain")
    by_call = {(c.kind, c.step_id): c for c in services.commands}
    assert dict(by_call["step", "s3"].results) == {
        "s1": {"done": "s1", "seen": []}, "s2": {"done": "s2", "seen": ["s1"]}}
    assert by_call["compensate", "s2"].result == {"done": "s2", "seen": ["s1"]}
    assert by_call["compensate", "s1"].action == {"undo": 1}
    assert inst.steps["s2"].comp_result == {"undone": "s2",
                                            "had": {"done": "s2", "seen": ["s1"]}}
    await manager.close()
    await broker.close()


async def test_completed_saga_records_every_result():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(3))
    await manager.register_service("svc", Services())
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPLETED
    assert list(inst.results) == ["s1", "s2", "s3"]
    assert inst.completed_steps == ["s1", "s2", "s3"]
    assert inst.finished_at is not None and inst.error is None
    await manager.close()
    await broker.close()


async def test_parallel_siblings_run_together_and_are_compensated_when_one_fails():
    saga = (SagaDefinitionBuilder("par", "parallel")
            .add_step(SagaStep("a", "A", 1, "svc").with_compensation(-1))
            .add_parallel(SagaStep("b", "B", 2, "svc").with_compensation(-2),
                          SagaStep("c", "C", 3, "svc").with_compensation(-3))
            .add_step(SagaStep("d", "D", 4, "svc").with_compensation(-4))
            .build())
    manager, broker, _ = make_manager()
    await manager.register_definition(saga)
    running: set[str] = set()
    overlap: list[set[str]] = []
    gate = asyncio.Event()

    async def handler(cmd):
        if cmd.kind == "step" and cmd.step_id in "bc":
            running.add(cmd.step_id)
            overlap.append(set(running))
            if len(running) == 2:
                gate.set()
            await gate.wait()
            if cmd.step_id == "c" and cmd.data == "fail":
                raise RuntimeError("c broke")
        return cmd.step_id

    await manager.register_service("svc", handler)
    ok = await manager.run("par", "ok")
    assert ok.status is SagaStatus.COMPLETED and {"b", "c"} in overlap
    running.clear()
    gate.clear()
    bad = await manager.run("par", "fail")
    assert bad.status is SagaStatus.COMPENSATED
    assert bad.compensation_path == ["b", "a"]   # c failed; d never ran
    assert bad.steps["d"].status is StepStatus.PENDING
    await manager.close()
    await broker.close()


async def test_step_retry_succeeds_within_its_attempts_with_backoff():
    saga = (SagaDefinitionBuilder("r", "retry")
            .add_step(SagaStep("s1", "S1", 1, "svc").with_compensation(0)
                      .with_retry(3, backoff=2.0))
            .build())
    manager, broker, clock = make_manager()
    await manager.register_definition(saga)
    services = Services(fail_times={"s1": 2})
    await manager.register_service("svc", services)
    inst = await manager.create_instance("r")
    await manager.start_instance(inst.id)
    await settle()
    assert services.steps("step") == ["s1"]
    await clock.advance(2.0)                      # first backoff: 2 s
    assert services.steps("step") == ["s1", "s1"]
    await clock.advance(3.9)                      # second backoff: 4 s, not over yet
    assert len(services.steps("step")) == 2
    await clock.advance(0.1)
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPLETED and inst.steps["s1"].attempts == 3
    assert manager.statistics().step_attempts_failed == 2
    await manager.close()
    await broker.close()


@pytest.mark.parametrize("via_broker", [False, True], ids=["local", "broker"])
async def test_service_that_never_replies_times_out_and_compensates(via_broker):
    saga = (SagaDefinitionBuilder("t", "timeout")
            .add_step(SagaStep("s1", "S1", 1, "fast").with_compensation(0))
            .add_step(SagaStep("s2", "S2", 2, "silent").with_compensation(0).with_timeout(5))
            .build())
    manager, broker, clock = make_manager()
    await manager.register_definition(saga)
    fast = Services()
    await manager.register_service("fast", fast, via_broker=via_broker)
    if via_broker:   # a subscriber that takes commands and never answers
        await broker.subscribe("saga.command.silent", "black-hole")
    else:
        await manager.register_service("silent", Services(hang=["s2"]))
    inst = await manager.create_instance("t")
    await manager.start_instance(inst.id)
    await settle()
    assert inst.steps["s2"].status is StepStatus.RUNNING
    await clock.advance(4.9)
    assert inst.status is SagaStatus.RUNNING
    await clock.advance(0.1)
    await manager.wait(inst.id)
    assert inst.status is SagaStatus.COMPENSATED
    assert "SagaStepTimeoutError" in inst.error and "'silent'" in inst.error
    assert "'s2'" in inst.error and "5s" in inst.error
    assert fast.steps("compensate") == ["s1"]
    # The attempt failed with a real SagaStepTimeoutError, not a string that says so.
    error = inst.steps["s2"].exception
    assert isinstance(error, SagaStepTimeoutError) and isinstance(error, TimeoutError)
    assert error.step == "s2" and error.timeout == 5
    await manager.close()
    await broker.close()


@pytest.mark.parametrize("via_broker", [False, True], ids=["local", "broker"])
async def test_a_failed_attempt_keeps_a_typed_error(via_broker):
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(2))
    await manager.register_service("svc", Services(fail_steps=["s2"]), via_broker=via_broker)
    inst = await manager.run("chain")
    assert inst.status is SagaStatus.COMPENSATED
    error = inst.steps["s2"].exception
    if via_broker:   # only the service's words cross the broker
        assert isinstance(error, SagaServiceError) and error.step == "s2"
    else:            # in process the handler's own exception is kept
        assert isinstance(error, RuntimeError)
    assert inst.steps["s2"].error == "RuntimeError: s2 broke"
    await manager.close()
    await broker.close()


@pytest.mark.parametrize("via_broker", [False, True], ids=["local", "broker"])
async def test_many_concurrent_sagas_share_services(via_broker):
    manager, broker, _ = make_manager()
    saga = (SagaDefinitionBuilder("shared", "shared services")
            .add_step(SagaStep("order", "Order", {}, "orders").with_compensation({}))
            .add_step(SagaStep("stock", "Stock", {}, "inventory").with_compensation({}))
            .add_step(SagaStep("pay", "Pay", {}, "payments").with_compensation({}))
            .build())
    await manager.register_definition(saga)
    stock = {"left": 150}

    async def inventory(cmd):
        await asyncio.sleep(0)
        if cmd.kind == "step":
            if stock["left"] == 0:
                raise RuntimeError("out of stock")
            stock["left"] -= 1
        else:
            stock["left"] += 1
        return stock["left"]

    async def payments(cmd):
        await asyncio.sleep(0)
        if cmd.kind == "step" and cmd.data["n"] % 7 == 0:
            raise RuntimeError("card declined")
        return "paid"

    async def orders(cmd):
        return cmd.data["n"]

    for name, fn in (("orders", orders), ("inventory", inventory), ("payments", payments)):
        await manager.register_service(name, fn, via_broker=via_broker)
    n = 200
    insts = [await manager.create_instance("shared", {"n": i}) for i in range(n)]
    for inst in insts:
        await manager.start_instance(inst.id)
    done = await asyncio.gather(*(manager.wait(i.id) for i in insts))
    statuses = [d.status for d in done]
    completed = statuses.count(SagaStatus.COMPLETED)
    assert completed + statuses.count(SagaStatus.COMPENSATED) == n
    assert stock["left"] == 150 - completed          # every reservation kept or released
    assert completed <= 150
    stats = manager.statistics()
    assert stats.completed == completed and stats.running == 0 and stats.needs_attention == 0
    await manager.close()
    await broker.close()
