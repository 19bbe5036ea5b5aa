"""The checked dispatch path: cheap when allowed, never cheaper on safety (issue 15)."""

from __future__ import annotations

import pytest

from lion_nb.clock import FakeClock
from lion_nb.engine import EventKind, ExecutorConfig, WorkflowExecutor
from lion_nb.errors import CapabilityDeniedError, RequirementError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.security import Authority, Capability


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def authority(clock):
    return Authority(b"d" * 32, clock=clock)


@pytest.fixture
def grants(authority):
    token = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"), expires_in=100)
    return authority.grant([token, authority.mint("mail:publish")], instance_id="inst-1")


def _checks(authority, decision):
    return [r for r in authority.audit() if r.action == "check" and r.decision == decision]


def test_check_all_records_one_allow_per_requirement_every_time(authority, grants):
    reqs = ("db:write:orders/1", "mail:publish")
    for _ in range(3):
        forwarded = []
        assert grants.check_all(reqs, node="Save", forward=forwarded.append) is None
        assert [r.capability for r in forwarded] == ["db:write:orders/1", "mail:publish:*"]
    allowed = _checks(authority, "allow")
    assert len(allowed) == 6 and {r.node for r in allowed} == {"Save"}
    assert allowed[-2:] == forwarded


async def test_a_remembered_decision_still_expires(authority, grants, clock):
    reqs = ("db:read:orders/1",)
    grants.check_all(reqs, node="Load")
    await clock.advance(100)
    with pytest.raises(CapabilityDeniedError, match="expired"):
        grants.check_all(reqs, node="Load")
    assert _checks(authority, "deny")[-1].node == "Load"


def test_a_remembered_decision_is_dropped_by_a_revocation(authority, grants):
    reqs = ("db:read:orders/1",)
    grants.check_all(reqs, node="Load")
    authority.revoke(grants.tokens[0].token_id)
    with pytest.raises(CapabilityDeniedError, match="revoked"):
        grants.check_all(reqs, node="Load")


def test_one_uncovered_requirement_denies_the_node_and_allows_nothing(authority, grants):
    with pytest.raises(CapabilityDeniedError) as info:
        grants.check_all(("db:read:orders/1", "db:delete:orders/1"), node="Purge")
    assert info.value.capability == "db:delete:orders/1"
    assert _checks(authority, "allow") == []
    with pytest.raises(RequirementError):
        grants.check_all(("not a requirement",), node="Odd")
    assert [r.node for r in _checks(authority, "deny")] == ["Purge", "Odd"]


def test_a_listener_can_skip_allowed_checks_but_hears_every_denial(authority, grants):
    quiet, everything = [], []
    authority.add_listener(quiet.append, allowed_checks=False)
    authority.add_listener(everything.append)
    grants.check("db:read:orders/1", node="Load")
    grants.check_all(("db:read:orders/1",), node="Load")
    with pytest.raises(CapabilityDeniedError):
        grants.check_all(("db:delete:orders/1",), node="Purge")
    assert [(r.decision, r.node) for r in quiet] == [("deny", "Purge")]
    assert [r.decision for r in everything] == ["allow", "allow", "deny"]
    assert len(_checks(authority, "allow")) == 2  # kept in the log all the same


async def test_narrowing_again_reuses_fresh_tokens_and_still_checks(authority, grants, clock):
    first = grants.narrow(["db:read:orders/1"], expires_in=60, node="A")
    minted = len([r for r in authority.audit() if r.action == "attenuate"])
    again = grants.narrow(["db:read:orders/1"], expires_in=60, node="B")
    assert again.tokens == first.tokens  # no new MACs for the same requirements
    assert len([r for r in authority.audit() if r.action == "attenuate"]) == minted
    assert _checks(authority, "allow")[-1].node == "B"  # but audited as B's check
    await clock.advance(31)  # under half its life left: a fresh token
    later = grants.narrow(["db:read:orders/1"], expires_in=60, node="C")
    assert later.tokens != first.tokens
    assert later.tokens[0].expires_at <= clock.time() + 60
    authority.revoke(grants.tokens[0].token_id)
    with pytest.raises(CapabilityDeniedError):
        grants.narrow(["db:read:orders/1"], expires_in=60, node="D")


