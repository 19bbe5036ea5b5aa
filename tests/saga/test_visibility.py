"""What a notebook sees: observe events, history rows, statistics, display hooks, exports."""

from __future__ import annotations

import types

import lion_nb.patterns as patterns
import lion_nb.patterns.saga as saga_module
from lion_nb.engine import EventKind, ObserveStream
from lion_nb.patterns import SagaDefinitionBuilder, SagaStatus, SagaStep

from saga.helpers import Services, chain, make_manager


async def test_observe_stream_follows_state_and_steps_forward_and_backward():
    stream = ObserveStream()
    seen = []
    stream.subscribe(seen.append, [EventKind.SAGA_STATE, EventKind.SAGA_STEP])
    manager, broker, _ = make_manager(observe=stream)
    await manager.register_definition(chain(2))
    await manager.register_service("svc", Services(fail_steps=["s2"]))
    inst = await manager.run("chain")
    states = [e.data["status"] for e in seen if e.kind is EventKind.SAGA_STATE]
    assert states == ["running", "compensating", "compensated"]
    compensating = next(e for e in seen if e.kind is EventKind.SAGA_STATE
                        and e.data["status"] == "compensating")
    assert compensating.data["failed_step"] == "s2" and compensating.instance_id == inst.id
    assert compensating.data["previous"] == "running"
    steps = [(e.node, e.data["status"], e.data["phase"]) for e in seen
             if e.kind is EventKind.SAGA_STEP]
    assert steps == [("s1", "running", "forward"), ("s1", "succeeded", "forward"),
                     ("s2", "running", "forward"), ("s2", "failed", "forward"),
                     ("s1", "compensating", "compensate"), ("s1", "compensated", "compensate")]
    first = next(e for e in seen if e.kind is EventKind.SAGA_STEP)
    assert first.data["saga_id"] == "chain" and first.data["step_name"] == "Step 1"
    assert first.data["service"] == "svc" and first.attempt == 1
    await manager.close()
    await broker.close()


async def test_history_rows_and_statistics():
    manager, broker, _ = make_manager(compensation_attempts=1)
    await manager.register_definition(chain(2))
    services = Services()
    await manager.register_service("svc", services)
    await manager.run("chain")
    services.fail_steps.add("s2")
    await manager.run("chain")
    services.comp_failures["s1"] = -1
    stuck = await manager.run("chain")
    rows = manager.history()
    assert set(rows[0]) == {"time", "saga_id", "instance_id", "event", "status", "step_id",
                            "step_name", "phase", "attempt", "error"}
    mine = [(r["event"], r["status"], r["step_id"]) for r in rows
            if r["instance_id"] == stuck.id]
    assert mine[0] == ("created", "created", None)
    assert mine[-1] == ("status", "compensation_failed", None)
    assert ("attempt_failed", "compensation_failed", "s1") in mine
    stats = manager.statistics()
    assert (stats.completed, stats.compensated, stats.compensation_failed) == (1, 1, 1)
    assert stats.needs_attention == 1 and stats.running == 0 and stats.created == 0
    assert stats.steps_succeeded == 4 and stats.compensations_succeeded == 1
    assert "needs_attention=1" in repr(manager)
    assert [i.id for i in manager.instances(SagaStatus.COMPENSATION_FAILED)] == [stuck.id]
    await manager.close()
    await broker.close()


async def test_history_can_be_switched_off():
    manager, broker, _ = make_manager(history_limit=0)
    await manager.register_definition(chain(1))
    await manager.register_service("svc", Services())
    await manager.run("chain")
    assert manager.history() == []
    await manager.close()
    await broker.close()


async def test_definitions_and_instances_display_through_the_notebook_hook():
    definition = (SagaDefinitionBuilder("d", "Display <me>")
                  .add_step(SagaStep("a", "A", 1, "svc").with_compensation(0))
                  .add_parallel(SagaStep("b", "B", 2, "svc").with_compensation(0),
                                SagaStep("c", "C", 3, "svc").with_compensation(0))
                  .add_step(SagaStep("d", "D (pivot)", 4, "svc"))
                  .build())
    assert definition._display_kind == "saga_definition"
    assert [len(stage) for stage in definition.stages] == [1, 2, 1]
    assert definition.pivots == ("d",)
    bundle = definition._repr_mimebundle_()
    assert "text/plain" in bundle
    manager, broker, _ = make_manager()
    await manager.register_definition(definition)
    await manager.register_service("svc", Services())
    inst = await manager.run("d")
    assert inst._display_kind == "saga_instance"
    assert "text/plain" in inst._repr_mimebundle_()
    summary = inst.to_dict()
    assert [s["status"] for s in summary["steps"]] == ["succeeded"] * 4
    assert inst.phase == "forward" and inst.pivot_passed
    await manager.close()
    await broker.close()


def test_definition_round_trips_through_json_data():
    definition = chain(3, pivots=[3])
    again = type(definition).from_dict(definition.to_dict())
    assert again.digest == definition.digest
    assert [s.id for s in again.steps] == ["s1", "s2", "s3"] and again.steps[2].pivot


def test_exports_list_exactly_the_public_saga_names():
    public = {name for name, value in vars(saga_module).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == set(saga_module.__all__)
    assert saga_module.__all__ == sorted(saga_module.__all__)
    for name in saga_module.__all__:
        assert name in patterns.__all__ and getattr(patterns, name) is getattr(saga_module,
                                                                               name)
        obj = getattr(saga_module, name)
        if callable(obj) and not isinstance(obj, str):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
