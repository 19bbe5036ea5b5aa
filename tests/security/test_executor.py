"""Capabilities enforced by the executor: deny by default, ctx.resource, audit, ceiling."""

from __future__ import annotations

import pytest

from lion_nb.engine import EventKind, ExecutorConfig, WorkflowExecutor
from lion_nb.errors import (CapabilityDeniedError, NoResultError, ResourceError,
                            SecurityError, TokenExpiredError)
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
    try:
        result = await ex.run(wf(Node("S", handler="save", requires=["db:write"])), grants=[])
    finally:
        await ex.stop()
    assert result.node_states["S"] is NodeState.SKIPPED and result.succeeded
    # A skip the user asked for, not a failure: errors and skipped agree with the states.
    assert result.errors == {} and result.exceptions == {}
    assert "lacks capability 'db:write:*'" in result.skip_reasons["S"]
    with pytest.raises(NoResultError, match="skipped .*lacks capability 'db:write:\\*'"):
        result["S"]
    denial = [r for r in authority.audit() if r.decision == "deny"][-1]
    assert (denial.node, denial.capability) == ("S", "db:write:*")  # still audited


async def test_denied_node_fails_by_default_and_is_an_error_not_a_skip(secured):
    ex, authority, db, _ = secured
    result = await ex.run(wf(Node("S", handler="save", requires=["db:delete"])), grants=[])
    assert result.node_states["S"] is NodeState.FAILED and not result.succeeded
    assert "db:delete" in result.errors["S"] and result.skip_reasons == {}


async def test_a_denied_skip_has_its_reason_and_its_successors_the_usual_one():
    ex = WorkflowExecutor(config=ExecutorConfig(authority=Authority.generate(),
                                                on_denied="skip"))
    ex.add_handler("ok", lambda ctx: 1)
    await ex.start()
    try:
        a, b = Node("A", handler="ok", requires=["db:write"]), Node("B", handler="ok")
        result = await ex.run(WorkflowBuilder("w").add_nodes(a, b).connect(a, b).build(),
                              grants=[])
    finally:
        await ex.stop()
    assert result.node_states["A"] is result.node_states["B"] is NodeState.SKIPPED
    assert list(result.skip_reasons) == ["A"] and result.errors == {}
    with pytest.raises(NoResultError, match="no active incoming edge"):
        result["B"]


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


# --- issue 15, engine side ---------------------------------------------------------------

async def test_any_exception_in_the_gate_is_an_audited_denial_and_ends_the_node(
        secured, monkeypatch):
    ex, authority, db, _ = secured
    from lion_nb.security import GrantSet

    def explode(self, requirements, *, node, forward=None):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(GrantSet, "check", explode)
    monkeypatch.setattr(GrantSet, "check_all", explode)  # what the dispatch gate calls
    node = Node("SaveOrder", handler="save", requires=["db:write:orders/*"])
    result = await ex.run(wf(node), grants=[authority.mint("db:write:orders/*")])
    assert result.node_states["SaveOrder"] is NodeState.FAILED and db.rows == []
    err = result.exceptions["SaveOrder"].__cause__
    assert isinstance(err, CapabilityDeniedError) and err.node == "SaveOrder"
    assert "RecursionError" in str(err)
    last = [r for r in authority.audit() if r.decision == "deny"][-1]
    assert (last.node, last.capability) == ("SaveOrder", "db:write:orders/*")


async def test_grant_tokens_are_narrowed_to_the_node_and_empty_without_requires(secured):
    ex, authority, _, clock = secured
    seen = {}

    async def grab(ctx):
        seen[ctx.node_name] = ctx.grant_tokens

    ex.add_handler("grab", grab)
    reader = Node("Reader", handler="grab", requires=["db:read:orders/1"])
    plain = Node("Plain", handler="grab")
    token = authority.mint("db:read,write,delete:orders/*")
    await ex.run(wf(reader, plain), grants=[token])
    assert seen["Plain"] == ()
    (text,) = seen["Reader"]
    shipped = authority.verify(text)
    assert str(shipped.capability) == "db:read:orders/1"
    assert shipped.expires_at is not None and shipped.expires_at <= clock.time() + 300