async def test_the_executor_forwards_allowed_checks_only_to_an_observer_that_wants_them():
    authority = Authority.generate()
    ex = WorkflowExecutor(config=ExecutorConfig(authority=authority))
    ex.add_handler("noop", lambda ctx: ctx.resource("db", "read", "orders/1"))
    ex.resources.register("db", "handle")
    await ex.start()
    try:
        workflow = WorkflowBuilder("w").add_node(
            Node("Load", handler="noop", requires=["db:read:orders/*"])).build()
        token = authority.mint("db:read")
        result = await ex.run(workflow, grants=[token])
        assert result["Load"] == "handle"
        seen = []
        ex.observe.subscribe(seen.append, [EventKind.CAPABILITY])
        await ex.run(workflow, grants=[token])
        allowed = [(e.node, e.data["capability"]) for e in seen
                   if (e.data["action"], e.data["decision"]) == ("check", "allow")]
        # the dispatch check, then ctx.resource's own check
        assert allowed == [("Load", "db:read:orders/*"), ("Load", "db:read:orders/1")]
        assert len(_checks(authority, "allow")) == 4  # both runs are in the audit log
    finally:
        await ex.stop()


# --- the executor's gate: check_all in one frame, same decisions ------------------------------

def test_the_gate_allows_and_audits_each_dispatch_like_check_all(authority, grants):
    heard = []
    gate = grants.gate(forward=heard.append)
    for node in ("A", "B", "C"):
        assert gate(("db:write:orders/1", "mail:publish"), node) is None
    allowed = _checks(authority, "allow")
    assert [(r.node, r.capability) for r in allowed] == [
        (n, c) for n in "ABC" for c in ("db:write:orders/1", "mail:publish:*")]
    assert heard == allowed and all(r.instance_id == "inst-1" and r.token_id for r in allowed)


async def test_the_gate_applies_expiry_and_revocation_on_every_dispatch(authority, grants,
                                                                        clock):
    gate = grants.gate()
    gate(("db:read:orders/1",), "Load")
    await clock.advance(100)
    with pytest.raises(CapabilityDeniedError, match="expired"):
        gate(("db:read:orders/1",), "Load")
    gate(("mail:publish",), "Send")
    authority.revoke(grants.tokens[-1].token_id)
    with pytest.raises(CapabilityDeniedError, match="revoked"):
        gate(("mail:publish",), "Send")
    assert [r.node for r in _checks(authority, "deny")] == ["Load", "Send"]


@pytest.mark.parametrize("hostile", [[["nested"]], [object()], ("db:read:" + "a/" * 600,)])
def test_the_gate_turns_anything_hostile_into_an_audited_denial(authority, grants, hostile):
    gate = grants.gate()
    with pytest.raises((CapabilityDeniedError, RequirementError)):
        gate(hostile, "Odd")
    assert _checks(authority, "deny")[-1].node == "Odd"


def test_allowed_dispatch_checks_keep_no_object_the_collector_tracks(grants):
    # One tracked object kept per dispatch made the collector run every few hundred
    # nodes while the log filled, walking the run's state each time (issue 15, cost).
    import gc
    gate = grants.gate()
    gate(("db:read:orders/1",), "warm")
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(1000):
            gate(("db:read:orders/1",), "Load")
        after = len(gc.get_objects())
    finally:
        gc.enable()
    assert after - before < 50


