"""Grants, checks, the confused deputy, resources and the audit trail."""

from __future__ import annotations

import logging
import threading

import pytest

from lion_nb.clock import FakeClock
from lion_nb.errors import (
    CapabilityDeniedError, CapabilityError, RequirementError, ResourceError, TokenError,
    TokenExpiredError, TokenRevokedError,
)
from lion_nb.security import (
    AuditRecord, Authority, Capability, Requirement, ResourceRegistry, Token, resource_for,
)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def authority(clock):
    return Authority(b"g" * 32, clock=clock)


@pytest.fixture
def db_write(authority):
    return authority.mint(Capability("db", {"read", "write"}, scope="orders/*"),
                          expires_in=3600, holder="etl")


@pytest.fixture
def grants(authority, db_write):
    return authority.grant([db_write], instance_id="inst-1")


# --- grant -------------------------------------------------------------------

def test_grant_binds_tokens_to_the_instance(grants, db_write):
    (bound,) = grants.tokens
    assert bound.instance_id == "inst-1"
    assert bound.chain[0] == db_write.token_id
    assert grants.capabilities == (db_write.capability,)
    assert len(grants) == 1


def test_grant_accepts_token_strings_and_a_single_token(authority, db_write):
    assert len(authority.grant(db_write.serialize(), instance_id="i")) == 1
    assert len(authority.grant(db_write, instance_id="i")) == 1


def test_grant_rejects_invalid_tokens_and_grants_nothing(authority, db_write):
    with pytest.raises(TokenError):
        authority.grant([db_write, "lion1.garbage.AAAA"], instance_id="inst-1")
    grants = [r for r in authority.audit() if r.action == "grant"]
    assert [(r.decision, r.instance_id) for r in grants] == [("deny", "inst-1")]


def test_grant_rejects_tokens_from_another_authority(db_write):
    with pytest.raises(TokenError, match="another key"):
        Authority.generate().grant([db_write], instance_id="inst-1")


async def test_grant_rejects_expired_tokens(authority, clock):
    tok = authority.mint("db:read", expires_in=1)
    await clock.advance(2)
    with pytest.raises(TokenExpiredError):
        authority.grant([tok], instance_id="inst-1")


def test_grant_rejects_a_token_minted_for_another_holder(authority, db_write):
    with pytest.raises(CapabilityDeniedError, match="minted for 'etl'"):
        authority.grant([db_write], instance_id="inst-1", holder="marketing")
    assert len(authority.grant([db_write], instance_id="inst-1", holder="etl")) == 1


def test_grant_needs_an_instance_id(authority, db_write):
    with pytest.raises(TokenError):
        authority.grant([db_write], instance_id="")


# --- check -------------------------------------------------------------------

def test_check_allows_a_covered_requirement(grants):
    grants.check("db:write:orders/7", node="SaveOrder")
    grants.check(Requirement.parse("db:read:orders/*"), node="SaveOrder")
    assert grants.allows("db:read:orders/1", node="Load")


def test_check_denies_by_default_with_no_grants(authority):
    empty = authority.grant([], instance_id="inst-0")
    with pytest.raises(CapabilityDeniedError, match="no token for resource 'db'"):
        empty.check("db:read", node="Load")


def test_check_denies_a_token_for_another_resource(grants):
    with pytest.raises(CapabilityDeniedError) as info:
        grants.check("cache:read:orders/1", node="Warm")
    assert info.value.capability == "cache:read:orders/1"
    assert info.value.node == "Warm"
    assert "'Warm'" in str(info.value) and "cache:read:orders/1" in str(info.value)


def test_check_denies_a_scope_mismatch(grants):
    with pytest.raises(CapabilityDeniedError, match="do not cover"):
        grants.check("db:write:users/1", node="SaveUser")


def test_check_denies_a_missing_action(grants):
    assert not grants.allows("db:delete:orders/1", node="Purge")


