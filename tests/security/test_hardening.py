"""Issue 15, inside lion_nb.security: no keyless denial of service, nothing widened or re-bound."""

from __future__ import annotations

import base64
import hmac
import json
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lion_nb.clock import FakeClock
from lion_nb.errors import (
    CapabilityDeniedError, CapabilityError, RequirementError, SecurityError, TokenError,
    TokenRevokedError,
)
from lion_nb.security import (
    MAX_SCOPE_LEN, MAX_SEGMENTS, MAX_TOKEN_LEN, Authority, Capability, GrantSet, Requirement,
    ResourceRegistry, Token, narrow_tokens, resource_for, scope_covers,
)

KEY = b"k" * 32


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def authority(clock):
    return Authority(KEY, clock=clock)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def append_raw(token: Token, caveat: bytes | dict) -> str:
    """What any holder of an HMAC token can do: chain any bytes as a caveat."""
    raw = caveat if isinstance(caveat, bytes) else json.dumps(caveat).encode()
    *head, sig = token.serialize().split(".")
    return ".".join([*head, b64(raw), b64(hmac.digest(unb64(sig), raw, "sha256"))])


def hand_made(ident: dict, caveats: list[bytes] = ()) -> str:
    """A structurally complete token signed with nobody's key."""
    parts = [json.dumps(ident).encode(), *caveats]
    return ".".join(["lion1", *(b64(p) for p in parts), b64(b"\0" * 32)])


# --- denial of service -----------------------------------------------------------------

EVIL_SCOPE = "*x" * 60 + "*y"


def test_keyless_redos_token_is_refused_fast_without_parsing():
    ident = {"id": "a", "kid": "x", "r": "db", "a": ["read"], "s": "*", "iat": 1}
    cav = json.dumps({"id": "b", "s": EVIL_SCOPE}).encode()
    cav2 = json.dumps({"id": "c", "s": "x" * 500}).encode()
    text = hand_made(ident, [cav, cav2])
    authority = Authority(KEY)
    start = time.perf_counter()
    with pytest.raises(TokenError, match="bad signature"):
        authority.verify(text)
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("outer, inner", [
    (EVIL_SCOPE, "x" * 400),
    ("a/" + "*a" * 100 + "*b", "a/" + "a" * 400),
    ("**/" * 15 + "z", "a/" * 30 + "b"),
])
def test_glob_matching_takes_linear_time(outer, inner):
    start = time.perf_counter()
    for _ in range(20):
        scope_covers.cache_clear()
        assert scope_covers(outer, inner) is False
    assert time.perf_counter() - start < 0.5


def test_holder_built_pathological_scope_is_checked_fast(authority):
    token = authority.mint("db:read:*")
    evil = authority.verify(token.attenuate(scope=EVIL_SCOPE))
    grants = authority.grant([evil], instance_id="i")
    start = time.perf_counter()
    assert not grants.allows("db:read:" + "x" * 500, node="n")
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("scope, message", [
    ("a" * (MAX_SCOPE_LEN + 1), "longer than"),
    ("/".join(["a"] * (MAX_SEGMENTS + 1)), "segments"),
    ("/".join(["a"] * 500), "longer than|segments"),
    ("orders/../users", "'..'"),
    ("orders/./1", "'.'"),
    ("orders/\u00a01", "whitespace"),
])
def test_scopes_are_capped_and_refuse_dot_segments(scope, message):
    with pytest.raises(CapabilityError, match=message):
        Capability("db", {"read"}, scope=scope)
    with pytest.raises(RequirementError):
        Requirement.parse(f"db:read:{scope}")
    with pytest.raises(CapabilityError):
        scope_covers("orders/**", scope)


def test_dot_dot_cannot_reach_outside_a_granted_subtree(authority):
    grants = authority.grant([authority.mint("db:read:orders/**")], instance_id="i")
    with pytest.raises(RequirementError):
        grants.check("db:read:orders/../users/1", node="n")


def test_deep_requirements_never_raise_recursion_error_in_a_check(authority):
    grants = authority.grant([authority.mint("db:read:**")], instance_id="i")
    with pytest.raises(RequirementError):
        grants.check("db:read:" + "/".join(["a"] * 500), node="n")
    assert grants.allows("db:read:" + "/".join(["a"] * MAX_SEGMENTS), node="n")


def test_token_size_is_capped():
    with pytest.raises(TokenError, match="longer than"):
        Token.parse("lion1." + "A" * MAX_TOKEN_LEN)


# --- every malformed token is a TokenError, audited and clipped ------------------------

IDENT = {"id": "root", "kid": "x", "r": "db", "a": ["read"], "s": "*", "iat": 1}


