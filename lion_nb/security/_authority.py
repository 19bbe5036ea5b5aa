"""The Authority: holds the signing key, mints, verifies, revokes and grants.

::

    authority = Authority.generate()             # HMAC: one shared secret
    issuer = Authority.generate_ed25519()        # Ed25519: verifiers get only the public key
    verifier = Authority.from_public_key(issuer.public_key)
    token = authority.mint(Capability("db", {"read", "write"}, "orders/*"), expires_in=3600)
    grants = authority.grant([token], instance_id="inst-1")
    grants.check("db:write:orders/7", node="SaveOrder")     # or CapabilityDeniedError

Verified tokens are cached by their string, so a token checked again costs a
dictionary lookup; expiry and revocation are still applied on every use
(revocation bumps an epoch that invalidates what the caches remember).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from lion_nb.clock import SYSTEM_CLOCK, Clock
from lion_nb.errors import (
    CapabilityDeniedError, CapabilityError, SecurityError, TokenError, TokenExpiredError,
    TokenRevokedError,
)
from lion_nb.security._audit import AuditListener, AuditLog, AuditRecord, clip
from lion_nb.security._capability import Capability, register_action
from lion_nb.security._grants import GrantSet
from lion_nb.security._keys import Ed25519Key, HmacKey, SigningKey
from lion_nb.security._pending import PendingBinding
from lion_nb.security._token import Token, new_token_id, verify_token

__all__ = ["Authority"]

_SIGNED = b"lion-signed\x00"
_SEAL_TAG = b"lion-sealed1 "


class Authority:
    """Signs and checks capability tokens and keeps the audit trail.

    ``key`` is an HMAC secret (at least 16 bytes; :meth:`generate` makes 32
    random ones) or a signing key object (:meth:`generate_ed25519`,
    :meth:`from_public_key`). ``actions`` extends the action vocabulary,
    ``audit_limit`` bounds the records kept in memory (listeners see all),
    ``cache_size`` the verified tokens remembered. Its ``repr`` never shows
    the key.
    """

    def __init__(self, key: bytes | SigningKey, *, clock: Clock = SYSTEM_CLOCK,
                 actions: Iterable[str] = (), audit_limit: int | None = 100_000,
                 cache_size: int = 10_000) -> None:
        self._key = key if isinstance(key, SigningKey) else HmacKey(key)
        self.key_id = self._key.key_id
        """Public fingerprint of the key, also written into every token."""
        self.clock = clock
        """Where expiry stamps and audit times come from."""
        for action in actions:
            register_action(action)
        self._log = AuditLog(audit_limit)
        # Grant sets whose dispatch gates remember decisions without testing the epoch
        # or the listeners per dispatch: told at once when either changes (held weakly).
        self._watchers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._log.on_change = self._forget_decisions
        self._revoked: set[str] = set()
        self.revocation_epoch = 0
        """A counter every revocation bumps (holders of verified tokens compare it).

        A plain attribute, not a property: every node dispatch reads it. Read it,
        never write it.
        """
        self._hook = self._attenuated  # one bound method, held by every token made here
        self._cache: dict[str, list[Any]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()  # plain handlers call checks from worker threads

    @classmethod
    def generate(cls, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> "Authority":
        """A new authority with a fresh 32-byte HMAC key from :mod:`secrets`."""
        return cls(secrets.token_bytes(32), clock=clock, **options)

    @classmethod
    def generate_ed25519(cls, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> "Authority":
        """A new authority with a fresh Ed25519 private key (tokens are ``lion2``)."""
        return cls(Ed25519Key.generate(), clock=clock, **options)

    @classmethod
    def from_ed25519_private_key(cls, private: bytes, **options: Any) -> "Authority":
        """An issuing authority from a raw 32-byte Ed25519 private key."""
        return cls(Ed25519Key(private=private), **options)

    @classmethod
    def from_public_key(cls, public: bytes, **options: Any) -> "Authority":
        """A verify-only authority: checks ``lion2`` tokens, cannot mint, bind or sign."""
        return cls(Ed25519Key(public=public), **options)

    @property
    def public_key(self) -> bytes | None:
        """The raw Ed25519 public key to give verifiers (None for an HMAC authority)."""
        return self._key.public_bytes if isinstance(self._key, Ed25519Key) else None

    @property
    def can_mint(self) -> bool:
        """False for a verify-only (public-key) authority."""
        return self._key.can_sign

    @property
    def audit_log(self) -> AuditLog:
        """The audit trail (records and listeners)."""
        return self._log

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
        block, proof = self._key.sign_root(_canonical(ident))
        text = ".".join((self._key.prefix, _b64(block), _b64(proof)))
        token = verify_token(text, self._key, clock=self.clock, on_attenuate=self._hook)
        self._remember(text, token)
        self._audit("mint", token=token)
        return token

    def verify(self, token: Token | str, *, instance_id: str | None = None,
               run_id: str | None = None) -> Token:
        """Return the verified token, or raise TokenError / TokenExpiredError / TokenRevokedError.

        Signatures are checked on the raw bytes before anything is parsed. With
        ``instance_id`` (and ``run_id``), a token bound to another instance (or
        run) is refused too. Every refusal is audited, quoting at most a clipped
        prefix of what was presented.
        """
        tok: Token | None = None
        text = ""
        try:
            if isinstance(token, Token):
                text = token.serialize()
            elif isinstance(token, str):
                text = token
            else:
                raise TokenError(f"expected a Token or its string, not {type(token).__name__}")
            entry = self._cache.get(text)
            if entry is None:
                tok = verify_token(text, self._key, clock=self.clock, on_attenuate=self._hook)
                entry = self._remember(text, tok)
            tok = entry[0]
            if entry[1] != self.revocation_epoch:
                epoch = self.revocation_epoch  # read first: a racing revocation rechecks
                self._raise_if_revoked(tok)
                entry[1] = epoch
            if tok.expires_at is not None and self.clock.time() >= tok.expires_at:
                raise TokenExpiredError(f"token {tok.token_id} expired at {tok.expires_at}",
                                        token_id=tok.token_id)
            if instance_id is not None and tok.instance_id not in (None, instance_id):
                raise TokenError(f"token {tok.token_id} is bound to instance "
                                 f"{clip(tok.instance_id, 60)!r}, not "
                                 f"{clip(instance_id, 60)!r}", token_id=tok.token_id)
            if run_id is not None and tok.instance_id is not None and tok.run_id != run_id:
                raise TokenError(f"token {tok.token_id} is bound to another run of instance "
                                 f"{clip(tok.instance_id, 60)!r}", token_id=tok.token_id)
        except TokenError as exc:
            # Quote what was presented only when it did not even parse (a short,
            # clipped prefix): the text of a real token is a credential.
            reason = str(exc) if tok is not None else f"{exc}; presented {clip(text, 40)!r}"
            self._audit("verify", "deny", token=tok, instance_id=instance_id, reason=reason)
            raise
        return tok

    def revoke(self, token_id: str | Token) -> None:
        """Revoke a token and everything derived from it, for every later check."""
        tid = token_id.token_id if isinstance(token_id, Token) else token_id
        if not isinstance(tid, str) or not tid or len(tid) > 64:
            raise TokenError(f"revoke needs a token id, not {repr(token_id)[:60]}",
                             token_id=tid)
        with self._lock:
            self._revoked.add(tid)
            self.revocation_epoch += 1
        self._forget_decisions()  # before it returns: the next dispatch is checked afresh
        self._audit("revoke", token_id=tid)

    def watch(self, grants: GrantSet) -> None:
        """Call ``grants.forget()`` at every revocation and audit-listener change (weakly)."""
        with self._lock:
            self._watchers.add(grants)

    def _forget_decisions(self) -> None:
        with self._lock:  # a copy: grant sets come and go in other threads
            watchers = list(self._watchers)
        for grants in watchers:
            grants.forget()

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
              holder: str | None = None, run_id: str | None = None) -> GrantSet:
        """Verify ``tokens`` and bind them to one workflow instance as a GrantSet.

        All or nothing: an invalid token, one bound to another instance, or one
        minted for another holder raises and grants nothing. ``run_id`` (the
        executor's nonce for this run) binds them to this run of the instance
        only, so a later workflow reusing the instance id cannot use them.
        """
        if not isinstance(instance_id, str) or not instance_id:
            raise TokenError(f"instance_id must be a non-empty string, not "
                             f"{repr(instance_id)[:60]}", instance_id=instance_id)
        if isinstance(tokens, (str, Token)):
            tokens = (tokens,)
        checked = [self._grantable(t, instance_id, holder, run_id) for t in tokens]
        bound: list[Token | PendingBinding] = []
        for tok in checked:
            if tok.instance_id == instance_id and run_id in (None, tok.run_id):
                self._audit("grant", "allow", token=tok, instance_id=instance_id, holder=holder)
                bound.append(tok)
            elif self._key.can_sign:
                # Signed on first use: nothing in this process reads the bound token, and
                # a run that never hands a token out never pays for the MACs (see
                # PendingBinding). What would refuse the binding refuses it now.
                tok.check_binding(instance_id, run_id)
                pending = PendingBinding(tok, instance_id, run_id, holder or tok.holder)
                self._audit("grant", "allow", token_id=pending.token_id,
                            capability=str(tok.capability), instance_id=instance_id,
                            holder=pending.holder, reason=f"from {tok.token_id}")
                bound.append(pending)
            else:
                bound.append(self.bind(tok, instance_id, holder=holder, run_id=run_id,
                                       reason=f"from {tok.token_id}"))  # verify-only: raises
        return GrantSet(self, instance_id, bound, holder=holder)

    def sign_binding(self, token: Token, instance_id: str, run_id: str | None,
                     token_id: str) -> Token:
        """Sign the binding :meth:`grant` announced (and audited) as ``token_id``.

        Not audited again: the grant was. Like :meth:`bind`, it signs what it is
        given; verifiers check the result. SecurityError on a verify-only authority.
        """
        child = token.bind(instance_id, self._key.mark, run_id=run_id, token_id=token_id)
        self._remember(child.serialize(), child)  # made here: no need to verify it again
        return child

    def _grantable(self, token: Token | str, instance_id: str, holder: str | None,
                   run_id: str | None) -> Token:
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
        elif tok.run_id is not None and tok.instance_id == instance_id \
                and run_id is not None and tok.run_id != run_id:
            problem = (f"token {tok.token_id} was granted to another run of instance "
                       f"{clip(instance_id, 60)!r}; a new run needs its own grants")
        elif holder is not None and tok.holder not in (None, holder):
            problem = f"token {tok.token_id} was minted for {tok.holder!r}, not {holder!r}"
        if problem:
            self._audit("grant", "deny", token=tok, instance_id=instance_id, holder=holder,
                        reason=problem)
            raise CapabilityDeniedError(problem, capability=str(tok.capability), node=None)
        return tok

    def bind(self, token: Token, instance_id: str, *, holder: str | None = None,
             run_id: str | None = None, reason: str | None = None) -> Token:
        """``token`` bound to ``instance_id`` (a child of its current instance, if bound).

        The binding carries a mark only this authority's key can make; audited
        as a grant. SecurityError on a verify-only authority.
        """
        child = token.bind(instance_id, self._key.mark, run_id=run_id)
        self._remember(child.serialize(), child)  # made here: no need to verify it again
        self._audit("grant", "allow", token=child, instance_id=instance_id, holder=holder,
                    reason=reason)
        return child

    # --- signed payloads ----------------------------------------------------

    def sign(self, data: bytes, *, purpose: str) -> bytes:
        """A signature over ``data`` for ``purpose`` (a task payload, a stored definition).

        HMAC under the secret, or the Ed25519 root key's signature, so a
        verify-only authority can check it. ``purpose`` keeps a signature made
        for one use from being accepted for another.
        """
        return self._key.mark(_SIGNED + purpose.encode() + b"\x00" + bytes(data))

    def check_signature(self, data: bytes, signature: bytes, *, purpose: str) -> bool:
        """True if ``signature`` is this authority's :meth:`sign` of ``data`` for ``purpose``."""
        if not isinstance(signature, (bytes, bytearray)):
            return False
        return self._key.check_mark(_SIGNED + purpose.encode() + b"\x00" + bytes(data),
                                    bytes(signature))

    def seal(self, data: bytes, *, purpose: str) -> bytes:
        """``data`` with this authority's signature line in front (files, stored records).

        :meth:`unseal` checks the signature over the raw bytes before anyone
        parses them.
        """
        sig = self.sign(data, purpose=purpose)
        return b"".join((_SEAL_TAG, self.key_id.encode(), b" ", _b64(sig).encode(), b"\n",
                         bytes(data)))

    def unseal(self, blob: bytes, *, purpose: str) -> bytes:
        """The data of a :meth:`seal`ed blob; SecurityError (``.purpose``) if it does not verify."""
        head, sep, data = bytes(blob).partition(b"\n")
        fields = head[len(_SEAL_TAG):].split(b" ") if head.startswith(_SEAL_TAG) else []
        if not sep or len(head) > 256 or len(fields) != 2:
            raise SecurityError(f"{purpose}: not signed (expected a '{_SEAL_TAG.decode()}' "
                                "line first)", purpose=purpose)
        try:
            sig = base64.urlsafe_b64decode(fields[1] + b"=" * (-len(fields[1]) % 4))
        except ValueError:
            sig = b""
        if not self.check_signature(data, sig, purpose=purpose):
            raise SecurityError(f"{purpose}: the signature does not verify (altered, or signed "
                                f"by key {fields[0][:16].decode(errors='replace')!r}, not "
                                f"{self.key_id!r})", purpose=purpose)
        return data

    def _attenuated(self, child: Token, parent: Token) -> None:
        self._audit("attenuate", token=child, reason=f"from {parent.token_id}")

    # --- audit --------------------------------------------------------------

    def audit(self) -> list[AuditRecord]:
        """Every kept audit record, oldest first."""
        return self._log.records()

    def add_listener(self, callback: AuditListener, *, allowed_checks: bool = True) -> Any:
        """Call ``callback(record)`` synchronously for each new record; returns a remover.

        ``allowed_checks=False`` skips allowed checks (still kept in the log).
        """
        return self._log.add_listener(callback, allowed_checks=allowed_checks)

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
        self._log.record(AuditRecord(self.clock.time(), action, decision, token_id,
                                     clip(capability), clip(node), clip(instance_id),
                                     clip(holder), clip(reason, 400)))

    def __repr__(self) -> str:
        kind = self._key.prefix + ("" if self._key.can_sign else " verify-only")
        return f"<Authority {kind} key_id={self.key_id} revoked={len(self._revoked)}>"

    def __reduce__(self) -> Any:
        # Never pickle the key by accident (e.g. inside a closure sent to Dask).
        raise TypeError("an Authority holds a secret key and is not picklable; "
                        "build one from the key where it is needed")


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