def test_check_rejects_unparsable_requirements_and_audits_them(grants, authority):
    with pytest.raises(RequirementError):
        grants.check("db", node="Broken")
    last = authority.audit()[-1]
    assert (last.action, last.decision, last.node) == ("check", "deny", "Broken")


async def test_check_denies_after_the_token_expires(authority, clock):
    grants = authority.grant([authority.mint("db:read", expires_in=10)], instance_id="i")
    grants.check("db:read", node="n")  # now cached
    await clock.advance(10)
    with pytest.raises(CapabilityDeniedError, match="expired"):
        grants.check("db:read", node="n")


def test_check_denies_immediately_after_revocation(authority, grants, db_write):
    grants.check("db:write:orders/1", node="SaveOrder")  # now cached
    authority.revoke(db_write.token_id)
    with pytest.raises(CapabilityDeniedError, match="revoked"):
        grants.check("db:write:orders/1", node="SaveOrder")
    assert grants.tokens == ()


def test_revoking_one_token_keeps_the_others(authority, grants, db_write):
    queue = authority.mint("queue:publish")
    both = authority.grant([db_write, queue], instance_id="inst-2")
    authority.revoke(queue.token_id)
    assert both.allows("db:write:orders/1", node="n")
    assert not both.allows("queue:publish", node="n")


def test_capability_for_returns_the_covering_capability(authority):
    tok = authority.mint(Capability("db", {"read"}, constraints={"max_rows": 50}))
    grants = authority.grant([tok], instance_id="i")
    assert grants.capability_for("db:read:orders/1", node="n").constraints["max_rows"] == 50


def test_checks_from_threads_are_safe(grants):
    errors = []

    def work():
        try:
            for i in range(500):
                grants.check(f"db:read:orders/{i % 7}", node="t")
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- confused deputy ---------------------------------------------------------

def test_a_token_granted_to_one_instance_cannot_be_granted_to_another(authority, grants):
    with pytest.raises(CapabilityDeniedError, match="bound to instance 'inst-1'"):
        authority.grant(grants.tokens, instance_id="inst-2")


def test_another_instances_grantset_does_not_see_its_tokens(authority, grants):
    other = authority.grant([], instance_id="inst-2")
    assert grants.allows("db:write:orders/1", node="SaveOrder")
    assert not other.allows("db:write:orders/1", node="SaveOrder")


def test_a_bound_token_crossing_a_process_is_refused_for_another_instance(authority, grants):
    text = grants.tokens[0].serialize()  # what a worker process would receive
    assert authority.verify(text, instance_id="inst-1").instance_id == "inst-1"
    with pytest.raises(TokenError, match="bound to instance"):
        authority.verify(text, instance_id="inst-2")


def test_instance_binding_cannot_be_made_without_the_key(authority, db_write):
    stranger = Authority(b"s" * 32)
    # Same token chain, but the binding tag made with another key.
    forged = stranger.bind(Token.parse(db_write.serialize()), "inst-9")
    with pytest.raises(TokenError, match="not made by this authority"):
        authority.verify(forged)
    assert stranger  # the stranger's authority never saw the root token


# --- attenuated grant sets ---------------------------------------------------

def test_grants_attenuate_gives_a_narrower_set(grants):
    step = grants.attenuate(actions={"read"})
    assert step.instance_id == "inst-1"
    assert step.allows("db:read:orders/1", node="n")
    assert not step.allows("db:write:orders/1", node="n")
    assert grants.allows("db:write:orders/1", node="n")  # the parent is unchanged


def test_grants_attenuate_for_a_sub_workflow_rebinds_it(authority, grants):
    sub = grants.attenuate(scope="orders/1", instance_id="inst-1.sub")
    assert sub.instance_id == "inst-1.sub"
    assert sub.allows("db:write:orders/1", node="n")
    assert not sub.allows("db:write:orders/2", node="n")
    assert authority.verify(sub.tokens[0], instance_id="inst-1.sub")
    with pytest.raises(TokenError, match="bound to instance"):
        authority.verify(sub.tokens[0], instance_id="inst-1")