@pytest.mark.parametrize("ident, caveats", [
    ({**IDENT, "iat": 10 ** 400}, []),
    ({**IDENT, "exp": 10 ** 400}, []),
    (IDENT, [b"[" * 100_00 + b"]" * 100_00]),
    (IDENT, [json.dumps({"id": "c", "s": "/".join(["a"] * 600)}).encode()]),
    (IDENT, [json.dumps({"id": "c", "inst": 5, "tag": "x"}).encode()]),
    (IDENT, [json.dumps({"id": "c", "inst": "i", "tag": "x", "run": ["r"]}).encode()]),
    (IDENT, [json.dumps({"id": "c", "a": "read"}).encode()]),
    (IDENT, [json.dumps({"id": "c", "c": {"k": [1]}}).encode()]),
    ({**IDENT, "h": {"x": 1}}, []),
    ({**IDENT, "a": [["read"]]}, []),
    ({**IDENT, "r": None}, []),
    ({**IDENT, "c": []}, []),
])
def test_malformed_tokens_raise_token_error_only(ident, caveats):
    with pytest.raises(TokenError):
        Token.parse(hand_made(ident, caveats))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.from_regex(r"lion[12](\.[A-Za-z0-9_-]{0,60}){1,6}",
                                                   fullmatch=True))
def test_any_string_is_a_token_error_never_another_exception(text):
    authority = Authority(KEY)
    with pytest.raises(TokenError):
        authority.verify(text)
    with pytest.raises(TokenError):
        Token.parse(text) if not text.startswith("lion") else authority.verify(text)


def test_a_holder_appended_hostile_caveat_is_a_token_error(authority):
    token = authority.mint("db:read:*")
    for caveat in [b"[" * 5000 + b"]" * 5000, {"id": "z", "exp": 10 ** 400},
                   {"id": "z", "s": "/".join(["a"] * 600)}, b"\xff\xfe"]:
        with pytest.raises(TokenError):
            authority.verify(append_raw(token, caveat))


def test_malformed_token_audit_keeps_only_a_clipped_prefix(authority):
    text = "lion1." + "A" * (MAX_TOKEN_LEN - 10)
    with pytest.raises(TokenError):
        authority.verify(text)
    with pytest.raises(TokenError):
        authority.verify(append_raw(authority.mint("db:read:*"), {"id": "z", "s": "q" * 9000}))
    denials = [r for r in authority.audit() if r.action == "verify"]
    assert len(denials) == 2 and all(r.decision == "deny" for r in denials)
    for rec in denials:
        assert sum(len(str(v)) for v in rec) < 1000


def test_unparsable_requirement_audit_is_clipped(authority):
    grants = authority.grant([authority.mint("db:read")], instance_id="i")
    with pytest.raises(RequirementError):
        grants.check("x" * 50_000, node="n")
    assert len(authority.audit()[-1].capability) < 300


# --- type-strict constraints ------------------------------------------------------------

@pytest.mark.parametrize("granted, presented", [(1, True), (True, 1), (1, 1.0), (0, False)])
def test_constraint_values_compare_type_strictly(granted, presented):
    cap = Capability("db", {"read"}, constraints={"max_rows": granted})
    other = Capability("db", {"read"}, constraints={"max_rows": presented})
    assert not cap.covers(other)
    with pytest.raises(CapabilityError, match="cannot change constraint"):
        cap.narrow(constraints={"max_rows": presented})


# --- narrowing per requirement, exactly -------------------------------------------------

def test_narrow_gives_exactly_each_requirement_not_a_union(authority, clock):
    grants = authority.grant([authority.mint("db:read,write:orders/*", expires_in=3600),
                              authority.mint("cache:write:*")], instance_id="inst-1")
    step = grants.narrow(["db:read:orders/1", "cache:write:c/1"], expires_in=60)
    assert sorted(str(c) for c in step.capabilities) == ["cache:write:c/1", "db:read:orders/1"]
    for wider in ["db:write:orders/1", "db:read:orders/99", "cache:write:c/2", "cache:write:*"]:
        assert not step.allows(wider, node="step")
    assert all(t.expires_at <= clock.time() + 60 for t in step.tokens)


def test_narrow_denies_and_audits_an_uncovered_requirement(authority):
    grants = authority.grant([authority.mint("db:read:orders/*")], instance_id="inst-1")
    with pytest.raises(CapabilityDeniedError) as info:
        grants.narrow(["db:write:orders/1"], node="step")
    assert info.value.capability == "db:write:orders/1"
    assert authority.audit()[-1].decision == "deny"


def test_narrow_tokens_needs_no_key(authority):
    tokens = authority.grant([authority.mint("db:read,write:*")], instance_id="i").tokens
    parsed = [Token.parse(t.serialize()) for t in tokens]
    out = narrow_tokens(parsed, ["db:read:a/1"], expires_in=5)
    assert [str(t.capability) for t in out] == ["db:read:a/1"]
    assert authority.verify(out[0], instance_id="i")


