"""Tokens: minting, verification, attenuation, serialization, expiry, revocation."""

from __future__ import annotations

import base64
import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lion_nb.clock import FakeClock
from lion_nb.errors import (
    CapabilityError, SecurityError, TokenError, TokenExpiredError, TokenRevokedError,
)
from lion_nb.security import Authority, Capability, Requirement, Token

KEY = b"k" * 32


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def authority(clock):
    return Authority(KEY, clock=clock)


@pytest.fixture
def token(authority):
    return authority.mint(Capability("db", {"read", "write"}, scope="orders/*"),
                          expires_in=3600, holder="etl")


# --- minting and verifying ---------------------------------------------------

def test_mint_then_verify_returns_the_token(authority, token, clock):
    verified = authority.verify(token.serialize())
    assert verified == token
    assert verified.capability == Capability("db", {"read", "write"}, scope="orders/*")
    assert verified.expires_at == clock.time() + 3600
    assert verified.holder == "etl"
    assert verified.chain == (token.token_id,)


def test_mint_accepts_a_capability_string(authority):
    assert str(authority.mint("db:read:orders/*").capability) == "db:read:orders/*"


@pytest.mark.parametrize("expires_in", [0, -1, "10", True, float("nan"), float("inf")])
def test_mint_rejects_non_positive_or_non_numeric_expiry(authority, expires_in):
    with pytest.raises(CapabilityError, match="expires_in"):
        authority.mint("db:read", expires_in=expires_in)


def test_mint_rejects_non_capability_and_empty_holder(authority):
    with pytest.raises(CapabilityError):
        authority.mint(42)  # type: ignore[arg-type]
    with pytest.raises(CapabilityError, match="holder"):
        authority.mint("db:read", holder="")


def test_authority_rejects_short_keys():
    with pytest.raises(SecurityError, match="at least 16 bytes"):
        Authority(b"short")


def test_authority_repr_and_pickle_never_expose_the_key(authority):
    assert KEY.decode() not in repr(authority)
    assert authority.key_id in repr(authority)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(authority)


def test_token_repr_does_not_show_the_bearer_string(token):
    assert token.serialize() not in repr(token)
    assert token.serialize().split(".")[-1] not in repr(token)


def test_serialized_token_is_url_safe_and_round_trips(token):
    text = token.serialize()
    assert text.startswith("lion1.")
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert Token.parse(text) == token
    assert Token.parse(text).serialize() == text


def test_token_pickles_as_its_string(token, authority):
    copy = pickle.loads(pickle.dumps(token))
    assert copy == token
    assert authority.verify(copy) == token


def test_verify_repeated_uses_the_cache(authority, token):
    text = token.serialize()
    first = authority.verify(text)
    assert authority.verify(text) is first


# --- bad tokens --------------------------------------------------------------

def _last_signature(token: Token) -> bytes:
    """What any holder of an HMAC token knows: its last chain signature."""
    text = token.serialize().rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _forge(token: Token, **changes) -> str:
    """Rewrite the identifier of ``token`` but keep its signature."""
    prefix, ident, *rest = token.serialize().split(".")
    obj = json.loads(base64.urlsafe_b64decode(ident + "=" * (-len(ident) % 4)))
    obj.update(changes)
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return ".".join([prefix, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), *rest])


@pytest.mark.parametrize("text, message", [
    ("", "prefix"),
    ("lion1", "truncated"),
    ("lion1.abc", "truncated"),
    ("lion9.eyJ9.AAAA", "prefix"),
    ("lion1.!!!.AAAA", "base64url"),
    ("lion1.eyJ9." + "A" * 43, "not JSON"),
    ("lion1.W10." + "A" * 43, "JSON object"),
    ("lion1.e30." + "A" * 43, "no valid id"),
    ("lion1.e30.AAAA", "wrong length"),
    ("lion1.é.AAAA", "non-ASCII"),
    ("x" * 20_000, "longer than"),
])
def test_parse_rejects_malformed_strings(text, message):
    with pytest.raises(TokenError, match=message):
        Token.parse(text)