def test_grants_attenuate_drops_what_cannot_be_narrowed(authority, grants, db_write):
    mixed = authority.grant([db_write, authority.mint("queue:publish")], instance_id="m")
    assert len(mixed.attenuate(resources={"queue"})) == 1
    assert len(mixed.attenuate(actions={"publish"})) == 1
    assert len(mixed.attenuate(scope="users/*")) == 1  # only queue's whole scope covers it


async def test_grants_attenuate_shortens_expiry(grants, clock):
    step = grants.attenuate(expires_in=5)
    await clock.advance(5)
    assert not step.allows("db:read:orders/1", node="n")
    assert grants.allows("db:read:orders/1", node="n")


def test_grants_attenuate_rejects_unknown_actions_and_bad_scopes(grants):
    with pytest.raises(CapabilityError, match="unknown action"):
        grants.attenuate(actions={"raed"})
    with pytest.raises(CapabilityError, match="empty"):
        grants.attenuate(scope="")


def test_revoking_the_parent_revokes_the_sub_workflow_grants(authority, grants, db_write):
    sub = grants.attenuate(actions={"read"}, instance_id="inst-1.sub")
    (sub_token,) = sub.tokens
    authority.revoke(db_write.token_id)
    with pytest.raises(TokenRevokedError):
        authority.verify(sub_token)
    assert not sub.allows("db:read:orders/1", node="n")
    assert sub.tokens == ()


# --- resources ---------------------------------------------------------------

def test_registering_a_resource_twice_is_refused_by_name():
    registry = ResourceRegistry()
    registry.register("db", object())
    with pytest.raises(ResourceError) as info:
        registry.register("db", object())
    assert info.value.resource == "db"
    assert "'db'" in str(info.value)


def test_registry_rejects_bad_names_and_unknown_lookups():
    registry = ResourceRegistry()
    with pytest.raises(ResourceError, match="identifier"):
        registry.register("a:b", 1)
    with pytest.raises(ResourceError, match="not registered"):
        registry.get("nope")
    with pytest.raises(ResourceError):
        registry.unregister("nope")


def test_registry_lists_and_unregisters():
    registry = ResourceRegistry()
    handle = object()
    registry.register("db", handle)
    assert "db" in registry and len(registry) == 1 and list(registry) == ["db"]
    assert registry.unregister("db") is handle
    assert "db" not in registry


def test_resource_for_hands_out_only_covered_resources(grants):
    registry = ResourceRegistry()
    handle = object()
    registry.register("db", handle)
    assert resource_for(grants, registry, "db", "write", "orders/1", node="SaveOrder") is handle
    with pytest.raises(CapabilityDeniedError):
        resource_for(grants, registry, "db", "delete", "orders/1", node="SaveOrder")


def test_resource_for_checks_before_revealing_missing_resources(grants):
    with pytest.raises(CapabilityDeniedError):
        resource_for(grants, ResourceRegistry(), "secrets", "read", node="Peek")
    with pytest.raises(ResourceError, match="not registered"):
        resource_for(grants, ResourceRegistry(), "db", "read", "orders/1", node="Load")


def test_resource_for_rejects_colons_in_names(grants):
    with pytest.raises(RequirementError):
        resource_for(grants, ResourceRegistry(), "db:write", "read", node="n")


# --- audit -------------------------------------------------------------------

