"""GrantSet: the verified tokens one workflow instance holds, and the checks on them.

Deny by default: a requirement is allowed only if a live (unexpired,
unrevoked) token in the set covers it. A GrantSet belongs to one instance:
its tokens carry an instance binding made by the authority, so handing them
to another instance's grant is refused (the confused-deputy case)::

    grants = authority.grant([token], instance_id="inst-1")
    grants.check("db:write:orders/7", node="SaveOrder")   # None, or CapabilityDeniedError
    step = grants.attenuate(actions={"read"})              # for a saga step: only narrower
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from lion_nb.errors import CapabilityDeniedError, RequirementError, TokenError
from lion_nb.security.audit import AuditRecord
from lion_nb.security.capability import Capability, Requirement, _check_action
from lion_nb.security.scope import scope_covers, validate_scope
from lion_nb.security.token import Token

if TYPE_CHECKING:  # pragma: no cover - the authority imports this module
    from lion_nb.security.authority import Authority

__all__ = ["GrantSet"]

_MAX_HITS = 4096


_new_record = tuple.__new__  # builds an AuditRecord without the Python-level __new__ frame


class _Grant(NamedTuple):
    token: Token
    capability: Capability
    expires_at: float | None
    holder: str | None


class _Hit(NamedTuple):
    expires_at: float | None
    token_id: str
    text: str
    holder: str | None
    grant: _Grant


class GrantSet:
    """Tokens granted to one instance; made by ``Authority.grant``, not directly."""

    __slots__ = ("_authority", "_log", "_append", "_clock", "_time", "instance_id", "holder",
                 "_grants", "_lost", "_hits", "_epoch")

    def __init__(self, authority: "Authority", instance_id: str, tokens: Iterable[Token], *,
                 holder: str | None = None) -> None:
        self._authority = authority
        self._log = authority._log
        self._append = authority._log.append  # bound once: check() is on the dispatch path
        self._clock = authority.clock
        self._time = authority.clock.time
        self.instance_id = instance_id
        """The workflow instance these grants belong to."""
        self.holder = holder
        """Who they were granted for, if named."""
        tokens = tuple(tokens)
        for t in tokens:
            # Only tokens this authority made or verified carry it, so a GrantSet built
            # by hand around a parsed (unverified) or unbound token is refused.
            if not isinstance(t, Token) or t._authority is not authority \
                    or t.instance_id != instance_id:
                raise TokenError("a GrantSet holds only tokens that Authority.grant verified "
                                 f"and bound to {instance_id!r}; use authority.grant(...)")
        self._grants = tuple(_Grant(t, t.capability, t.expires_at, holder or t.holder)
                             for t in tokens)
        # token id -> the capability it held, once revoked: deny messages then say why.
        self._lost: dict[str, Capability] = {}
        # requirement (as passed) -> what an allowed check needs, flat for speed.
        self._hits: dict[object, _Hit] = {}
        self._epoch = authority._epoch

    # --- checks -------------------------------------------------------------

    def check(self, requirement: Requirement | str, *, node: str | None) -> None:
        """Return if a live granted token covers ``requirement``, else raise.

        Raises CapabilityDeniedError naming the node and the missing capability,
        or RequirementError if the requirement does not parse. Audited either way.
        """
        # The cached path of _check, inlined: this runs at every node dispatch.
        if self._epoch != self._authority._epoch:
            self._refresh()
        try:
            hit = self._hits.get(requirement)
        except TypeError:  # unhashable: the slow path says why it is not a requirement
            hit = None
        if hit is not None:
            now = self._time()
            if hit.expires_at is None or now < hit.expires_at:
                rec = _new_record(AuditRecord, (now, "check", "allow", hit.token_id, hit.text,
                                                node, self.instance_id, hit.holder, None))
                self._append(rec)
                if self._log.listeners:
                    self._log.notify(rec)
                return
        self._check_slow(requirement, node, self._time())

    def allows(self, requirement: Requirement | str, *, node: str | None = None) -> bool:
        """Like :meth:`check` but answers True or False (still audited)."""
        try:
            self._check(requirement, node)
        except CapabilityDeniedError:
            return False
        return True

    def capability_for(self, requirement: Requirement | str, *, node: str | None) -> Capability:
        """Check, then return the granted capability that covers it (to read constraints)."""
        return self._check(requirement, node).capability

    def _check(self, requirement: Requirement | str, node: str | None) -> _Grant:
        if self._epoch != self._authority._epoch:
            self._refresh()
        try:
            hit = self._hits.get(requirement)
        except TypeError:
            hit = None
        now = self._time()
        if hit is not None and (hit.expires_at is None or now < hit.expires_at):
            self._log.record(AuditRecord(now, "check", "allow", hit.token_id, hit.text,
                                         node, self.instance_id, hit.holder, None))
            return hit.grant
        return self._check_slow(requirement, node, now)

    def _check_slow(self, requirement: Requirement | str, node: str | None,
                    now: float) -> _Grant:
        try:
            req = Requirement.parse(requirement)
        except RequirementError as exc:
            self._deny(str(requirement), node, now, None, f"unparsable: {exc}")
            raise
        text = str(req)
        expired = None
        for grant in self._grants:
            if grant.capability.covers(req):
                if grant.expires_at is not None and now >= grant.expires_at:
                    expired = grant
                    continue
                if len(self._hits) >= _MAX_HITS:
                    self._hits.clear()  # resource_for may pass endless distinct scopes
                self._hits[requirement] = _Hit(grant.expires_at, grant.token.token_id, text,
                                               grant.holder, grant)
                self._log.record(AuditRecord(now, "check", "allow", grant.token.token_id, text,
                                             node, self.instance_id, grant.holder, None))
                return grant
        token_id, reason = self._why_not(req, expired)
        self._deny(text, node, now, token_id, reason)
        raise CapabilityDeniedError(
            f"node {node!r} of instance {self.instance_id!r} lacks capability {text!r}: {reason}",
            capability=text, node=node)

    def _why_not(self, req: Requirement, expired: _Grant | None) -> tuple[str | None, str]:
        """(token id, reason) for a denial: name the token that would have covered it."""
        if expired is not None:
            tid = expired.token.token_id
            return tid, f"token {tid} that covered it expired at {expired.expires_at}"
        for tid, cap in self._lost.items():
            if cap.covers(req):
                return tid, f"token {tid} ({cap}) that covered it was revoked"
        same = [str(g.capability) for g in self._grants if g.capability.resource == req.resource]
        if same:
            return None, f"the granted {', '.join(same)} do not cover it"
        return None, f"no token for resource {req.resource!r} was granted"

    def _deny(self, text: str, node: str | None, now: float, token_id: str | None,
              reason: str) -> None:
        self._log.record(AuditRecord(now, "check", "deny", token_id, text, node,
                                     self.instance_id, self.holder, reason))

    def _refresh(self) -> None:
        """Drop revoked tokens after the authority's revocation epoch moved."""
        epoch = self._authority._epoch
        keep = []
        for grant in self._grants:
            if self._authority.is_revoked(grant.token):
                self._lost[grant.token.token_id] = grant.capability
            else:
                keep.append(grant)
        self._grants = tuple(keep)
        self._hits = {}
        self._epoch = epoch

    # --- narrowing ----------------------------------------------------------

    def attenuate(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
                  expires_in: float | None = None, resources: Iterable[str] | None = None,
                  instance_id: str | None = None) -> "GrantSet":
        """A narrower GrantSet for a sub-workflow or saga step.

        Each token keeps only the given ``actions`` and ``resources``, the given
        ``scope`` where it lies inside the token's, and at most ``expires_in``
        seconds; a token with nothing left is dropped. ``instance_id`` re-binds
        the result to a child instance. Never wider than this set.
        """
        if self._epoch != self._authority._epoch:
            self._refresh()
        want = None
        if actions is not None:
            want = frozenset((actions,) if isinstance(actions, str) else actions)
            for action in want:
                _check_action(action, "GrantSet.attenuate")
        if scope is not None:
            validate_scope(scope)
        keep = None if resources is None else frozenset(
            (resources,) if isinstance(resources, str) else resources)
        now = self._clock.time()
        target = instance_id or self.instance_id
        out = []
        for grant in self._grants:
            token, cap = grant.token, grant.capability
            if grant.expires_at is not None and now >= grant.expires_at:
                continue
            if keep is not None and cap.resource not in keep:
                continue
            acts = cap.actions if want is None else cap.actions & want
            if not acts:
                continue
            new_scope = cap.scope
            if scope is not None:
                if scope_covers(cap.scope, scope):
                    new_scope = scope
                elif not scope_covers(scope, cap.scope):
                    continue  # the overlap is not expressible as one pattern: drop it
            ttl = expires_in
            if ttl is not None and grant.expires_at is not None and now + ttl >= grant.expires_at:
                ttl = None  # already expires sooner
            if acts != cap.actions or new_scope != cap.scope or ttl is not None:
                token = token._derive(actions=acts, scope=new_scope, expires_in=ttl,
                                      clock=self._clock)
                self._authority._audit("attenuate", token=token, instance_id=target,
                                       holder=self.holder, reason=f"from {grant.token.token_id}")
            if target != token.instance_id:
                parent = token
                token = self._authority._bind(token, target)
                self._authority._audit("grant", "allow", token=token, instance_id=target,
                                       holder=self.holder,
                                       reason=f"from {parent.token_id} of {self.instance_id}")
            out.append(token)
        return GrantSet(self._authority, target, out, holder=self.holder)

    # --- inspection ---------------------------------------------------------

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The granted (instance-bound) tokens still held, e.g. to ship to a worker."""
        if self._epoch != self._authority._epoch:
            self._refresh()
        return tuple(g.token for g in self._grants)

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        """What the held tokens permit (expired ones included until they are dropped)."""
        return tuple(g.capability for g in self._grants)

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens)

    def __repr__(self) -> str:
        caps = ", ".join(str(c) for c in self.capabilities) or "nothing"
        return f"<GrantSet instance={self.instance_id!r}: {caps}>"