async def test_tokens_of_one_run_are_refused_for_a_later_workflow_under_the_same_id(secured):
    ex, authority, _, _ = secured
    stolen = {}

    async def grab(ctx):
        stolen["tokens"] = ctx.grant_tokens

    ex.add_handler("grab", grab)
    first = Node("Reader", handler="grab", requires=["db:read:orders/1"])
    await ex.run(wf(first), grants=[authority.mint("db:read:orders/*")], instance_id="inst-x")
    assert authority.verify(stolen["tokens"][0]).run_id  # bound to that run
    other = WorkflowBuilder("other").add_node(
        Node("Reader", handler="grab", requires=["db:read:orders/1"])).build()
    later = WorkflowExecutor(config=ExecutorConfig(authority=authority))  # e.g. after a restart
    later.add_handler("grab", grab)
    async with later:
        with pytest.raises(CapabilityDeniedError, match="another run"):
            await later.run(other, grants=list(stolen["tokens"]), instance_id="inst-x")


# --- signed definition files ------------------------------------------------------------

@pytest.mark.parametrize("make", [Authority.generate, Authority.generate_ed25519])
def test_signed_definition_files_refuse_tampering_before_parsing(make):
    import json as _json
    from lion_nb.model import WorkflowDefinition
    authority = make()
    definition = wf(Node("SaveOrder", handler="save", requires=["db:write:orders/*"]))
    text = definition.to_json(sign=authority)
    assert WorkflowDefinition.from_json(text, verify=authority).fingerprint() == \
        definition.fingerprint()
    head, body = text.split("\n", 1)
    doc = _json.loads(body)
    doc["nodes"][0]["requires"] = []        # drop the check a privileged node needs
    for tampered in (head + "\n" + _json.dumps(doc), definition.to_json()):
        with pytest.raises(SecurityError):
            WorkflowDefinition.from_json(tampered, verify=authority)


# --- keyed MACs on durable records ------------------------------------------------------

async def test_resume_refuses_a_forged_committed_output_when_an_authority_is_set(tmp_path):
    import asyncio

    from lion_nb.errors import CheckpointCorruptError
    from lion_nb.state import SqliteStorage, StateMachineManager

    authority = Authority.generate()
    gate = asyncio.Event()

    async def load(ctx):
        return {"total": 10}

    async def wait(ctx):
        await gate.wait()
        return ctx.results["Load"]["total"]

    def executor(storage):
        ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                              config=ExecutorConfig(authority=authority))
        ex.add_handler("load", load)
        ex.add_handler("wait", wait)
        return ex

    load_n, pay_n = Node("Load", handler="load"), Node("Pay", handler="wait")
    definition = WorkflowBuilder("pay").add_nodes(load_n, pay_n).connect(load_n, pay_n).build()
    storage = SqliteStorage(tmp_path / "db.sqlite")
    first = executor(storage)
    async with first:
        iid = await first.execute_workflow(definition)
        while first.snapshot(iid).node_states["Load"] is not NodeState.SUCCEEDED:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the commit land
    # Stopped mid-run: resumable. Someone with write access forges Load's output; the
    # storage's own checksum is recomputed on write, so only the keyed MAC can tell.
    keys = [k for k in await storage.keys("nodes/") if k.startswith(f"nodes/{iid}/")]
    record = await storage.get(keys[0])
    forged = dict(record, output={"total": 10_000})
    await storage.put(keys[0], forged)
    gate.set()
    second = executor(storage)
    async with second:
        with pytest.raises(CheckpointCorruptError, match="keyed MAC"):
            await second.resume(iid)
        await storage.put(keys[0], record)  # the genuine record resumes fine
        await second.resume(iid)
        result = await second.wait(iid)
        assert result.results["Pay"] == 10
    await storage.close()
