"""Capability tokens: a signed chain of blocks (see ``_keys`` for the two schemes).

A token is an *identifier* (token id, key id, capability, issue time, expiry,
holder) signed with the authority's key, followed by zero or more *caveats*.
Each caveat narrows the token (fewer actions, narrower scope, added
constraints, earlier expiry) and is chained into the signature, so anyone
holding a token can append a caveat and nobody can remove one. Every caveat
gives the token a new id, so a derived token can be revoked alone, and
revoking an id revokes every token derived from it. A caveat that widens is
rejected when the token is parsed, whoever signed it.

The string form is ``<prefix>.<block>...<proof>``, each part canonical
unpadded base64url; any other spelling of the same bytes is refused, so one
token has exactly one string. The string is a bearer credential: it is never
shown by ``repr``.

:func:`verify_token` checks the signature chain over the raw bytes *before*
any JSON is parsed: without a key, no input reaches the parser or the scope
matcher. Whatever goes wrong in a malformed token surfaces as TokenError.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lion_nb.clock import SYSTEM_CLOCK, Clock
from lion_nb.errors import CapabilityError, LionError, TokenError
from lion_nb.security._capability import Capability, ConstraintValue, Requirement
from lion_nb.security._keys import (
    ED25519_PREFIX, HMAC_PREFIX, SigningKey, append_block, block_payload, check_proof_shape,
    tail_signature,
)

__all__ = ["MAX_CAVEATS", "MAX_TOKEN_LEN", "PREFIX", "Token", "is_descendant", "narrow_tokens",
           "new_token_id", "verify_token"]

PREFIX = HMAC_PREFIX
"""Format tag of an HMAC token's string form (Ed25519 tokens use ``lion2``)."""

MAX_TOKEN_LEN = 16_384
"""Longest token string accepted, in characters."""

MAX_CAVEATS = 32
"""Most caveats (attenuations and bindings) one token may carry."""

_PREFIXES = (HMAC_PREFIX, ED25519_PREFIX)
_B64_RE = re.compile(r"[A-Za-z0-9_-]+\Z")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_NAME_MAX = 256
_IDENT_KEYS = {"id", "kid", "r", "a", "s", "c", "iat", "exp", "h"}
_CAVEAT_KEYS = {"id", "a", "s", "c", "exp"}
_BIND_KEYS = {"id", "inst", "tag"}
_BIND_OPTIONAL = {"run"}

AttenuateHook = Callable[["Token", "Token"], None]
"""Called as ``hook(child, parent)`` after a token is attenuated (the authority audits)."""

MarkFn = Callable[[bytes], bytes]
"""The root key's mark over some bytes: how a binding proves the authority made it."""


def new_token_id() -> str:
    """A fresh random token id (96 bits, URL-safe)."""
    return secrets.token_urlsafe(12)