def test_parse_rejects_non_strings():
    with pytest.raises(TokenError, match="must be a string"):
        Token.parse(b"lion1.abc")  # type: ignore[arg-type]


def test_verify_rejects_non_tokens_and_audits_it(authority):
    with pytest.raises(TokenError, match="expected a Token"):
        authority.verify(12)  # type: ignore[arg-type]
    assert authority.audit()[-1].action == "verify"
    assert authority.audit()[-1].decision == "deny"


def test_verify_rejects_a_widened_identifier(authority, token):
    with pytest.raises(TokenError, match="bad signature"):
        authority.verify(_forge(token, a=["admin", "read", "write"]))


def test_verify_rejects_a_token_from_another_key(token):
    other = Authority(b"o" * 32)
    with pytest.raises(TokenError, match="another key"):
        other.verify(token.serialize())


def test_verify_rejects_a_forged_key_id(token):
    other = Authority(b"o" * 32)
    with pytest.raises(TokenError, match="bad signature"):
        other.verify(_forge(token, kid=other.key_id))


def test_parse_rejects_a_widening_caveat_even_if_chained_correctly(token):
    # A holder knows the last signature, so can chain any caveat; it must still narrow.
    import hmac
    raw = json.dumps({"a": ["admin"], "id": "evil"}, separators=(",", ":")).encode()
    sig = hmac.digest(_last_signature(token), raw, "sha256")
    parts = token.serialize().split(".")[:-1]
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    with pytest.raises(TokenError, match="widens"):
        Token.parse(".".join([*parts, b64(raw), b64(sig)]))


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_caveat_cannot_make_a_token_immortal_with_a_non_finite_expiry(authority, token, exp):
    import hmac
    raw = ('{"exp":%s,"id":"evil"}' % exp).encode()
    sig = hmac.digest(_last_signature(token), raw, "sha256")
    parts = token.serialize().split(".")[:-1]
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    with pytest.raises(TokenError, match="not JSON|finite"):
        authority.verify(".".join([*parts, b64(raw), b64(sig)]))


# --- properties --------------------------------------------------------------

_settings = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(data=st.data())
def test_any_bit_flip_fails_verification(authority, token, data):
    for tok in (token, token.attenuate(actions={"read"}, scope="orders/1")):
        text = tok.serialize()
        i = data.draw(st.integers(0, len(text) - 1))
        bit = data.draw(st.integers(0, 7))
        flipped = text[:i] + chr(ord(text[i]) ^ (1 << bit)) + text[i + 1:]
        with pytest.raises(TokenError):
            authority.verify(flipped)


@_settings
@given(data=st.data())
def test_any_truncation_fails_verification(authority, token, data):
    text = token.attenuate(scope="orders/9").serialize()
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(TokenError):
        authority.verify(text[:cut])
    with pytest.raises(TokenError):
        authority.verify(text[len(text) - cut:])


@_settings
@given(key=st.binary(min_size=16, max_size=64))
def test_a_token_signed_with_another_key_fails(token, key):
    if key == KEY:
        return
    with pytest.raises(TokenError):
        Authority(key).verify(token.serialize())


_ACTIONS = ["read", "write", "delete", "publish"]
_SEGMENTS = ["orders", "users", "1", "2", "*", "**"]
_scopes = st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3).map("/".join)
_action_sets = st.frozensets(st.sampled_from(_ACTIONS), min_size=1)
_requirements = st.builds(lambda a, s: Requirement("db", a, s), st.sampled_from(_ACTIONS),
                          st.lists(st.sampled_from(["orders", "users", "1", "2"]),
                                   min_size=1, max_size=3).map("/".join))


@_settings
@given(root_actions=_action_sets, root_scope=_scopes,
       steps=st.lists(st.tuples(st.none() | _action_sets, st.none() | _scopes), max_size=4),
       probes=st.lists(_requirements, max_size=8))