# --- instance binding -------------------------------------------------------------------

def test_attenuate_cannot_rebind_to_an_unrelated_instance(authority):
    grants = authority.grant([authority.mint("db:read:*")], instance_id="inst-1")
    with pytest.raises(TokenError, match="child instance"):
        grants.attenuate(instance_id="inst-2")
    with pytest.raises(TokenError, match="child instance"):
        grants.attenuate(instance_id="inst-10")  # a prefix is not a parent
    child = grants.attenuate(instance_id="inst-1.step-1")
    assert child.allows("db:read:x", node="n")


def test_a_binding_to_an_unrelated_instance_is_refused_even_with_the_key(authority):
    bound = authority.grant([authority.mint("db:read:*")], instance_id="inst-1").tokens[0]
    with pytest.raises(TokenError, match="child"):
        authority.bind(bound, "inst-2")


def test_hand_built_grant_set_cannot_skip_earlier_revocations(authority):
    root = authority.mint("db:read:*")
    kept = authority.grant([root], instance_id="inst-1").tokens  # copied out, then revoked
    authority.revoke(root)
    with pytest.raises(TokenRevokedError):
        GrantSet(authority, "inst-1", kept)


def test_hand_built_grant_set_verifies_its_tokens(authority):
    forged = Authority(b"f" * 32)
    tokens = forged.grant([forged.mint("db:read:*")], instance_id="inst-1").tokens
    with pytest.raises(TokenError):
        GrantSet(authority, "inst-1", tokens)


def test_run_bound_tokens_are_refused_for_another_run(authority):
    grants = authority.grant([authority.mint("db:read:*")], instance_id="inst-1",
                             run_id="nonce-1")
    token = grants.tokens[0]
    assert token.run_id == "nonce-1"
    assert authority.verify(token, instance_id="inst-1", run_id="nonce-1")
    with pytest.raises(TokenError, match="another run"):
        authority.verify(token, instance_id="inst-1", run_id="nonce-2")


# --- Ed25519 -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer():
    return Authority.generate_ed25519()


def test_ed25519_tokens_verify_with_the_public_key_only(issuer):
    verifier = Authority.from_public_key(issuer.public_key)
    token = issuer.mint("db:read,write:orders/*", expires_in=60)
    narrowed = verifier.verify(token.serialize()).attenuate(actions={"read"}, scope="orders/1")
    assert str(verifier.verify(narrowed.serialize()).capability) == "db:read:orders/1"
    bound = issuer.grant([narrowed], instance_id="inst-1").tokens
    assert verifier.grant(bound, instance_id="inst-1").allows("db:read:orders/1", node="n")
    assert token.serialize().startswith("lion2.") and not verifier.can_mint


def test_a_verify_only_authority_cannot_mint_bind_or_sign(issuer):
    verifier = Authority.from_public_key(issuer.public_key)
    with pytest.raises(SecurityError, match="public key"):
        verifier.mint("db:read")
    with pytest.raises(SecurityError, match="public key"):
        verifier.grant([issuer.mint("db:read")], instance_id="i")  # needs a new binding
    with pytest.raises(SecurityError, match="public key"):
        verifier.sign(b"x", purpose="t")
    assert verifier.check_signature(b"x", issuer.sign(b"x", purpose="t"), purpose="t")
    assert not verifier.check_signature(b"x", issuer.sign(b"x", purpose="t"), purpose="u")


def test_ed25519_binding_made_by_another_key_is_refused(issuer):
    stranger = Authority.generate_ed25519()
    token = Token.parse(issuer.mint("db:read").serialize())
    forged = token.bind("inst-1", lambda data: stranger.sign(data, purpose="x"))
    with pytest.raises(TokenError, match="not made by this authority"):
        issuer.verify(forged)


def test_keys_of_one_kind_refuse_tokens_of_the_other(issuer):
    with pytest.raises(TokenError, match="lion2 token"):
        Authority(KEY).verify(issuer.mint("db:read"))
    with pytest.raises(TokenError, match="lion1 token"):
        issuer.verify(Authority(KEY).mint("db:read"))


@pytest.fixture(scope="module")
def ed_text(issuer):
    token = issuer.grant([issuer.mint("db:read,write:*")], instance_id="i").tokens[0]
    return token.attenuate(actions={"read"}).serialize()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_ed25519_any_bit_flip_or_truncation_fails(issuer, ed_text, data):
    text = ed_text
    i = data.draw(st.integers(0, len(text) - 1))
    flipped = text[:i] + chr(ord(text[i]) ^ (1 << data.draw(st.integers(0, 6)))) + text[i + 1:]
    for bad in (flipped, text[:i]):
        with pytest.raises(TokenError):
            issuer.verify(bad)