def is_descendant(child: str, parent: str) -> bool:
    """True if instance ``child`` is ``parent`` or nested under it (``parent.x``, ``parent/x``)."""
    return child == parent or (child.startswith(parent) and child[len(parent)] in "./")


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    if not _B64_RE.match(text):
        raise TokenError(f"token {what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"token {what} is not valid base64url") from None
    # Base64 ignores a few trailing bits; without this check two strings (and a
    # flipped bit) could decode to the same token.
    if _b64e(raw) != text:
        raise TokenError(f"token {what} is not canonical base64url")
    return raw


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _no_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; an expiry of NaN would never
    # compare as passed, so a holder could append one and make a token immortal.
    raise ValueError(f"{name} is not allowed")


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError(f"token {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return obj


def _number(obj: Mapping[str, Any], key: str, what: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise TokenError(f"token {what}: {key!r} must be a finite number")
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer is finite but no float
        raise TokenError(f"token {what}: {key!r} must be a finite number") from None


def _name(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or not value
                              or len(value) > _NAME_MAX):
        raise TokenError(f"token {what}: {key!r} must be a non-empty string of at most "
                         f"{_NAME_MAX} characters")
    return value


def _token_id(obj: Mapping[str, Any], what: str) -> str:
    tid = obj.get("id")
    if not isinstance(tid, str) or not _ID_RE.match(tid):
        raise TokenError(f"token {what} has no valid id")
    return tid


def _split(text: object) -> tuple[str, tuple[bytes, ...], bytes]:
    """(prefix, raw blocks, raw proof) of a token string: shape only, no JSON."""
    if not isinstance(text, str):
        raise TokenError(f"token must be a string, not {type(text).__name__}")
    if len(text) > MAX_TOKEN_LEN:
        raise TokenError(f"token string is longer than {MAX_TOKEN_LEN} characters")
    if not text.isascii():
        raise TokenError("token string contains non-ASCII characters")
    pieces = text.split(".", MAX_CAVEATS + 3)
    if pieces[0] not in _PREFIXES:
        raise TokenError(f"not a lion_nb token (expected a {' or '.join(_PREFIXES)} prefix)")
    if len(pieces) < 3:
        raise TokenError("token string is truncated")
    if len(pieces) - 3 > MAX_CAVEATS:
        raise TokenError(f"token has more than {MAX_CAVEATS} caveats")
    blocks = tuple(_b64d(p, f"part {i}") for i, p in enumerate(pieces[1:-1], 1))
    proof = _b64d(pieces[-1], "signature")
    check_proof_shape(pieces[0], proof)
    return pieces[0], blocks, proof


@dataclass(frozen=True, eq=False, repr=False)
class Token:
    """A signed, attenuable capability token. Build with ``Authority.mint``."""

    token_id: str
    """This token's own id (every caveat makes a new one)."""
    chain: tuple[str, ...]
    """Ids from the minted root to this token; revoking any of them revokes it."""
    capability: Capability
    """What the token permits, after every caveat."""
    issued_at: float
    """Wall-clock seconds when the root token was minted."""
    expires_at: float | None
    """Wall-clock seconds after which it is refused (None: never)."""
    holder: str | None
    """Who it was minted for, if named."""
    instance_id: str | None
    """The workflow instance it is bound to, if granted to one."""
    key_id: str
    """Fingerprint of the key that signed it."""
    run_id: str | None = None
    """The run (executor-made nonce and definition fingerprint) it is bound to, if any."""
    scheme: str = PREFIX
    """``"lion1"`` (HMAC) or ``"lion2"`` (Ed25519)."""
    _blocks: tuple[bytes, ...] = field(default=(), repr=False)
    _caveats: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    _proof: bytes = field(default=b"", repr=False)
    _clock: Clock = field(default=SYSTEM_CLOCK, repr=False)
    _on_attenuate: AttenuateHook | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)  # serialize() cache

    # --- construction -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> "Token":
        """Rebuild a token from ``serialize()``'s string; TokenError if malformed.

        Parsing checks structure only; ``Authority.verify`` checks the signature.
        """
        prefix, blocks, proof = _split(text)
        return _decode(prefix, blocks, proof, SYSTEM_CLOCK, None)

    def _extend(self, caveat: dict[str, Any]) -> "Token":
        raw = _canonical(caveat)
        block, proof = append_block(self.scheme, self._proof, raw)
        # Only the new block is decoded: this token's own were checked when it was made
        # (every token is built by _decode or here), and a grant per run pays for it.
        try:
            n = len(self._blocks)
            cav = _load(block_payload(self.scheme, block), f"caveat {n}")
            chain, cap, expires_at, instance, run = _step(
                list(self.chain), self.capability, self.expires_at, self.instance_id,
                self.run_id, cav, n)
        except TokenError:
            raise
        except _MALFORMED as exc:
            raise _malformed(exc) from None
        return Token(chain[-1], tuple(chain), cap, self.issued_at, expires_at, self.holder,
                     instance, self.key_id, run, self.scheme, self._blocks + (block,),
                     self._caveats + (cav,), proof, self._clock, self._on_attenuate)

    def bind(self, instance_id: str, mark: MarkFn, *, run_id: str | None = None,
             token_id: str | None = None) -> "Token":
        """Bind to ``instance_id`` (and ``run_id``) with the root key's ``mark``.

        Only the authority's key makes a mark that verifies; a re-binding must
        name a child of the current instance (``inst-1.step-1``). ``token_id``:
        the new token's id, when it was announced before the token was made (a
        deferred binding, see ``PendingBinding``); a fresh one otherwise.
        """
        self.check_binding(instance_id, run_id)
        tag = mark(_bind_message(tail_signature(self.scheme, self._blocks, self._proof),
                                 instance_id, run_id))
        caveat: dict[str, Any] = {"id": token_id or new_token_id(), "inst": instance_id,
                                  "tag": _b64e(tag)}
        if run_id is not None:
            caveat["run"] = run_id
        return self._extend(caveat)

    def check_binding(self, instance_id: str, run_id: str | None = None) -> None:
        """Raise TokenError unless this token may be bound to ``instance_id`` (and ``run_id``)."""
        if not isinstance(instance_id, str) or not instance_id or len(instance_id) > _NAME_MAX:
            raise TokenError(f"instance id must be a non-empty string of at most {_NAME_MAX} "
                             f"characters, not {repr(instance_id)[:60]}", token_id=self.token_id)
        if self.instance_id is not None and not is_descendant(instance_id, self.instance_id):
            raise TokenError(f"token {self.token_id} is bound to {self.instance_id!r}; it can "
                             f"only be re-bound to a child of it, not {instance_id[:60]!r}",
                             token_id=self.token_id)
        if self.run_id is not None and instance_id == self.instance_id and run_id != self.run_id:
            raise TokenError(f"token {self.token_id} is bound to one run of {instance_id!r}; "
                             "a later run under the same id cannot take it over",
                             token_id=self.token_id)

    # --- attenuation --------------------------------------------------------

    def attenuate(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
                  expires_in: float | None = None,
                  constraints: Mapping[str, ConstraintValue] | None = None,
                  clock: Clock | None = None) -> "Token":
        """Return a narrower token; CapabilityError if any argument would widen it.

        Needs no key: whoever holds a token may restrict it before passing it on.
        """
        cap = self.capability.narrow(actions=actions, scope=scope, constraints=constraints)
        caveat: dict[str, Any] = {"id": new_token_id()}
        if cap.actions != self.capability.actions:
            caveat["a"] = sorted(cap.actions)
        if cap.scope != self.capability.scope:
            caveat["s"] = cap.scope
        if cap.constraints != self.capability.constraints:
            caveat["c"] = dict(cap.constraints)
        if expires_in is not None:
            if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                    or not 0 < expires_in < math.inf:
                raise CapabilityError(f"expires_in must be a positive number of seconds, "
                                      f"not {expires_in!r}", capability=str(self.capability))
            exp = (clock or self._clock).time() + expires_in
            if self.expires_at is not None and exp > self.expires_at:
                raise CapabilityError(f"token {self.token_id} expires in less than "
                                      f"{expires_in}s; attenuation cannot extend it",
                                      capability=str(self.capability))
            caveat["exp"] = exp
        child = self._extend(caveat)
        if self._on_attenuate is not None:
            self._on_attenuate(child, self)
        return child

    # --- string form --------------------------------------------------------

    def serialize(self) -> str:
        """The compact URL-safe string form (a bearer credential: keep it secret)."""
        text = self._text
        if text is None:
            text = ".".join([self.scheme, *(_b64e(p) for p in self._blocks), _b64e(self._proof)])
            object.__setattr__(self, "_text", text)  # a cache, not state: the token is frozen
        return text

    @property
    def root_id(self) -> str:
        """The id of the minted token this one derives from."""
        return self.chain[0]

    @property
    def parent_id(self) -> str | None:
        """The id of the token this one was derived from (None for a root)."""
        return self.chain[-2] if len(self.chain) > 1 else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Token):
            return NotImplemented
        return self._blocks == other._blocks and hmac.compare_digest(self._proof, other._proof)

    def __hash__(self) -> int:
        return hash((self._blocks, self._proof))

    def __repr__(self) -> str:
        bits = [repr(self.token_id), repr(self.capability)]
        if self.expires_at is not None:
            bits.append(f"expires_at={self.expires_at!r}")
        if self.holder is not None:
            bits.append(f"holder={self.holder!r}")
        if self.instance_id is not None:
            bits.append(f"instance_id={self.instance_id!r}")
        return f"Token({', '.join(bits)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as its string (no hooks), e.g. to a Dask worker, whose
        # Authority verifies it again.
        return (Token.parse, (self.serialize(),))


def narrow_tokens(tokens: Iterable[Token | str], requirements: Iterable[Requirement | str], *,
                  expires_in: float | None = None, clock: Clock = SYSTEM_CLOCK
                  ) -> tuple[Token, ...]:
    """One token per requirement, attenuated to exactly it; needs no key.

    For handing work to another process: each party gets the one action on
    the one scope it declared, expiring within ``expires_in`` seconds. A
    requirement no token covers is left out (the receiver's check denies it).
    """
    held = [t if isinstance(t, Token) else Token.parse(t) for t in tokens]
    now = clock.time()
    out = []
    for req in dict.fromkeys(Requirement.parse(r) for r in requirements):
        for tok in held:
            if tok.capability.covers(req) and (tok.expires_at is None or now < tok.expires_at):
                ttl = expires_in
                if ttl is not None and tok.expires_at is not None and now + ttl >= tok.expires_at:
                    ttl = None  # already expires sooner
                out.append(tok.attenuate(actions=req.actions, scope=req.scope, expires_in=ttl,
                                         clock=clock))
                break
    return tuple(out)


def _bind_message(prev: bytes, instance_id: str, run_id: str | None) -> bytes:
    # Length-prefixed so that no two (instance, run) pairs share a message.
    inst, run = instance_id.encode(), (run_id or "").encode()
    return prev + len(inst).to_bytes(2, "big") + inst + run


def verify_token(text: str, key: SigningKey, *, clock: Clock = SYSTEM_CLOCK,
                 on_attenuate: AttenuateHook | None = None) -> Token:
    """Check ``text``'s signatures with ``key`` on the raw bytes, then parse it.

    TokenError for anything wrong: shape, signature, key, content, bindings.
    Expiry and revocation are the caller's (they change over time).
    """
    prefix, blocks, proof = _split(text)
    if prefix != key.prefix:
        raise TokenError(f"token is a {prefix} token; this authority verifies {key.prefix} "
                         "tokens")
    try:
        sigs = key.check_chain(blocks, proof)
    except TokenError as exc:
        raise TokenError(f"{exc}, or signed by another key (this authority's key is "
                         f"{key.key_id})") from None
    tok = _decode(prefix, blocks, proof, clock, on_attenuate)
    if tok.key_id != key.key_id:
        raise TokenError(f"token {tok.token_id} was signed by key {tok.key_id}, "
                         f"not by this authority (key {key.key_id})", token_id=tok.token_id)
    for n, cav in enumerate(tok._caveats, 1):
        if "inst" in cav:
            tag = _b64d(cav["tag"], f"caveat {n} binding tag")
            if not key.check_mark(_bind_message(sigs[n - 1], cav["inst"], cav.get("run")), tag):
                raise TokenError(f"token {tok.token_id}: instance binding {cav['inst'][:60]!r} "
                                 "was not made by this authority", token_id=tok.token_id)
    return tok


def _decode(prefix: str, blocks: tuple[bytes, ...], proof: bytes, clock: Clock,
            on_attenuate: AttenuateHook | None) -> Token:
    try:
        return _decode_checked(prefix, blocks, proof, clock, on_attenuate)
    except TokenError:
        raise
    except _MALFORMED as exc:
        raise _malformed(exc) from None


# Whatever a hostile token trips over, the caller sees one kind of error.
_MALFORMED = (LionError, ValueError, TypeError, OverflowError, RecursionError, KeyError,
              AttributeError)


def _malformed(exc: BaseException) -> TokenError:
    return TokenError(f"token is malformed ({type(exc).__name__}: {str(exc)[:120]})")


def _decode_checked(prefix: str, blocks: tuple[bytes, ...], proof: bytes, clock: Clock,
                    on_attenuate: AttenuateHook | None) -> Token:
    ident = _load(block_payload(prefix, blocks[0]), "identifier")
    if not set(ident) <= _IDENT_KEYS:
        extra = sorted(set(ident) - _IDENT_KEYS)
        raise TokenError(f"token identifier has unknown fields {str(extra)[:80]}")
    root_id = _token_id(ident, "identifier")
    kid = ident.get("kid")
    if not isinstance(kid, str) or len(kid) > 64:
        raise TokenError("token identifier has a malformed key id", token_id=root_id)
    holder = _name(ident, "h", "identifier")
    issued_at = _number(ident, "iat", "identifier")
    if issued_at is None:
        raise TokenError("token identifier has no issue time", token_id=root_id)
    expires_at = _number(ident, "exp", "identifier")
    actions = ident.get("a")
    if not isinstance(actions, list):
        raise TokenError("token identifier has no action list", token_id=root_id)
    try:
        raw: Any = ident  # untrusted JSON: Capability validates each field's type
        cap = Capability(raw.get("r"), frozenset(actions), raw.get("s"), raw.get("c"))
    except (CapabilityError, TypeError) as exc:
        raise TokenError(f"token capability is invalid: {exc}", token_id=root_id) from None
    chain: list[str] = [root_id]
    instance: str | None = None
    run: str | None = None
    caveats = []
    for n, block in enumerate(blocks[1:], 1):
        cav = _load(block_payload(prefix, block), f"caveat {n}")
        chain, cap, expires_at, instance, run = _step(chain, cap, expires_at, instance, run,
                                                      cav, n)
        caveats.append(cav)
    return Token(chain[-1], tuple(chain), cap, issued_at, expires_at, holder, instance, kid,
                 run, prefix, blocks, tuple(caveats), proof, clock, on_attenuate)


def _step(chain: list[str], cap: Capability, expires_at: float | None, instance: str | None,
          run: str | None, cav: Mapping[str, Any], n: int
          ) -> tuple[list[str], Capability, float | None, str | None, str | None]:
    """The token after caveat ``n`` (``chain`` is extended in place), or TokenError."""
    tid = _token_id(cav, f"caveat {n}")
    if tid in chain:
        raise TokenError(f"token caveat {n} repeats id {tid!r}", token_id=tid)
    chain.append(tid)
    if "inst" in cav:
        new = _binding(cav, n)
        if instance is not None and not is_descendant(new, instance):
            raise TokenError(f"token caveat {n} re-binds {instance[:60]!r} to an unrelated "
                             f"instance {new[:60]!r}", token_id=tid)
        if run is not None and new == instance and cav.get("run") != run:
            raise TokenError(f"token caveat {n} moves a run-bound token to another run",
                             token_id=tid)
        return chain, cap, expires_at, new, cav.get("run")
    cap, expires_at = _apply_caveat(cap, expires_at, cav, n)
    return chain, cap, expires_at, instance, run


def _apply_caveat(cap: Capability, expires_at: float | None, cav: Mapping[str, Any],
                  n: int) -> tuple[Capability, float | None]:
    if not set(cav) <= _CAVEAT_KEYS:
        extra = str(sorted(set(cav) - _CAVEAT_KEYS))[:80]
        raise TokenError(f"token caveat {n} has unknown fields {extra}")
    actions = cav.get("a")
    if actions is not None and not isinstance(actions, list):
        raise TokenError(f"token caveat {n}: actions must be a list")
    try:
        cap = cap.narrow(actions=None if actions is None else frozenset(actions),
                         scope=cav.get("s"), constraints=cav.get("c"))
    except (CapabilityError, TypeError) as exc:
        raise TokenError(f"token caveat {n} is invalid or widens the token: {exc}") from None
    exp = _number(cav, "exp", f"caveat {n}")
    if exp is not None:
        if expires_at is not None and exp > expires_at:
            raise TokenError(f"token caveat {n} extends the expiry")
        expires_at = exp
    return cap, expires_at


def _binding(cav: Mapping[str, Any], n: int) -> str:
    keys = set(cav)
    inst = _name(cav, "inst", f"caveat {n}")
    _name(cav, "run", f"caveat {n}")
    if not _BIND_KEYS <= keys or not keys <= _BIND_KEYS | _BIND_OPTIONAL or inst is None \
            or not isinstance(cav["tag"], str):
        raise TokenError(f"token caveat {n} is a malformed instance binding")
    return inst