def test_the_audit_limit_counts_records_when_checks_are_kept_compactly(clock):
    authority = Authority(b"c" * 32, clock=clock, audit_limit=4)
    grants = authority.grant([authority.mint("db:read,write")], instance_id="i")
    gate = grants.gate()
    for i in range(7):
        gate(("db:read:x", "db:write:x"), f"n{i}")  # one dispatch, two records
        if i == 3:
            authority.mint("mail:publish")
        records = authority.audit()
        assert len(records) == min(4, len(records)) and len(authority.audit_log) == len(records)
        assert all(type(r).__name__ == "AuditRecord" for r in records)
    assert [(r.node, r.capability) for r in authority.audit()] == [
        ("n5", "db:read:x"), ("n5", "db:write:x"), ("n6", "db:read:x"), ("n6", "db:write:x")]
    with pytest.raises(CapabilityDeniedError):
        gate(("db:delete:x",), "Purge")
    assert [r.decision for r in authority.audit()][-2:] == ["allow", "deny"]


# --- the executor's dispatch stamp (one clock read per node) ---------------------------------

def test_the_gate_uses_a_dispatch_stamp_only_from_its_own_clock(authority, grants, clock):
    reqs = ("db:read:orders/1",)
    grants.gate()(reqs, "warm")
    grants.gate(clock=clock)(reqs, "Stamped", clock.time() + 5)
    grants.gate(clock=FakeClock(start=0.0, wall_start=1.0))(reqs, "Foreign", 42.0)
    times = {r.node: r.time for r in _checks(authority, "allow")}
    assert times["Stamped"] == clock.time() + 5  # the executor's stamp is the audit time
    assert times["Foreign"] == clock.time()  # a stamp from another clock is not trusted


async def test_expiry_and_revocation_stop_the_next_dispatch_on_the_executors_stamps():
    from lion_nb.engine import SchedulerConfig, WorkflowScheduler
    clock = FakeClock()
    authority = Authority(b"s" * 32, clock=clock)
    ex = WorkflowExecutor(WorkflowScheduler(SchedulerConfig(clock=clock)),
                          config=ExecutorConfig(authority=authority))

    async def step(ctx):
        if ctx.node_name == "B":
            await clock.advance(50)  # past the token's life, between two dispatches
        return None

    ex.add_handler("step", step)
    await ex.start()
    try:
        nodes = [Node(n, handler="step", requires=["db:read"]) for n in "ABC"]
        b = WorkflowBuilder("w").add_nodes(*nodes)
        b.connect(nodes[0], nodes[1]).connect(nodes[1], nodes[2])
        workflow = b.build()
        result = await ex.run(workflow, grants=[authority.mint("db:read", expires_in=30)])
        assert [result.node_states[n].name for n in "ABC"][:2] == ["SUCCEEDED", "SUCCEEDED"]
        assert _checks(authority, "deny")[-1].node == "C"
        assert "expired" in _checks(authority, "deny")[-1].reason
        token = authority.mint("db:read")

        async def revoke(ctx):
            if ctx.node_name == "B":
                authority.revoke(token.token_id)
            return None

        ex.add_handler("step", revoke)
        result = await ex.run(workflow, grants=[token])
        assert result.node_states["C"].name != "SUCCEEDED"
        assert _checks(authority, "deny")[-1].node == "C"
        assert "revoked" in _checks(authority, "deny")[-1].reason
    finally:
        await ex.stop()


# --- remembered decisions are dropped by pushes, not by per-dispatch tests (sec5) -------------

def test_a_listener_added_between_dispatches_hears_the_next_allowed_check(authority, grants):
    gate = grants.gate()
    reqs = ("db:read:orders/1",)
    gate(reqs, "warm")
    gate(reqs, "remembered")  # answered from the gate's memory
    heard = []
    remove = authority.audit_log.add_listener(heard.append)  # straight on the log, too
    gate(reqs, "A")
    assert [(r.node, r.decision) for r in heard] == [("A", "allow")]
    remove()
    gate(reqs, "B")
    assert [r.node for r in heard] == ["A"]
    assert [r.node for r in _checks(authority, "allow")] == ["warm", "remembered", "A", "B"]


def test_a_denials_only_listener_keeps_the_fast_path_and_hears_denials(authority, grants):
    heard = []
    authority.add_listener(heard.append, allowed_checks=False)
    gate = grants.gate()
    for node in ("A", "B"):
        gate(("db:read:orders/1",), node)
    with pytest.raises(CapabilityDeniedError):
        gate(("db:delete:orders/1",), "C")
    assert [(r.node, r.decision) for r in heard if r.action == "check"] == [("C", "deny")]