def test_attenuation_never_widens(authority, root_actions, root_scope, steps, probes):
    root = authority.mint(Capability("db", root_actions, root_scope))
    chain = [root]
    for actions, scope in steps:
        try:
            chain.append(chain[-1].attenuate(actions=actions, scope=scope))
        except CapabilityError:
            continue
    leaf = authority.verify(chain[-1].serialize())
    for parent in chain:
        assert parent.capability.covers(leaf.capability)
    for req in probes:
        if leaf.capability.covers(req):
            assert root.capability.covers(req)


# --- attenuation -------------------------------------------------------------

def test_attenuate_narrows_and_keeps_a_chain_of_ids(authority, token):
    child = token.attenuate(actions={"read"}, scope="orders/1")
    assert child.capability == Capability("db", {"read"}, scope="orders/1")
    assert child.chain == (token.token_id, child.token_id)
    assert child.parent_id == token.token_id and child.root_id == token.token_id
    assert authority.verify(child.serialize()) == child


def test_attenuate_cannot_widen_actions(token):
    with pytest.raises(CapabilityError, match="widen"):
        token.attenuate(actions={"read", "delete"})


def test_attenuate_cannot_widen_scope(token):
    with pytest.raises(CapabilityError, match="widen"):
        token.attenuate(scope="users/*")


def test_attenuate_cannot_extend_expiry(token):
    with pytest.raises(CapabilityError, match="cannot extend"):
        token.attenuate(expires_in=7200)


def test_attenuate_rejects_unknown_actions(token):
    with pytest.raises(CapabilityError, match="unknown action"):
        token.attenuate(actions={"raed"})


def test_attenuate_can_add_constraints(authority, token):
    child = token.attenuate(constraints={"max_rows": 100})
    assert authority.verify(child).capability.constraints == {"max_rows": 100}


def test_parsed_token_can_be_attenuated_without_the_key(authority, token):
    remote = Token.parse(token.serialize())  # as another process would hold it
    narrowed = remote.attenuate(actions={"read"})
    assert authority.verify(narrowed.serialize()).capability.actions == {"read"}


# --- expiry and revocation ---------------------------------------------------

async def test_expired_token_fails_verification(authority, clock):
    tok = authority.mint("db:read", expires_in=10)
    authority.verify(tok)
    await clock.advance(9.9)
    authority.verify(tok)  # cached, and still in time
    await clock.advance(0.1)
    with pytest.raises(TokenExpiredError) as info:
        authority.verify(tok)
    assert info.value.token_id == tok.token_id


async def test_attenuated_expiry_applies_before_the_parent(authority, clock, token):
    short = token.attenuate(expires_in=5)
    await clock.advance(6)
    authority.verify(token)
    with pytest.raises(TokenExpiredError):
        authority.verify(short)


def test_revoked_token_fails_even_when_cached(authority, token):
    authority.verify(token)
    authority.revoke(token.token_id)
    with pytest.raises(TokenRevokedError) as info:
        authority.verify(token)
    assert info.value.token_id == token.token_id
    assert authority.is_revoked(token)


def test_revoking_a_parent_revokes_attenuated_children(authority, token):
    child = token.attenuate(actions={"read"})
    grandchild = child.attenuate(scope="orders/1")
    authority.verify(grandchild)
    authority.revoke(child)
    authority.verify(token)  # the parent itself is untouched
    for tok in (child, grandchild):
        with pytest.raises(TokenRevokedError, match="revoked"):
            authority.verify(tok)


def test_revoke_rejects_empty_ids(authority):
    with pytest.raises(TokenError):
        authority.revoke("")


def test_verify_cache_is_bounded(clock):
    authority = Authority(KEY, clock=clock, cache_size=3)
    tokens = [authority.mint("db:read") for _ in range(5)]
    for tok in tokens:
        authority.verify(tok)
    assert len(authority._cache) == 3
    assert authority.verify(tokens[0]) == tokens[0]  # evicted, verified again