def test_ed25519_caveats_cannot_be_removed(issuer):
    token = issuer.mint("db:read,write:*")
    narrowed = token.attenuate(actions={"read"})
    pieces = narrowed.serialize().split(".")
    # Drop the caveat but keep the newer proof: the proof no longer matches.
    with pytest.raises(TokenError):
        issuer.verify(".".join([pieces[0], pieces[1], pieces[-1]]))


# --- properties of the matcher ----------------------------------------------------------

_alpha = st.text(alphabet="ab*", min_size=1, max_size=8)


@settings(max_examples=500, deadline=None)
@given(pattern=_alpha, text=st.text(alphabet="ab", max_size=10))
def test_glob_match_agrees_with_a_reference_regex(pattern, text):
    if "**" in pattern or not text:
        return  # '**' is a whole-segment pattern; an empty segment is no path
    reference = re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text) is not None
    assert scope_covers(pattern, text) == reference


_seg = st.sampled_from(["a", "b", "*", "a*", "**"])


@settings(max_examples=500, deadline=None)
@given(outer=st.lists(_seg, min_size=1, max_size=5), inner=st.lists(_seg, min_size=1, max_size=5),
       path=st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=6))
def test_scope_covers_is_sound_on_concrete_paths(outer, inner, path):
    o, i, p = "/".join(outer), "/".join(inner), "/".join(path)
    if scope_covers(o, i) and scope_covers(i, p):
        assert scope_covers(o, p)


# --- resources as factories ------------------------------------------------------------

def test_a_factory_resource_receives_the_checked_scope(authority):
    registry = ResourceRegistry()
    registry.register_factory("files", lambda scope: f"handle confined to {scope}")
    grants = authority.grant([authority.mint("files:read:reports/*")], instance_id="i")
    assert resource_for(grants, registry, "files", "read", "reports/q1",
                        node="n") == "handle confined to reports/q1"
    with pytest.raises(CapabilityDeniedError):
        resource_for(grants, registry, "files", "read", "secrets/x", node="n")


# --- sealed documents (stored definitions and records) ----------------------------------

@pytest.mark.parametrize("make", [lambda: Authority(KEY), Authority.generate_ed25519])
def test_sealed_data_verifies_before_it_is_parsed(make):
    authority = make()
    blob = authority.seal(b'{"nodes": []}', purpose="definition")
    assert authority.unseal(blob, purpose="definition") == b'{"nodes": []}'
    if authority.public_key is not None:
        verifier = Authority.from_public_key(authority.public_key)
        assert verifier.unseal(blob, purpose="definition") == b'{"nodes": []}'
    tampered = blob.replace(b"[]", b"[1]")
    for bad in (tampered, b'{"nodes": []}', blob[:20], b"lion-sealed1 x y\n{}"):
        with pytest.raises(SecurityError):
            authority.unseal(bad, purpose="definition")
    with pytest.raises(SecurityError, match="does not verify"):
        authority.unseal(blob, purpose="record")  # signed for another use
    with pytest.raises(SecurityError, match="does not verify"):
        Authority(b"o" * 32).unseal(blob, purpose="definition")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.sampled_from(["id", "a", "s", "c", "exp", "inst", "tag",
                                                        "run", "x"]), kids, max_size=5),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(caveat=st.dictionaries(st.sampled_from(["id", "a", "s", "c", "exp", "inst", "tag", "run"]),
                              _json, max_size=6))
def test_any_holder_appended_caveat_is_refused_or_narrows_and_is_audited(caveat):
    authority = Authority(KEY)
    token = authority.mint("db:read,write:orders/*", expires_in=100)
    try:
        text = append_raw(token, json.dumps(caveat, allow_nan=True).encode())
    except (TypeError, ValueError):
        return
    try:
        out = authority.verify(text)
    except TokenError:
        assert authority.audit()[-1][1:3] == ("verify", "deny")
        return
    assert token.capability.covers(out.capability)
    assert out.expires_at is not None and out.expires_at <= token.expires_at


def test_tokens_of_one_run_cannot_be_granted_to_a_later_run_under_the_same_id(authority):
    first = authority.grant([authority.mint("db:read:*")], instance_id="inst-1",
                            run_id="nonce-1").tokens
    with pytest.raises(CapabilityDeniedError, match="another run"):
        authority.grant(first, instance_id="inst-1", run_id="nonce-2")
    with pytest.raises(TokenError, match="later run"):
        authority.bind(first[0], "inst-1", run_id="nonce-2")
    # A child instance (sub-workflow) may get its own run.
    assert authority.bind(first[0], "inst-1.sub", run_id="nonce-3").run_id == "nonce-3"