def test_a_revocation_racing_with_a_first_decision_is_not_remembered(authority, grants,
                                                                      monkeypatch):
    from lion_nb.security import GrantSet
    calls = []
    original = GrantSet.check_all

    def racing(self, requirements, *, node, forward=None):
        calls.append(node)
        original(self, requirements, node=node, forward=forward)
        self.forget()  # what a revocation in another thread does, mid-decision

    monkeypatch.setattr(GrantSet, "check_all", racing)
    gate = grants.gate()
    gate(("db:read:orders/1",), "A")
    gate(("db:read:orders/1",), "B")
    assert calls == ["A", "B"]  # B was decided afresh, not answered from memory


def test_a_hand_built_grant_set_is_told_of_revocations(authority, grants):
    from lion_nb.security import GrantSet
    again = GrantSet(authority, "inst-1", grants.tokens)
    gate = again.gate()
    gate(("mail:publish",), "Send")
    authority.revoke(grants.tokens[-1].token_id)
    with pytest.raises(CapabilityDeniedError, match="revoked"):
        gate(("mail:publish",), "Send")


def test_the_authority_holds_grant_sets_weakly(authority):
    import gc
    import weakref
    token = authority.mint("db:read")
    grants = authority.grant([token], instance_id="gone")
    grants.gate()(("db:read",), "A")
    ref = weakref.ref(grants)
    del grants
    gc.collect()
    assert ref() is None
    authority.revoke(token.token_id)  # telling nobody is fine


@pytest.mark.parametrize("how", ["bind", "attenuate", "both"])
def test_a_derived_token_reads_exactly_like_its_verified_string(authority, how):
    token = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"),
                           expires_in=100, holder="svc")
    if how in ("attenuate", "both"):
        token = token.attenuate(actions={"read"}, scope="orders/7", expires_in=50)
    if how in ("bind", "both"):
        token = authority.bind(token, "inst-9", run_id="run-1")
    again = authority.verify(token.serialize())
    fresh = Authority(b"d" * 32, clock=authority.clock).verify(token.serialize())
    for field in ("token_id", "chain", "capability", "issued_at", "expires_at", "holder",
                  "instance_id", "run_id", "key_id", "scheme"):
        assert getattr(token, field) == getattr(again, field) == getattr(fresh, field), field


async def test_the_audit_read_during_a_run_sees_its_checks_so_far_and_runs_keep_order():
    import asyncio
    authority = Authority(b"o" * 32)
    ex = WorkflowExecutor(config=ExecutorConfig(authority=authority))
    seen = {}

    async def step(ctx):
        seen[ctx.node_name] = [r.node for r in authority.audit()
                               if r.action == "check" and r.instance_id.startswith(ctx.instance_id)]
        await asyncio.sleep(0)  # let the other run interleave
        return None

    ex.add_handler("step", step)
    await ex.start()
    try:
        def chain(prefix):
            nodes = [Node(f"{prefix}{k}", handler="step", requires=["db:read"]) for k in range(4)]
            b = WorkflowBuilder(prefix).add_nodes(*nodes)
            for a, c in zip(nodes, nodes[1:]):
                b.connect(a, c)
            return b.build()

        token = authority.mint("db:read")
        first, second = await asyncio.gather(
            ex.run(chain("a"), grants=[token], instance_id="run-a"),
            ex.run(chain("b"), grants=[token], instance_id="run-b"))
        assert first.succeeded and second.succeeded
        assert seen["a2"] == ["a0", "a1", "a2"] and seen["b3"] == ["b0", "b1", "b2", "b3"]
        checks = [r for r in authority.audit() if r.action == "check"]
        for prefix in "ab":
            assert [r.node for r in checks if r.node.startswith(prefix)] == [
                f"{prefix}{k}" for k in range(4)]
        assert [r.time for r in checks] == sorted(r.time for r in checks)
    finally:
        await ex.stop()