def test_every_decision_has_an_audit_record(authority, clock):
    tok = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"))
    child = tok.attenuate(actions={"read"})
    grants = authority.grant([tok, child], instance_id="inst-1")
    outcomes = []
    for node, req in [("A", "db:read:orders/1"), ("B", "db:write:users/1"),
                      ("A", "db:read:orders/1"), ("C", "mail:publish")]:
        outcomes.append((node, str(Requirement.parse(req)),
                         "allow" if grants.allows(req, node=node) else "deny"))
    authority.revoke(child.token_id)
    with pytest.raises(TokenRevokedError):
        authority.verify(child)

    records = authority.audit()
    assert all(isinstance(r, AuditRecord) for r in records)
    assert [r.action for r in records] == [
        "mint", "attenuate", "grant", "grant", "check", "check", "check", "check",
        "revoke", "verify"]
    checks = [(r.node, r.capability, r.decision) for r in records if r.action == "check"]
    assert checks == outcomes
    for r in records:
        assert r.time == clock.time()
        if r.action == "check":
            assert r.instance_id == "inst-1"
        if r.decision == "deny":
            assert r.reason
        if r.decision == "allow" or r.action in ("mint", "attenuate", "revoke"):
            assert r.token_id
    assert records[-1].decision == "deny" and "revoked" in records[-1].reason


def test_listeners_see_records_and_a_raising_listener_breaks_nothing(grants, authority,
                                                                    caplog):
    seen = []
    authority.add_listener(seen.append)

    def broken(record):
        raise RuntimeError("listener bug")

    remove = authority.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="lion_nb.security"):
        grants.check("db:read:orders/1", node="n")
    assert [r.action for r in seen] == ["check"]
    assert "listener bug" in caplog.text
    remove()
    grants.check("db:read:orders/1", node="n")
    assert len(seen) == 2


def test_audit_limit_bounds_memory_but_not_listeners(clock):
    authority = Authority(b"l" * 32, clock=clock, audit_limit=3)
    seen = []
    authority.add_listener(seen.append)
    for _ in range(5):
        authority.mint("db:read")
    assert len(authority.audit()) == 3
    assert len(seen) == 5


def test_audit_records_convert_to_dicts_for_tables(grants, authority):
    grants.check("db:read:orders/1", node="n")
    row = authority.audit()[-1]._asdict()
    assert set(row) == {"time", "action", "decision", "token_id", "capability", "node",
                        "instance_id", "holder", "reason"}
    assert row["holder"] == "etl"


def test_a_grantset_cannot_be_built_around_unverified_tokens(authority, db_write):
    from lion_nb.security import GrantSet
    parsed = Token.parse(db_write.serialize())
    with pytest.raises(TokenError, match="use authority.grant"):
        GrantSet(authority, "inst-1", [parsed])
    with pytest.raises(TokenError, match="use authority.grant"):
        GrantSet(authority, "inst-1", [db_write])  # verified, but not bound to the instance


def test_public_names_are_exactly_the_exports():
    # __all__ against the public names: tests/test_structure.py; the old module paths
    # (deprecated shims): tests/test_exports.py.
    import lion_nb.security as security
    for name in security.__all__:
        assert getattr(security, name).__doc__, name


def test_check_rejects_non_string_requirements_as_requirement_errors(grants):
    with pytest.raises(RequirementError, match="must be a string"):
        grants.check(["db:read"], node="n")  # type: ignore[arg-type]


# --- the binding made per grant, signed on first use ----------------------------

def _grant_records(authority):
    return [r for r in authority.audit() if r.action == "grant" and r.decision == "allow"]


def test_a_grant_announces_the_bound_token_and_signs_it_on_first_use(authority, db_write,
                                                                    monkeypatch):
    signed = []
    sign = authority.sign_binding
    monkeypatch.setattr(authority, "sign_binding", lambda *a: signed.append(a) or sign(*a))
    grants = authority.grant([db_write], instance_id="inst-1", run_id="run-7")
    grants.check("db:write:orders/3", node="Save")   # checked without the signed token
    assert signed == []
    (announced,) = _grant_records(authority)
    (bound,) = grants.tokens
    assert len(signed) == 1 and grants.tokens == (bound,)   # signed once, the same token after
    assert bound.token_id == announced.token_id
    assert (bound.instance_id, bound.run_id, bound.chain[0]) == ("inst-1", "run-7",
                                                                 db_write.token_id)
    assert authority.verify(bound.serialize(), instance_id="inst-1", run_id="run-7") is not None
    allowed = [r for r in authority.audit() if r.action == "check"]
    assert allowed[-1].token_id == announced.token_id   # checks name the announced id


