"""The Authority: holds the signing key, mints, verifies, revokes and grants.

::

    authority = Authority.generate()
    token = authority.mint(Capability("db", {"read", "write"}, "orders/*"), expires_in=3600)
    grants = authority.grant([token], instance_id="inst-1")
    grants.check("db:write:orders/7", node="SaveOrder")     # or CapabilityDeniedError

Verified tokens are cached by their string, so a token checked again costs a
dictionary lookup; expiry and revocation are still applied on every use
(revocation bumps an epoch that invalidates what the caches remember).
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Iterable
from typing import Any

from lion_nb.clock import SYSTEM_CLOCK, Clock
from lion_nb.errors import (
    CapabilityDeniedError, CapabilityError, SecurityError, TokenError, TokenExpiredError,
    TokenRevokedError,
)
from lion_nb.security.audit import AuditListener, AuditLog, AuditRecord
from lion_nb.security.capability import Capability, register_action
from lion_nb.security.grants import GrantSet
from lion_nb.security.token import Token, check_signature, key_id, new_token_id

__all__ = ["Authority"]

_MIN_KEY = 16


class Authority:
    """Signs and checks capability tokens and keeps the audit trail.

    ``key`` is the secret (at least 16 bytes; :meth:`generate` makes 32 random
    ones). ``actions`` extends the action vocabulary, ``audit_limit`` bounds the
    records kept in memory (listeners see all), ``cache_size`` the verified
    tokens remembered. Its ``repr`` never shows the key.
    """

    def __init__(self, key: bytes, *, clock: Clock = SYSTEM_CLOCK, actions: Iterable[str] = (),
                 audit_limit: int | None = 100_000, cache_size: int = 10_000) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY:
            raise SecurityError(f"an authority key must be at least {_MIN_KEY} bytes "
                                "(use Authority.generate())")
        self._key = bytes(key)
        self.key_id = key_id(self._key)
        """Public fingerprint of the key, also written into every token."""
        self.clock = clock
        """Where expiry stamps and audit times come from."""
        for action in actions:
            register_action(action)
        self._log = AuditLog(audit_limit)
        self._revoked: set[str] = set()
        # Bumped by every revocation; caches compare it to know they may be stale.
        self._epoch = 0
        self._cache: dict[str, list[Any]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()  # plain handlers call checks from worker threads

    @classmethod
    def generate(cls, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> "Authority":
        """A new authority with a fresh 32-byte key from :mod:`secrets`."""
        return cls(secrets.token_bytes(32), clock=clock, **options)

    def register_action(self, name: str) -> str:
        """Add an action to the (process-wide) vocabulary and return it."""
        return register_action(name)

    # --- tokens -------------------------------------------------------------

    def mint(self, capability: Capability | str, *, expires_in: float | None = None,
             holder: str | None = None) -> Token:
        """Sign a new root token for ``capability`` (a Capability or ``"db:read,write:x/*"``)."""
        cap = Capability.parse(capability) if isinstance(capability, str) else capability
        if not isinstance(cap, Capability):
            raise CapabilityError(f"mint needs a Capability, not {capability!r}",
                                  capability=repr(capability))
        if holder is not None and (not isinstance(holder, str) or not holder):
            raise CapabilityError(f"holder must be a non-empty string, not {holder!r}",
                                  capability=str(cap))
        now = self.clock.time()
        ident: dict[str, Any] = {"id": new_token_id(), "kid": self.key_id, "r": cap.resource,
                                 "a": sorted(cap.actions), "s": cap.scope, "iat": now}
        if cap.constraints:
            ident["c"] = dict(cap.constraints)
        if expires_in is not None:
            if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                    or not 0 < expires_in < math.inf:
                raise CapabilityError(f"expires_in must be a positive number of seconds, "
                                      f"not {expires_in!r}", capability=str(cap))
            ident["exp"] = now + expires_in
        if holder is not None:
            ident["h"] = holder
        token = Token._mint(self._key, ident, self)
        self._audit("mint", token=token)
        return token

    def verify(self, token: Token | str, *, instance_id: str | None = None) -> Token:
        """Return the verified token, or raise TokenError / TokenExpiredError / TokenRevokedError.

        With ``instance_id``, a token bound to another instance is refused too.
        """
        tok: Token | None = None
        try:
            if isinstance(token, Token):
                text = token.serialize()
            elif isinstance(token, str):
                text = token
            else:
                raise TokenError(f"expected a Token or its string, not {type(token).__name__}")
            entry = self._cache.get(text)
            if entry is None:
                tok = Token._parse(text, self)
                check_signature(tok, self._key)
                entry = self._remember(text, tok)
            tok = entry[0]
            if entry[1] != self._epoch:
                epoch = self._epoch  # read first: a revocation racing us forces a recheck
                self._raise_if_revoked(tok)
                entry[1] = epoch
            if tok.expires_at is not None and self.clock.time() >= tok.expires_at:
                raise TokenExpiredError(f"token {tok.token_id} expired at {tok.expires_at}",
                                        token_id=tok.token_id)
            if instance_id is not None and tok.instance_id not in (None, instance_id):
                raise TokenError(f"token {tok.token_id} is bound to instance "
                                 f"{tok.instance_id!r}, not {instance_id!r}")
        except TokenError as exc:
            self._audit("verify", "deny", token=tok, instance_id=instance_id, reason=str(exc))
            raise
        return tok

    def revoke(self, token_id: str | Token) -> None:
        """Revoke a token and everything derived from it, for every later check."""
        tid = token_id.token_id if isinstance(token_id, Token) else token_id
        if not isinstance(tid, str) or not tid:
            raise TokenError(f"revoke needs a token id, not {token_id!r}")
        with self._lock:
            self._revoked.add(tid)
            self._epoch += 1
        self._audit("revoke", token_id=tid)

    def is_revoked(self, token: str | Token) -> bool:
        """True if ``token`` (an id or a Token, checking its whole chain) is revoked."""
        if isinstance(token, Token):
            return any(tid in self._revoked for tid in token.chain)
        return token in self._revoked

    def _raise_if_revoked(self, tok: Token) -> None:
        for tid in tok.chain:
            if tid in self._revoked:
                which = "" if tid == tok.token_id else f" (its ancestor {tid} was revoked)"
                raise TokenRevokedError(f"token {tok.token_id} is revoked{which}",
                                        token_id=tok.token_id)

    def _remember(self, text: str, tok: Token) -> list[Any]:
        entry: list[Any] = [tok, -1]  # epoch -1: revocation not yet checked
        with self._lock:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first (dicts keep order)
            self._cache[text] = entry
        return entry

    # --- grants -------------------------------------------------------------

    def grant(self, tokens: Iterable[Token | str] | Token | str, *, instance_id: str,
              holder: str | None = None) -> GrantSet:
        """Verify ``tokens`` and bind them to one workflow instance as a GrantSet.

        All or nothing: an invalid token, one bound to another instance, or one
        minted for another holder raises and grants nothing.
        """
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError(f"instance_id must be a non-empty string, not {instance_id!r}")
        if isinstance(tokens, (str, Token)):
            tokens = (tokens,)
        checked = [self._grantable(t, instance_id, holder) for t in tokens]
        bound = []
        for tok in checked:
            if tok.instance_id == instance_id:
                child, reason = tok, None
            else:
                child, reason = tok._bind(self._key, instance_id), f"from {tok.token_id}"
            self._audit("grant", "allow", token=child, instance_id=instance_id,
                        holder=holder, reason=reason)
            bound.append(child)
        return GrantSet(self, instance_id, bound, holder=holder)

    def _grantable(self, token: Token | str, instance_id: str, holder: str | None) -> Token:
        try:
            tok = self.verify(token)
        except TokenError as exc:
            self._audit("grant", "deny", instance_id=instance_id, holder=holder,
                        reason=f"invalid token: {exc}")
            raise
        problem = None
        if tok.instance_id not in (None, instance_id):
            problem = (f"token {tok.token_id} is bound to instance {tok.instance_id!r}; "
                       f"it cannot be granted to {instance_id!r}")
        elif holder is not None and tok.holder not in (None, holder):
            problem = f"token {tok.token_id} was minted for {tok.holder!r}, not {holder!r}"
        if problem:
            self._audit("grant", "deny", token=tok, instance_id=instance_id, holder=holder,
                        reason=problem)
            raise CapabilityDeniedError(problem, capability=str(tok.capability), node=None)
        return tok

    def _bind(self, token: Token, instance_id: str) -> Token:
        """Re-bind a verified token to ``instance_id`` (sub-workflows)."""
        return token._bind(self._key, instance_id)

    # --- audit --------------------------------------------------------------

    def audit(self) -> list[AuditRecord]:
        """Every kept audit record, oldest first."""
        return self._log.records()

    def add_listener(self, callback: AuditListener) -> Any:
        """Call ``callback(record)`` synchronously for each new record; returns a remover."""
        return self._log.add_listener(callback)

    def remove_listener(self, callback: AuditListener) -> None:
        """Stop calling ``callback``."""
        self._log.remove_listener(callback)

    def _audit(self, action: str, decision: str | None = None, *, token: Token | None = None,
               token_id: str | None = None, capability: str | None = None,
               node: str | None = None, instance_id: str | None = None,
               holder: str | None = None, reason: str | None = None) -> None:
        if token is not None:
            token_id = token.token_id
            capability = capability or str(token.capability)
            holder = holder or token.holder
            instance_id = instance_id or token.instance_id
        self._log.record(AuditRecord(self.clock.time(), action, decision, token_id, capability,
                                     node, instance_id, holder, reason))

    def __repr__(self) -> str:
        return f"<Authority key_id={self.key_id} revoked={len(self._revoked)}>"

    def __reduce__(self) -> Any:
        # Never pickle the key by accident (e.g. inside a closure sent to Dask).
        raise TypeError("an Authority holds a secret key and is not picklable; "
                        "build one from the key where it is needed")
