"""Capability tokens: a macaroon-like HMAC-SHA256 chain, serialized compactly.

A token is an *identifier* (token id, key id, capability, issue time, expiry,
holder) signed with the authority's key, followed by zero or more *caveats*.
Each caveat narrows the token (fewer actions, narrower scope, added
constraints, earlier expiry) and is chained into the signature::

    sig0 = HMAC(key, identifier)
    sigN = HMAC(sig(N-1), caveatN)

so anyone holding a token can append a caveat, nobody can remove one (that
would need an earlier signature, which HMAC does not reveal), and only the
key holder can check the final signature. Every caveat gives the token a new
id, so a derived token can be revoked alone, and revoking an id revokes every
token derived from it. A caveat that widens is rejected when the token is
parsed, whoever signed it.

The string form is ``lion1.<identifier>.<caveat>...<signature>``, each part
canonical unpadded base64url; any other spelling of the same bytes is refused,
so one token has exactly one string. The string is a bearer credential: it is
never shown by ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lion_nb.clock import SYSTEM_CLOCK, Clock
from lion_nb.errors import CapabilityError, TokenError
from lion_nb.security.capability import Capability, ConstraintValue

if TYPE_CHECKING:  # pragma: no cover - the authority imports this module, not the reverse
    from lion_nb.security.authority import Authority

__all__ = ["Token", "PREFIX", "key_id", "check_signature", "bind_tag", "new_token_id"]

PREFIX = "lion1"
"""Format tag of the string form; a future format gets a new one."""

_MAX_LEN = 16_384
_MAX_CAVEATS = 32
_SIG_LEN = 32
_B64_RE = re.compile(r"[A-Za-z0-9_-]+\Z")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_IDENT_KEYS = {"id", "kid", "r", "a", "s", "c", "iat", "exp", "h"}
_CAVEAT_KEYS = {"id", "a", "s", "c", "exp"}
_BIND_KEYS = {"id", "inst", "tag"}


def new_token_id() -> str:
    """A fresh random token id (96 bits, URL-safe)."""
    return secrets.token_urlsafe(12)


def key_id(key: bytes) -> str:
    """A short public fingerprint of ``key``, stored in tokens for clear errors."""
    return hashlib.sha256(b"lion-kid\x00" + key).hexdigest()[:12]


def bind_tag(key: bytes, prev_signature: bytes, instance_id: str) -> bytes:
    """The authority's mark on an instance binding; only the key can make it."""
    return hmac.digest(key, b"lion-bind\x00" + prev_signature + instance_id.encode(), "sha256")


