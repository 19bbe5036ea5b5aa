"""Capabilities, requirements, scopes and the action vocabulary."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from lion_nb.errors import (
    CapabilityDeniedError, CapabilityError, RequirementError, SecurityError,
)
from lion_nb.security import (
    DEFAULT_ACTIONS, Capability, DefinitionCeiling, Requirement, known_actions,
    register_action, scope_covers,
)


# --- scopes ------------------------------------------------------------------

@pytest.mark.parametrize("outer, inner, expected", [
    ("orders/*", "orders/1", True),
    ("orders/*", "users/1", False),
    ("orders/*", "orders/1/lines", False),
    ("orders/**", "orders/1/lines/2", True),
    ("orders/**", "orders", True),
    ("orders/*", "orders/*", True),
    ("orders/*", "orders/**", False),
    ("*", "anything/at/all", True),
    ("*", "*", True),
    ("orders/1", "*", False),
    ("2024-*", "2024-01", True),
    ("2024-*", "2025-01", False),
    ("a/*/c", "a/b*/c", True),
    ("a/b*/c", "a/*/c", False),
    ("**/secret", "x/y/secret", True),
    ("**/secret", "x/y/public", False),
])
def test_scope_covers_uses_segment_globs(outer, inner, expected):
    assert scope_covers(outer, inner) is expected


_segment = st.sampled_from(["a", "b", "c", "*", "**", "a*"])
_scope = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@given(_scope)
def test_scope_covers_is_reflexive(scope):
    assert scope_covers(scope, scope)


@given(_scope, _scope, _scope)
def test_scope_covers_is_transitive(a, b, c):
    if scope_covers(a, b) and scope_covers(b, c):
        assert scope_covers(a, c)


# --- capabilities ------------------------------------------------------------

def test_capability_covers_requirement_inside_its_scope():
    cap = Capability("db", {"read", "write"}, scope="orders/*")
    assert cap.covers(Requirement.parse("db:write:orders/1"))
    assert not cap.covers(Requirement.parse("db:write:users/1"))
    assert not cap.covers(Requirement.parse("db:delete:orders/1"))
    assert not cap.covers(Requirement.parse("cache:read:orders/1"))


def test_capability_without_scope_covers_the_whole_resource():
    cap = Capability("db", {"read"})
    assert cap.scope == "*"
    assert cap.covers(Requirement.parse("db:read:orders/1/lines/2"))
    assert cap.covers(Requirement.parse("db:read"))
    assert not Capability("db", {"read"}, scope="orders/*").covers(Requirement.parse("db:read"))


def test_capability_accepts_a_single_action_string_and_is_hashable():
    assert Capability("db", "read") == Capability("db", {"read"}, constraints={})
    assert len({Capability("db", "read"), Capability("db", frozenset({"read"}))}) == 1


def test_capability_str_round_trips_through_parse():
    cap = Capability("db", {"write", "read"}, scope="orders/*")
    assert str(cap) == "db:read,write:orders/*"
    assert Capability.parse(str(cap)) == cap


@pytest.mark.parametrize("kwargs, message", [
    (dict(resource="", actions={"read"}), "resource name is empty"),
    (dict(resource="d b", actions={"read"}), "must be an identifier"),
    (dict(resource="db:x", actions={"read"}), "must be an identifier"),
    (dict(resource="db", actions=set()), "at least one action"),
    (dict(resource="db", actions={"wrte"}), "unknown action 'wrte'"),
    (dict(resource="db", actions=None), "actions must be a set"),
    (dict(resource="db", actions={"read"}, scope=""), "scope is empty"),
    (dict(resource="db", actions={"read"}, scope="orders//1"), "empty path segment"),
    (dict(resource="db", actions={"read"}, scope="/orders"), "empty path segment"),
    (dict(resource="db", actions={"read"}, scope="orders/**x"), "whole segment"),
    (dict(resource="db", actions={"read"}, scope="orders 1"), "whitespace"),
    (dict(resource="db", actions={"read"}, constraints={"rows": [1]}), "must be a str"),
    (dict(resource="db", actions={"read"}, constraints={"bad key": 1}), "not an identifier"),
])
def test_capability_rejects_bad_input_clearly(kwargs, message):
    with pytest.raises(CapabilityError, match=message) as info:
        Capability(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SecurityError)
    assert info.value.capability


def test_unknown_action_error_lists_the_vocabulary():
    with pytest.raises(CapabilityError) as info:
        Capability("db", {"wrte"})
    for action in DEFAULT_ACTIONS:
        assert action in str(info.value)


def test_register_action_extends_the_vocabulary():
    assert "archive-test" not in known_actions()
    register_action("archive-test")
    assert Capability("db", {"archive-test"}).covers(Requirement.parse("db:archive-test:x"))
    with pytest.raises(CapabilityError, match="lowercase identifier"):
        register_action("Not An Action")


def test_narrow_only_narrows():
    cap = Capability("db", {"read", "write"}, scope="orders/*", constraints={"rows": 10})
    child = cap.narrow(actions={"read"}, scope="orders/1", constraints={"region": "eu"})
    assert cap.covers(child) and not child.covers(cap)
    with pytest.raises(CapabilityError, match="widen"):
        cap.narrow(actions={"read", "delete"})
    with pytest.raises(CapabilityError, match="widen"):
        cap.narrow(scope="**")
    with pytest.raises(CapabilityError, match="cannot change constraint"):
        cap.narrow(constraints={"rows": 1000})


def test_constraints_must_be_carried_to_be_covered():
    cap = Capability("db", {"read"}, constraints={"rows": 10})
    assert not cap.covers(Capability("db", {"read"}))
    assert cap.covers(Capability("db", {"read"}, constraints={"rows": 10, "region": "eu"}))
    assert dict(cap.constraints) == {"rows": 10}
    with pytest.raises(TypeError):
        cap.constraints["rows"] = 11  # read-only mapping


# --- requirements ------------------------------------------------------------

def test_requirement_parse_reads_resource_action_and_optional_scope():
    req = Requirement.parse("db:write:orders/*")
    assert (req.resource, req.action, req.scope) == ("db", "write", "orders/*")
    assert Requirement.parse("db:write").scope == "*"
    assert str(Requirement.parse("db:write")) == "db:write:*"
    assert Requirement.parse(req) is req


@pytest.mark.parametrize("text", [
    "", "db", "db:", ":write", "db::orders", "db:write:", "db:wrte:orders/*",
    "d b:write", "db:write:orders//1", "db:write:orders 1",
])
def test_requirement_parse_rejects_bad_strings_and_names_them(text):
    with pytest.raises(RequirementError) as info:
        Requirement.parse(text)
    assert info.value.requirement == text
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_requirement_parse_rejects_non_strings():
    with pytest.raises(RequirementError, match="must be a string"):
        Requirement.parse(42)  # type: ignore[arg-type]


def test_requirement_constructed_directly_is_validated():
    with pytest.raises(RequirementError, match="unknown action"):
        Requirement("db", "wrte")


# --- ceiling -----------------------------------------------------------------

def test_ceiling_accepts_requirements_inside_it():
    ceiling = DefinitionCeiling(["db:read,write:orders/*", Capability("mail", {"publish"})])
    parsed = ceiling.check(["db:write:orders/1", "mail:publish"], node="SaveOrder")
    assert [str(r) for r in parsed] == ["db:write:orders/1", "mail:publish:*"]
    assert ceiling.covers("db:read:orders/2")


def test_ceiling_rejects_a_requirement_above_it_naming_node_and_capability():
    ceiling = DefinitionCeiling(["db:read,write:orders/*"])
    with pytest.raises(CapabilityDeniedError) as info:
        ceiling.check(["db:write:orders/1", "db:delete:orders/1"], node="Purge")
    assert info.value.capability == "db:delete:orders/1"
    assert info.value.node == "Purge"
    assert "Purge" in str(info.value) and "ceiling" in str(info.value)


def test_ceiling_rejects_unparsable_requirements():
    with pytest.raises(RequirementError):
        DefinitionCeiling(["db:read"]).check(["db"])


def test_empty_ceiling_allows_nothing():
    assert not DefinitionCeiling([]).covers("db:read")
