"""Saga steps receive capability tokens narrowed to the step, never wider; denial compensates."""

from __future__ import annotations

import asyncio

import pytest

from lion_nb.errors import RequirementError, SagaStateError, SecurityError
from lion_nb.patterns import SagaDefinitionBuilder, SagaManager, SagaStep
from lion_nb.security import Authority, Capability


def order_saga():
    return (SagaDefinitionBuilder("order", "Order")
            .add_step(SagaStep("reserve", "Reserve", {"a": "reserve"}, "inventory",
                               requires=["stock:write:warehouse/*"])
                      .with_compensation({"a": "release"}))
            .add_step(SagaStep("charge", "Charge", {"a": "charge"}, "payments",
                               requires=["payment:write:orders/*"])
                      .with_compensation({"a": "refund"}))
            .build())


@pytest.fixture
async def setup():
    authority = Authority.generate()
    manager = SagaManager(None, authority=authority)
    await manager.register_definition(order_saga())
    seen: list = []

    async def service(cmd):
        seen.append(cmd)
        return {"ok": cmd.action["a"]}

    await manager.register_service("inventory", service)
    await manager.register_service("payments", service)
    yield authority, manager, seen
    await manager.close()


def capabilities(authority, cmd):
    return [authority.verify(t).capability for t in cmd.tokens]


async def test_each_command_carries_only_what_its_step_requires(setup):
    authority, manager, seen = setup
    broad = authority.mint(Capability("stock", {"read", "write"}, scope="*"))
    pay = authority.mint(Capability("payment", {"read", "write", "delete"}, scope="orders/*"))
    inst = await manager.run("order", {"id": 1}, grants=[broad, pay])
    assert inst.status == "completed"
    reserve, charge = seen
    caps = capabilities(authority, reserve)
    assert [(c.resource, sorted(c.actions), c.scope) for c in caps] == \
        [("stock", ["write"], "warehouse/*")]  # narrowed: one action, the declared scope
    caps = capabilities(authority, charge)
    assert [(c.resource, sorted(c.actions)) for c in caps] == [("payment", ["write"])]


async def test_a_step_without_its_capability_is_not_dispatched_and_the_saga_compensates(setup):
    authority, manager, seen = setup
    stock = authority.mint(Capability("stock", {"write"}))
    inst = await manager.run("order", {"id": 2}, grants=[stock])   # no payment grant
    assert inst.status == "compensated"
    assert [c.step_id for c in seen] == ["reserve", "reserve"]     # step, then its undo
    assert seen[1].kind == "compensate"
    charge = inst.steps["charge"]
    assert charge.attempts == 1 and "CapabilityDeniedError" in charge.error  # final, no retry


async def test_steps_with_requirements_are_denied_without_grants(setup):
    authority, manager, seen = setup
    inst = await manager.run("order", {"id": 3})
    assert inst.status == "compensated"   # nothing had completed, nothing to undo
    assert seen == [] and "holds no grants" in inst.steps["reserve"].error


async def test_grants_need_an_authority_and_requirements_must_parse():
    manager = SagaManager(None)
    await manager.register_definition(order_saga())
    inst = await manager.create_instance("order", {})
    with pytest.raises(SecurityError):
        await manager.start_instance(inst.id, grants=["anything"])
    with pytest.raises(RequirementError):
        SagaStep("x", "X", {}, "svc", requires=["not a requirement"])
    await manager.close()


def test_requirements_survive_the_definition_round_trip():
    step = order_saga().steps[1]
    assert SagaStep.from_dict(step.to_dict()).requires == ("payment:write:orders/*",)


async def test_a_step_gets_one_token_per_requirement_narrowed_exactly_and_short_lived(setup):
    authority, manager, seen = setup
    two = (SagaDefinitionBuilder("two", "Two needs")
           .add_step(SagaStep("both", "Both", {"a": "both"}, "payments",
                              requires=["db:read:orders/1", "cache:write:c/1"]).with_timeout(7))
           .build())
    await manager.register_definition(two)
    wide = [authority.mint(Capability("db", {"read", "write"}, scope="orders/*")),
            authority.mint(Capability("cache", {"read", "write"}, scope="*"))]
    inst = await manager.run("two", {}, grants=wide)
    assert inst.status == "completed"
    [cmd] = seen
    tokens = [authority.verify(t) for t in cmd.tokens]
    assert sorted((t.capability.resource, sorted(t.capability.actions), t.capability.scope)
                  for t in tokens) == [("cache", ["write"], "c/1"), ("db", ["read"], "orders/1")]
    assert all(t.expires_at is not None and t.expires_at <= cmd.deadline + 1 for t in tokens)


async def test_a_refused_start_of_a_running_saga_leaves_its_grants_alone(setup):
    authority, manager, seen = setup
    gate = asyncio.Event()

    async def slow_stock(cmd):
        seen.append(cmd)
        await gate.wait()
        return "held"

    await manager.register_service("inventory", slow_stock)
    grants = [authority.mint(Capability("stock", {"write"})),
              authority.mint(Capability("payment", {"write"}))]
    inst = await manager.create_instance("order", {"id": 4})
    await manager.start_instance(inst.id, grants=grants)
    await asyncio.sleep(0)
    with pytest.raises(SagaStateError, match="already running"):
        await manager.start_instance(inst.id, grants=[])    # refused: must touch nothing
    gate.set()
    await manager.wait(inst.id)
    assert inst.status == "completed"                     # payment still had its grant
    assert [c.step_id for c in seen] == ["reserve", "charge"]
