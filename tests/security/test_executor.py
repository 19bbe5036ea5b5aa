"""Capabilities enforced by the executor: deny by default, ctx.resource, audit, ceiling."""

from __future__ import annotations

import pytest

from lion_nb.engine import EventKind, ExecutorConfig, WorkflowExecutor
from lion_nb.errors import (CapabilityDeniedError, ResourceError, SecurityError,
                            TokenExpiredError)
from lion_nb.clock import FakeClock
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.security import Authority, Capability
from lion_nb.state import NodeState


class FakeDb:
    def __init__(self):
        self.rows = []


@pytest.fixture
async def secured():
    clock = FakeClock()
    authority = Authority.generate(clock=clock)
    ex = WorkflowExecutor(config=ExecutorConfig(authority=authority))
    db = FakeDb()
    ex.resources.register("db", db)

    async def save(ctx):
        ctx.resource("db", "write").rows.append(ctx.node_name)
        return "saved"

    async def sneaky(ctx):  # declares read, tries to write
        return ctx.resource("db", "write")

    ex.add_handler("save", save)
    ex.add_handler("sneaky", sneaky)
    await ex.start()
    yield ex, authority, db, clock
    await ex.stop()


def wf(*nodes):
    return WorkflowBuilder("secure").add_nodes(*nodes).build()


async def test_granted_node_runs_and_gets_its_resource(secured):
    ex, authority, db, _ = secured
    token = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"))
    node = Node("SaveOrder", handler="save", requires=["db:write:orders/*"])
    result = await ex.run(wf(node), grants=[token])
    assert result["SaveOrder"] == "saved" and db.rows == ["SaveOrder"]


async def test_missing_grant_means_not_run_and_no_side_effect(secured):
    ex, authority, db, _ = secured
    read_only = authority.mint(Capability("db", {"read", "write"})).attenuate(actions={"read"})
    node = Node("SaveOrder", handler="save", requires=["db:write:orders/*"])
    result = await ex.run(wf(node), grants=[read_only])
    err = result.exceptions["SaveOrder"].__cause__
    assert isinstance(err, CapabilityDeniedError) and err.node == "SaveOrder"
    assert db.rows == [] and result.attempts["SaveOrder"] == 0


async def test_scope_mismatch_denied(secured):
    ex, authority, db, _ = secured
    token = authority.mint(Capability("db", {"write"}, scope="users/*"))
    result = await ex.run(wf(Node("S", handler="save", requires=["db:write:orders/1"])),
                          grants=[token])
    assert result.node_states["S"] is NodeState.FAILED and db.rows == []


async def test_handler_cannot_reach_undeclared_resource(secured):
    ex, authority, db, _ = secured
    token = authority.mint(Capability("db", {"read", "write"}))
    result = await ex.run(wf(Node("N", handler="sneaky", requires=["db:read"])),
                          grants=[token])
    assert "did not declare db:write" in result.errors["N"]


async def test_denied_node_can_be_skipped_instead():
    authority = Authority.generate()
    ex = WorkflowExecutor(config=ExecutorConfig(authority=authority, on_denied="skip"))
    ex.add_handler("save", lambda ctx: "x")
    await ex.start()
    result = await ex.run(wf(Node("S", handler="save", requires=["db:write"])), grants=[])
    assert result.node_states["S"] is NodeState.SKIPPED and result.succeeded
    await ex.stop()


async def test_expired_token_is_refused_at_grant(secured):
    ex, authority, _, clock = secured
    token = authority.mint(Capability("db", {"write"}), expires_in=10)
    await clock.advance(11)
    with pytest.raises(TokenExpiredError):
        await ex.execute_workflow(wf(Node("S", handler="save", requires=["db:write"])),
                                  grants=[token])


async def test_every_decision_is_audited_in_the_observe_stream(secured):
    ex, authority, _, _ = secured
    seen = []
    ex.observe.subscribe(seen.append, [EventKind.CAPABILITY])
    token = authority.mint(Capability("db", {"write"}))
    await ex.run(wf(Node("S", handler="save", requires=["db:write"]),
                    Node("T", handler="save", requires=["queue:publish"])), grants=[token])
    decisions = {(e.node, e.data["decision"]) for e in seen if e.data["decision"]}
    assert ("S", "allow") in decisions and ("T", "deny") in decisions
    assert any(e.data["action"] == "grant" for e in seen)


async def test_grants_need_an_authority():
    ex = WorkflowExecutor()
    ex.add_handler("a", lambda ctx: None)
    await ex.start()
    with pytest.raises(SecurityError):
        await ex.execute_workflow(wf(Node("a")), grants=["x"])
    await ex.stop()


def test_ceiling_refuses_nodes_asking_for_more():
    with pytest.raises(CapabilityDeniedError):
        WorkflowBuilder("w", ceiling=["db:read:*"]).add_node(Node("a", requires=["db:write"]))


def test_registering_a_resource_twice_is_an_error():
    ex = WorkflowExecutor()
    ex.resources.register("db", object())
    with pytest.raises(ResourceError):
        ex.resources.register("db", object())