def _sign(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


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
    except (ValueError, UnicodeDecodeError):
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
    return float(value)


def _token_id(obj: Mapping[str, Any], what: str) -> str:
    tid = obj.get("id")
    if not isinstance(tid, str) or not _ID_RE.match(tid):
        raise TokenError(f"token {what} has no valid id")
    return tid


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
    _parts: tuple[bytes, ...] = field(repr=False)
    _caveats: tuple[dict[str, Any], ...] = field(repr=False)
    _signature: bytes = field(repr=False)
    _authority: "Authority | None" = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)  # serialize() cache

    # --- construction -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> "Token":
        """Rebuild a token from ``serialize()``'s string; TokenError if malformed.

        Parsing checks structure only; ``Authority.verify`` checks the signature.
        """
        return cls._parse(text, None)

    @classmethod
    def _parse(cls, text: str, authority: "Authority | None") -> "Token":
        if not isinstance(text, str):
            raise TokenError(f"token must be a string, not {type(text).__name__}")
        if len(text) > _MAX_LEN:
            raise TokenError(f"token string is longer than {_MAX_LEN} characters")
        if not text.isascii():
            raise TokenError("token string contains non-ASCII characters")
        pieces = text.split(".")
        if pieces[0] != PREFIX:
            raise TokenError(f"not a lion_nb token (expected the {PREFIX!r} prefix)")
        if len(pieces) < 3:
            raise TokenError("token string is truncated")
        if len(pieces) - 3 > _MAX_CAVEATS:
            raise TokenError(f"token has more than {_MAX_CAVEATS} caveats")
        parts = tuple(_b64d(p, f"part {i}") for i, p in enumerate(pieces[1:-1], 1))
        signature = _b64d(pieces[-1], "signature")
        return cls._from_parts(parts, signature, authority)

    @classmethod
    def _from_parts(cls, parts: tuple[bytes, ...], signature: bytes,
                    authority: "Authority | None" = None) -> "Token":
        if len(signature) != _SIG_LEN:
            raise TokenError("token signature has the wrong length (truncated?)")
        ident = _load(parts[0], "identifier")
        if not set(ident) <= _IDENT_KEYS:
            extra = sorted(set(ident) - _IDENT_KEYS)
            raise TokenError(f"token identifier has unknown fields {extra}")
        root_id = _token_id(ident, "identifier")
        kid, holder = ident.get("kid"), ident.get("h")
        if not isinstance(kid, str) or (holder is not None and not isinstance(holder, str)):
            raise TokenError("token identifier has a malformed key id or holder")
        issued_at = _number(ident, "iat", "identifier")
        if issued_at is None:
            raise TokenError("token identifier has no issue time")
        expires_at = _number(ident, "exp", "identifier")
        actions = ident.get("a")
        if not isinstance(actions, list):
            raise TokenError("token identifier has no action list")
        try:
            cap = Capability(ident.get("r"), frozenset(actions),  # type: ignore[arg-type]
                             ident.get("s"), ident.get("c"))
        except (CapabilityError, TypeError) as exc:
            raise TokenError(f"token capability is invalid: {exc}") from None
        chain, instance, caveats = [root_id], None, []
        for n, raw in enumerate(parts[1:], 1):
            cav = _load(raw, f"caveat {n}")
            tid = _token_id(cav, f"caveat {n}")
            if tid in chain:
                raise TokenError(f"token caveat {n} repeats id {tid!r}")
            chain.append(tid)
            if "inst" in cav:
                instance = _binding(cav, n)
            else:
                cap, expires_at = _apply_caveat(cap, expires_at, cav, n)
            caveats.append(cav)
        return cls(chain[-1], tuple(chain), cap, issued_at, expires_at, holder, instance, kid,
                   parts, tuple(caveats), signature, authority)

    @classmethod
    def _mint(cls, key: bytes, ident: dict[str, Any], authority: "Authority") -> "Token":
        """Sign ``ident`` as a root token (authority use)."""
        raw = _canonical(ident)
        return cls._from_parts((raw,), _sign(key, raw), authority)

    def _extend(self, caveat: dict[str, Any]) -> "Token":
        """Append ``caveat`` (already checked by the caller) and chain the signature."""
        raw = _canonical(caveat)
        return Token._from_parts(self._parts + (raw,), _sign(self._signature, raw),
                                 self._authority)

    def _bind(self, key: bytes, instance_id: str) -> "Token":
        """Bind to ``instance_id`` with a tag only ``key`` can make (authority use)."""
        tag = _b64e(bind_tag(key, self._signature, instance_id))
        return self._extend({"id": new_token_id(), "inst": instance_id, "tag": tag})

    # --- attenuation --------------------------------------------------------

    def attenuate(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
                  expires_in: float | None = None,
                  constraints: Mapping[str, ConstraintValue] | None = None,
                  clock: Clock | None = None) -> "Token":
        """Return a narrower token; CapabilityError if any argument would widen it.

        Needs no key: whoever holds a token may restrict it before passing it on.
        """
        child = self._derive(actions=actions, scope=scope, expires_in=expires_in,
                             constraints=constraints, clock=clock)
        if self._authority is not None:
            self._authority._audit("attenuate", token=child, reason=f"from {self.token_id}")
        return child

    def _derive(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
                expires_in: float | None = None,
                constraints: Mapping[str, ConstraintValue] | None = None,
                clock: Clock | None = None) -> "Token":
        """Like :meth:`attenuate` without the audit record (callers audit in context)."""
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
            clock = clock or (self._authority.clock if self._authority else SYSTEM_CLOCK)
            exp = clock.time() + expires_in
            if self.expires_at is not None and exp > self.expires_at:
                raise CapabilityError(f"token {self.token_id} expires in less than "
                                      f"{expires_in}s; attenuation cannot extend it",
                                      capability=str(self.capability))
            caveat["exp"] = exp
        return self._extend(caveat)

    # --- string form --------------------------------------------------------

    def serialize(self) -> str:
        """The compact URL-safe string form (a bearer credential: keep it secret)."""
        if self._text is None:
            text = ".".join([PREFIX, *(_b64e(p) for p in self._parts), _b64e(self._signature)])
            object.__setattr__(self, "_text", text)  # a cache, not state: the token is frozen
        return self._text  # type: ignore[return-value]

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
        return self._parts == other._parts and hmac.compare_digest(self._signature,
                                                                   other._signature)

    def __hash__(self) -> int:
        return hash((self._parts, self._signature))

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
        # Pickles as its string (no authority reference), e.g. to a Dask worker,
        # where the worker's Authority verifies it again.
        return (Token.parse, (self.serialize(),))


def _apply_caveat(cap: Capability, expires_at: float | None, cav: Mapping[str, Any],
                  n: int) -> tuple[Capability, float | None]:
    if not set(cav) <= _CAVEAT_KEYS:
        raise TokenError(f"token caveat {n} has unknown fields {sorted(set(cav) - _CAVEAT_KEYS)}")
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
    # Re-binding (parent instance -> sub-workflow) is allowed: the last binding
    # wins, and each carries a tag only the authority's key can make.
    if set(cav) != _BIND_KEYS or not isinstance(cav["inst"], str) or not cav["inst"] \
            or not isinstance(cav["tag"], str):
        raise TokenError(f"token caveat {n} is a malformed instance binding")
    return cav["inst"]


def check_signature(token: Token, key: bytes) -> None:
    """Raise TokenError unless ``key`` made ``token``'s signature chain and bindings."""
    kid = key_id(key)
    if token.key_id != kid:
        raise TokenError(f"token {token.token_id} was signed by key {token.key_id}, "
                         f"not by this authority (key {kid})")
    sig = _sign(key, token._parts[0])
    for raw, cav in zip(token._parts[1:], token._caveats):
        if "inst" in cav:
            tag = _b64e(bind_tag(key, sig, cav["inst"]))
            if not hmac.compare_digest(tag.encode(), cav["tag"].encode("ascii", "replace")):
                raise TokenError(f"token {token.token_id}: instance binding "
                                 f"{cav['inst']!r} was not made by this authority")
        sig = _sign(sig, raw)
    if not hmac.compare_digest(sig, token._signature):
        raise TokenError(f"token {token.token_id} has a bad signature "
                         "(forged, altered or truncated)")