def test_revoking_the_announced_binding_denies_before_it_was_ever_signed(authority, db_write):
    grants = authority.grant([db_write], instance_id="inst-1")
    grants.check("db:read:orders/1", node="Load")
    authority.revoke(_grant_records(authority)[-1].token_id)
    with pytest.raises(CapabilityDeniedError, match="revoked"):
        grants.check("db:read:orders/1", node="Load")
    assert grants.tokens == ()
    assert authority.grant([db_write], instance_id="inst-2").allows("db:read:orders/1", node="x")


def test_a_deferred_binding_is_refused_at_grant_time_as_an_eager_one_was(authority, db_write):
    with pytest.raises(TokenError, match="instance id"):
        authority.grant([db_write], instance_id="x" * 300)
    grants = authority.grant([db_write], instance_id="inst-1", run_id="r1")
    step = grants.narrow(["db:read:orders/1"], instance_id="inst-1.step")  # signs, then re-binds
    (child,) = step.tokens
    (parent,) = grants.tokens
    assert child.instance_id == "inst-1.step" and child.chain[:len(parent.chain)] == parent.chain
    assert str(authority.verify(child.serialize(), instance_id="inst-1.step").capability) == \
        "db:read:orders/1"


def test_a_hand_made_pending_binding_is_checked_like_a_token(authority, db_write):
    from lion_nb.security import GrantSet, PendingBinding
    other = Authority(b"o" * 32)
    with pytest.raises(TokenError, match="bound to"):
        GrantSet(authority, "inst-1", [PendingBinding(db_write, "inst-2", None, holder=None)])
    with pytest.raises(TokenError):   # a token this authority did not sign
        GrantSet(authority, "inst-1",
                 [PendingBinding(other.mint("db:read"), "inst-1", None, holder=None)])
    grants = GrantSet(authority, "inst-1", [PendingBinding(db_write, "inst-1", None,
                                                           holder=None)])
    (bound,) = grants.tokens   # signed by the set's own authority, whatever made the binding
    assert authority.verify(bound.serialize(), instance_id="inst-1").chain[0] == \
        db_write.token_id


def test_a_run_that_hands_out_no_token_signs_no_binding(authority, db_write, monkeypatch):
    import asyncio
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder
    signed = []
    sign = authority.sign_binding
    monkeypatch.setattr(authority, "sign_binding", lambda *a: signed.append(a) or sign(*a))

    async def main():
        async with WorkflowExecutor(config=ExecutorConfig(authority=authority)) as ex:
            ex.add_handler("plain", lambda ctx: 1)
            ex.add_handler("ships", lambda ctx: len(ctx.grant_tokens))
            wf = WorkflowBuilder("w").add_nodes(
                Node("a", handler="plain", requires=["db:read:orders/1"])).build()
            assert (await ex.run(wf, grants=[db_write])).succeeded
            assert signed == []
            wf2 = WorkflowBuilder("w2").add_nodes(
                Node("b", handler="ships", requires=["db:read:orders/1"])).build()
            result = await ex.run(wf2, grants=[db_write])
            assert result.results["b"] == 1 and len(signed) == 1
    asyncio.run(main())


def test_a_pending_binding_cannot_widen_what_its_signed_token_allows(authority):
    import dataclasses
    from lion_nb.security import GrantSet, PendingBinding
    narrow = authority.mint("db:read:orders/1")
    liar = dataclasses.replace(narrow, capability=Capability.parse("db:read,write:*"))
    with pytest.raises(TokenError, match="does not match"):
        GrantSet(authority, "inst-1", [PendingBinding(liar, "inst-1", None, holder=None)])
    pending = PendingBinding(narrow, "inst-1", None, holder=None)
    with pytest.raises(AttributeError):
        pending.root = liar  # type: ignore[misc]
    grants = GrantSet(authority, "inst-1", [pending])
    assert not grants.allows("db:write:orders/1", node="x")
