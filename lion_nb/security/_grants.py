"""GrantSet: the verified tokens one workflow instance holds, and the checks on them.

Deny by default: a requirement is allowed only if a live (unexpired,
unrevoked) token in the set covers it. A GrantSet belongs to one instance:
its tokens carry an instance binding made by the authority, so handing them
to another instance's grant is refused (the confused-deputy case)::

    grants = authority.grant([token], instance_id="inst-1")
    grants.check("db:write:orders/7", node="SaveOrder")   # None, or CapabilityDeniedError
    step = grants.narrow(["db:read:orders/7"], expires_in=60)   # exactly what a step needs

A GrantSet works against a :class:`GrantIssuer` (what ``Authority`` offers),
never against the authority's internals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, Protocol

from lion_nb.clock import Clock
from lion_nb.errors import CapabilityDeniedError, RequirementError, SecurityError, TokenError
from lion_nb.security._audit import (
    AuditLog, AuditRecord, Template, clip, expand, template, templates,
)
from lion_nb.security._capability import Capability, Requirement, check_action
from lion_nb.security._pending import PendingBinding
from lion_nb.security._scope import scope_covers, validate_scope
from lion_nb.security._token import Token, is_descendant

__all__ = ["GrantIssuer", "GrantSet"]

_MAX_HITS = 4096


_new_record = tuple.__new__  # builds an AuditRecord without the Python-level __new__ frame


class GrantIssuer(Protocol):
    """What a GrantSet needs from the authority that verified its tokens."""

    @property
    def clock(self) -> Clock:
        """Where check times come from."""
        ...

    @property
    def audit_log(self) -> AuditLog:
        """Where decisions are recorded."""
        ...

    @property
    def revocation_epoch(self) -> int:
        """A counter every revocation bumps, so holders know to drop revoked tokens."""
        ...

    def verify(self, token: Token | str, *, instance_id: str | None = None) -> Token:
        """The verified token, or TokenError."""
        ...

    def is_revoked(self, token: str | Token) -> bool:
        """True if the token or one of its ancestors is revoked."""
        ...

    def bind(self, token: Token, instance_id: str, *, holder: str | None = None,
             reason: str | None = None) -> Token:
        """``token`` bound to ``instance_id`` (audited as a grant)."""
        ...

    def watch(self, grants: "GrantSet") -> None:
        """Call ``grants.forget()`` at every revocation and audit-listener change."""
        ...

    def sign_binding(self, token: Token, instance_id: str, run_id: str | None,
                     token_id: str) -> Token:
        """Sign a binding announced by ``grant`` as ``token_id`` (see PendingBinding)."""
        ...


class _Grant(NamedTuple):
    token: Token | PendingBinding  # a binding made by Authority.grant is signed on first use
    capability: Capability
    expires_at: float | None
    holder: str | None


class _Hit(NamedTuple):
    expires_at: float | None
    token_id: str
    text: str
    holder: str | None
    grant: _Grant
    allowed: Template  # the allow record, without time and node (AuditLog.keep_allowed)


class GrantSet:
    """Tokens granted to one instance; made by ``Authority.grant``, not directly."""

    __slots__ = ("_issuer", "_log", "_append", "_keep", "_clock", "_time", "instance_id",
                 "holder", "_grants", "_lost", "_hits", "_nodes", "_narrowed", "_epoch",
                 "_fast", "_forgotten", "__weakref__")

    def __init__(self, issuer: GrantIssuer, instance_id: str,
                 tokens: Iterable[Token | PendingBinding], *,
                 holder: str | None = None) -> None:
        self._issuer = issuer
        self._log = issuer.audit_log
        self._append = self._log.append  # bound once: check() is on the dispatch path
        self._keep = self._log.keep_allowed
        self._clock = issuer.clock
        self._time = issuer.clock.time
        self.instance_id = instance_id
        """The workflow instance these grants belong to."""
        self.holder = holder
        """Who they were granted for, if named."""
        self._epoch = issuer.revocation_epoch  # read first: a racing revocation rechecks
        verified: list[Token | PendingBinding] = []
        for t in tokens:
            if isinstance(t, PendingBinding):
                # The token being bound is verified here, and this set's issuer signs the
                # binding when it is first needed (_token_of): neither can be forged by hand.
                root = issuer.verify(t.root, instance_id=t.root.instance_id)
                if (root.token_id, root.capability, root.expires_at, root.chain) != (
                        t.root.token_id, t.root.capability, t.root.expires_at, t.root.chain):
                    raise TokenError("a binding's token does not match its signed text",
                                     token_id=t.token_id)
                if t.instance_id != instance_id:
                    raise TokenError("a GrantSet holds only tokens bound to "
                                     f"{clip(instance_id, 60)!r}; use authority.grant(...)",
                                     token_id=t.token_id)
                verified.append(t)
                continue
            # Verified again here (a cache hit for what Authority.grant made), so a
            # GrantSet built by hand holds neither forged, unbound nor revoked tokens.
            tok = issuer.verify(t, instance_id=instance_id)
            if tok.instance_id != instance_id:
                raise TokenError("a GrantSet holds only tokens bound to "
                                 f"{clip(instance_id, 60)!r}; use authority.grant(...)",
                                 token_id=tok.token_id)
            verified.append(tok)
        self._grants = tuple(_Grant(t, t.capability, t.expires_at, holder or t.holder)
                             for t in verified)
        # token id -> the capability it held, once revoked: deny messages then say why.
        self._lost: dict[str, Capability] = {}
        # requirement (as passed) -> what an allowed check needs, flat for speed.
        self._hits: dict[object, _Hit] = {}
        # requirements of one node -> (earliest expiry or inf, allow template(s)): the
        # dispatch check's one lookup. These dicts are cleared, never replaced: gate()
        # closures hold them.
        self._nodes: dict[object, tuple[float, Template | tuple[Template, ...]]] = {}
        # narrow()'s results, reused while fresh: narrowing costs a MAC per token.
        self._narrowed: dict[object, tuple[float, GrantSet]] = {}
        # The gates' remembered decisions, same shape as _nodes, kept only while no
        # listener wants allowed checks; the issuer empties it at once on any revocation
        # or listener change (forget), so a gate tests neither per dispatch.
        self._fast: dict[object, tuple[float, Template | tuple[Template, ...]]] = {}
        self._forgotten = 0  # bumped by forget(): a decision taken across it is not kept
        issuer.watch(self)

    # --- checks -------------------------------------------------------------

    def check(self, requirement: Requirement | str, *, node: str | None) -> None:
        """Return if a live granted token covers ``requirement``, else raise.

        Raises CapabilityDeniedError naming the node and the missing capability,
        or RequirementError if the requirement does not parse. Audited either way.
        """
        # The cached path of _check, inlined: this runs at every node dispatch.
        if self._epoch != self._issuer.revocation_epoch:
            self._refresh()
        try:
            hit = self._hits.get(requirement)
        except TypeError:  # unhashable: the slow path says why it is not a requirement
            hit = None
        now = self._time()
        if hit is None or (hit.expires_at is not None and now >= hit.expires_at):
            hit = self._hit_slow(requirement, node, now)
        rec = _new_record(AuditRecord, (now, "check", "allow", hit.token_id, hit.text,
                                        node, self.instance_id, hit.holder, None))
        self._append(rec)
        if self._log.check_listeners:
            self._log.notify(rec, self._log.check_listeners)

    def check_all(self, requirements: tuple[Requirement | str, ...], *, node: str | None,
                  forward: Callable[[AuditRecord], None] | None = None) -> None:
        """Check every requirement of one node dispatch, or raise.

        All or nothing, like :meth:`check` for each (a denial is audited and
        raised, and then no allow is recorded). Once a tuple of requirements
        passed, checking it again is one dict lookup and one expiry compare
        until a token involved expires or anything is revoked. ``forward``
        receives each allow record too: a caller passing them on (the
        executor's observe stream) then needs no audit listener on this path.
        """
        if self._epoch != self._issuer.revocation_epoch:
            self._refresh()
        now = self._time()
        try:
            entry = self._nodes.get(requirements)
        except TypeError:
            entry = None
        if entry is None or now >= entry[0]:
            entry = self._admit(requirements, node, now)
        self._keep((now, node, entry[1]))  # compact: expanded when read
        if self._log.check_listeners or forward is not None:
            self._tell(entry[1], now, node, forward)

    def gate(self, *, forward: Callable[[AuditRecord], None] | None = None,
             clock: Clock | None = None) -> Callable[..., None]:
        """The executor's dispatch check: ``gate(node.requires, node.name[, now])``, or raise.

        :meth:`check_all`, answered in one frame for a remembered decision: a tuple of
        requirements that passed is answered by one lookup and one expiry compare, and
        audited, until a token involved expires, anything is revoked or an audit
        listener that hears allowed checks comes or goes (the issuer then makes this set
        :meth:`forget`, before ``revoke`` returns). Anything else goes through
        ``check_all``. Whatever else fails in the check (a hostile requirement tripping
        over anything) is turned into an audited CapabilityDeniedError naming the node,
        so no input can kill a worker.

        ``now``: the caller's reading of ``clock.time()`` at dispatch, used for the
        expiry compare and the audit time when ``clock`` is this set's own clock (the
        executor's dispatch stamp: no second clock read per node); otherwise, or when
        not given, the check reads its own clock. ``forward`` receives each allow
        record (then every dispatch takes the ``check_all`` path).
        """
        check_all, failed, remember = self.check_all, self._failed, self._remember
        # Bound once: this runs at every node dispatch, where each attribute lookup
        # costs about as much as the lookup that decides.
        fast, keep, time = self._fast, self._keep, self._time

        def checked(requirements: tuple[str, ...], node: str, now: float | None) -> None:
            try:
                forgotten = self._forgotten  # read first: a racing forget() wins
                check_all(requirements, node=node, forward=forward)
                if forward is None:
                    remember(requirements, forgotten)
            except SecurityError:
                raise
            except Exception as exc:
                raise failed(requirements, node, exc) from exc

        if forward is not None:
            def gate(requirements: tuple[str, ...], node: str, now: float | None = None
                     ) -> None:
                checked(requirements, node, now)
            return gate

        def unstamped(requirements: tuple[str, ...], node: str, now: float | None = None
                      ) -> None:
            now = time()
            try:
                expires, allowed = fast[requirements]
                if now < expires:  # remembered, and no token involved expired
                    keep((now, node, allowed))
                    return
            except (KeyError, TypeError):  # not remembered, or unhashable
                pass
            checked(requirements, node, now)

        # A stamp from another clock (a FakeClock executor, a real authority) is ignored.
        if clock is None or clock is not self._clock:
            return unstamped

        def stamped(requirements: tuple[str, ...], node: str, now: float | None = None
                    ) -> None:
            try:
                expires, allowed = fast[requirements]
                if now < expires:  # type: ignore[operator]  # None: TypeError, read the clock
                    keep((now, node, allowed))
                    return
            except (KeyError, TypeError):
                pass
            unstamped(requirements, node)
        return stamped

    def forget(self) -> None:
        """Drop the gates' remembered decisions (the issuer calls it; see :meth:`gate`)."""
        self._forgotten += 1
        self._fast.clear()

    def _remember(self, requirements: object, forgotten: int) -> None:
        """Let the gates answer ``requirements`` alone, if nothing changed since ``forgotten``."""
        if self._log.check_listeners:
            return  # they hear every allowed check: check_all tells them
        try:
            entry = self._nodes.get(requirements)
            if entry is None:
                return
            if len(self._fast) >= _MAX_HITS:
                self._fast.clear()
            self._fast[requirements] = entry
        except TypeError:  # unhashable: answered by check_all every time
            return
        if self._forgotten != forgotten:  # a revocation or listener change raced with it
            self._fast.clear()

    def _tell(self, allowed: Template | tuple[Template, ...], now: float, node: str | None,
              forward: Callable[[AuditRecord], None] | None) -> None:
        """Hand the allow records of one check to the listeners that want them."""
        listeners = self._log.check_listeners
        for tmpl in templates(allowed):
            rec = expand(now, node, tmpl)
            if listeners:
                self._log.notify(rec, listeners)
            if forward is not None:
                forward(rec)

    def _failed(self, requirements: object, node: str | None,
                exc: Exception) -> CapabilityDeniedError:
        """A check that failed by accident, as an audited denial naming the node."""
        try:
            what = clip(str(requirements[0])) if requirements else None  # type: ignore[index]
        except Exception:  # the requirement itself is what broke
            what = clip(repr(type(requirements)))
        reason = f"the check failed: {type(exc).__name__}: {clip(str(exc))}"
        self._log.record(AuditRecord(self._time(), "check", "deny", None, what, node,
                                     self.instance_id, self.holder, reason))
        return CapabilityDeniedError(f"node {node!r} of instance {self.instance_id}: {reason}",
                                     capability=what, node=node)

    def _admit(self, requirements: tuple[Requirement | str, ...], node: str | None,
               now: float) -> tuple[float, Template | tuple[Template, ...]]:
        hits = []
        for requirement in requirements:
            try:
                hit = self._hits.get(requirement)
            except TypeError:
                hit = None
            if hit is None or (hit.expires_at is not None and now >= hit.expires_at):
                hit = self._hit_slow(requirement, node, now)
            hits.append(hit)
        # One requirement (the common case) is kept as its template, several as a group:
        # either way one audit entry per dispatch, expanded when read.
        allowed = hits[0].allowed if len(hits) == 1 else tuple(h.allowed for h in hits)
        entry = (min((h.expires_at for h in hits if h.expires_at is not None),
                     default=math.inf), allowed)
        try:
            if len(self._nodes) >= _MAX_HITS:
                self._nodes.clear()
            self._nodes[requirements] = entry
        except TypeError:  # not hashable (a list): checked every time, still correct
            pass
        return entry

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
        if self._epoch != self._issuer.revocation_epoch:
            self._refresh()
        try:
            hit = self._hits.get(requirement)
        except TypeError:
            hit = None
        now = self._time()
        if hit is None or (hit.expires_at is not None and now >= hit.expires_at):
            hit = self._hit_slow(requirement, node, now)
        self._log.record_allowed(AuditRecord(now, "check", "allow", hit.token_id, hit.text,
                                             node, self.instance_id, hit.holder, None))
        return hit.grant

    def _hit_slow(self, requirement: Requirement | str, node: str | None, now: float) -> _Hit:
        """The live grant covering ``requirement`` (remembered), or an audited denial."""
        try:
            req = Requirement.parse(requirement)
        except RequirementError as exc:
            self._deny(clip(str(requirement)) or "", node, now, None, f"unparsable: {exc}")
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
                tid = grant.token.token_id
                hit = _Hit(grant.expires_at, tid, text, grant.holder, grant,
                           template("check", "allow", tid, text, self.instance_id, grant.holder))
                try:
                    self._hits[requirement] = hit
                except TypeError:  # e.g. a list that parsed: answer, but do not remember
                    pass
                return hit
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
        epoch = self._issuer.revocation_epoch
        keep = []
        for grant in self._grants:
            if any(map(self._issuer.is_revoked, grant.token.chain)):
                self._lost[grant.token.token_id] = grant.capability
            else:
                keep.append(grant)
        self._grants = tuple(keep)
        self._hits.clear()
        self._nodes.clear()
        self._narrowed.clear()
        self._fast.clear()
        self._epoch = epoch

    # --- narrowing ----------------------------------------------------------

    def attenuate(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
                  expires_in: float | None = None, resources: Iterable[str] | None = None,
                  instance_id: str | None = None) -> "GrantSet":
        """A narrower GrantSet for a sub-workflow: fewer actions, resources, scope, time.

        Each token keeps only the given ``actions`` and ``resources``, the given
        ``scope`` where it lies inside the token's, and at most ``expires_in``
        seconds; a token with nothing left is dropped. ``instance_id`` re-binds
        the result to a child instance (``"<this id>.<step>"``). Never wider than
        this set; for exactly what a step declared, use :meth:`narrow`.
        """
        target = self._target(instance_id)
        want = None
        if actions is not None:
            want = frozenset((actions,) if isinstance(actions, str) else actions)
            for action in want:
                check_action(action, "GrantSet.attenuate")
        if scope is not None:
            validate_scope(scope)
        keep = None if resources is None else frozenset(
            (resources,) if isinstance(resources, str) else resources)
        now = self._clock.time()
        out = []
        for grant in self._live(now):
            cap = grant.capability
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
            out.append(self._derive(grant, acts, new_scope, expires_in, now, target))
        return GrantSet(self._issuer, target, out, holder=self.holder)

    def narrow(self, requirements: Iterable[Requirement | str] | Requirement | str, *,
               expires_in: float | None = None, node: str | None = None,
               instance_id: str | None = None) -> "GrantSet":
        """A GrantSet with one token per requirement, narrowed to exactly it.

        Each token allows the one action on the one scope a requirement names
        (not the product of all resources and actions), expires within
        ``expires_in`` seconds if given, and is re-bound to ``instance_id`` (a
        child of this instance) if given. CapabilityDeniedError (audited) if a
        requirement is not covered; RequirementError if one does not parse.
        """
        if isinstance(requirements, (str, Requirement)):
            requirements = (requirements,)
        target = self._target(instance_id)
        reqs = tuple(dict.fromkeys(Requirement.parse(r) for r in requirements))
        now = self._clock.time()
        key = (reqs, expires_in, target)
        try:
            fresh_until, cached = self._narrowed.get(key, (now, None))
        except TypeError:  # an unhashable expires_in: _derive says what is wrong with it
            fresh_until, cached = now, None
        if cached is not None and now < fresh_until:
            # Still checked and audited: expiry and revocation apply on every call.
            self.check_all(reqs, node=node)
            return cached
        out = []
        for req in reqs:
            grant = self._check(req, node)
            out.append(self._derive(grant, req.actions, req.scope, expires_in, now, target,
                                    always=True))
        narrowed = GrantSet(self._issuer, target, out, holder=self.holder)
        # Reused while at least half its life is left, so a caller narrowing per node
        # (ctx.grant_tokens) pays the MACs once per requirement set, not per node.
        ends = [t.expires_at for t in out if t.expires_at is not None]
        if expires_in is not None:
            ends.append(now + expires_in / 2)
        if len(self._narrowed) >= _MAX_HITS:
            self._narrowed.clear()
        self._narrowed[key] = (min(ends, default=math.inf), narrowed)
        return narrowed

    def _target(self, instance_id: str | None) -> str:
        if self._epoch != self._issuer.revocation_epoch:
            self._refresh()
        if instance_id is None:
            return self.instance_id
        if not isinstance(instance_id, str) or not is_descendant(instance_id, self.instance_id):
            raise TokenError(f"grants of instance {clip(self.instance_id, 60)!r} can only be "
                             f"re-bound to a child instance ('{clip(self.instance_id, 60)}."
                             f"<name>'), not {clip(str(instance_id), 60)!r}",
                             instance_id=instance_id)
        return instance_id

    def _live(self, now: float) -> Iterator[_Grant]:
        return (g for g in self._grants if g.expires_at is None or now < g.expires_at)

    def _derive(self, grant: _Grant, actions: frozenset[str], scope: str,
                expires_in: float | None, now: float, target: str, *,
                always: bool = False) -> Token:
        token, cap = self._token_of(grant), grant.capability
        ttl = expires_in
        if ttl is not None and grant.expires_at is not None and now + ttl >= grant.expires_at:
            ttl = None  # already expires sooner
        if always or actions != cap.actions or scope != cap.scope or ttl is not None:
            # The issuer's hook audits the attenuation.
            token = token.attenuate(actions=actions, scope=scope, expires_in=ttl,
                                    clock=self._clock)
        if target != token.instance_id:
            token = self._issuer.bind(token, target, holder=self.holder,
                                      reason=f"from {token.token_id} of {self.instance_id}")
        return token

    # --- inspection ---------------------------------------------------------

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The granted (instance-bound) tokens still held, e.g. to ship to a worker."""
        if self._epoch != self._issuer.revocation_epoch:
            self._refresh()
        return tuple(self._token_of(g) for g in self._grants)

    def _token_of(self, grant: _Grant) -> Token:
        """The signed token of ``grant`` (a binding is signed on first use, by this set's issuer)."""
        held = grant.token
        if isinstance(held, PendingBinding):
            return held.token(self._issuer.sign_binding)
        return held

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
