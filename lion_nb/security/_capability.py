"""Capabilities (what a token allows) and requirements (what a node needs).

A :class:`Capability` is a resource name, a set of actions, a scope pattern
(see :func:`lion_nb.security.scope_covers`) and optional constraints. A
:class:`Requirement` is one action on one scope, written ``"db:write:orders/*"``.
Both validate at construction, so a typo fails where it was typed::

    cap = Capability("db", {"read", "write"}, scope="orders/*")
    cap.covers(Requirement.parse("db:write:orders/1"))   # True
    cap.covers(Requirement.parse("db:write:users/1"))    # False
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Union

from lion_nb.errors import CapabilityError, RequirementError
from lion_nb.security._scope import MAX_SCOPE_LEN, WHOLE, scope_covers, validate_scope

__all__ = [
    "DEFAULT_ACTIONS", "known_actions", "register_action", "check_action", "same_value",
    "Capability", "Requirement", "ConstraintValue",
]

DEFAULT_ACTIONS = frozenset(
    {"read", "write", "delete", "execute", "publish", "subscribe", "admin"})
"""The action vocabulary every process knows. Actions do not imply each other."""

ConstraintValue = Union[str, int, float, bool]
"""What a constraint may hold: JSON scalars, because constraints travel inside tokens."""

_ACTION_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")
_RESOURCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}\Z")
_CONSTRAINT_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# Process-wide on purpose: the vocabulary exists to catch typos ("wrte") at the
# line that made them, which must work before any Authority is at hand.
_actions: set[str] = set(DEFAULT_ACTIONS)
_EMPTY: Mapping[str, ConstraintValue] = MappingProxyType({})
_MAX_REQUIREMENT_LEN = MAX_SCOPE_LEN + 200
_MAX_CONSTRAINTS = 32


def same_value(a: object, b: object) -> bool:
    """Type-strict equality for constraint values: ``True`` is not ``1``, ``1`` not ``1.0``."""
    return type(a) is type(b) and a == b


def known_actions() -> frozenset[str]:
    """The actions capabilities and requirements may name in this process."""
    return frozenset(_actions)


def register_action(name: str) -> str:
    """Add ``name`` to the action vocabulary (idempotent) and return it."""
    if not isinstance(name, str) or not _ACTION_RE.match(name):
        raise CapabilityError(
            f"action {name!r} is not a lowercase identifier of at most 32 characters",
            capability=repr(name))
    _actions.add(name)
    return name


def check_action(action: object, where: str) -> str:
    """Return ``action`` if it is in the vocabulary, else raise CapabilityError naming it."""
    if isinstance(action, str) and action in _actions:
        return action
    raise CapabilityError(
        f"{where}: unknown action {repr(action)[:40]}; known actions are "
        f"{', '.join(sorted(_actions))} (add more with register_action)",
        capability=where)


def _check_resource(resource: object, where: str, culprit: dict[str, str]) -> str:
    # ``culprit`` is the attribute the error keeps: capability=... or requirement=...
    error = RequirementError if "requirement" in culprit else CapabilityError
    if not isinstance(resource, str) or not resource:
        raise error(f"{where}: resource name is empty", **culprit)
    if not _RESOURCE_RE.match(resource):
        raise error(f"{where}: resource name {resource[:40]!r} must be an identifier "
                    "(letters, digits, '_', '.', '-'; no ':')", **culprit)
    return resource


def _freeze_constraints(raw: object, where: str) -> Mapping[str, ConstraintValue]:
    if raw is None:
        return _EMPTY
    if not isinstance(raw, Mapping):
        raise CapabilityError(f"{where}: constraints must be a mapping", capability=where)
    if len(raw) > _MAX_CONSTRAINTS:
        raise CapabilityError(f"{where}: more than {_MAX_CONSTRAINTS} constraints",
                              capability=where)
    out: dict[str, ConstraintValue] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _CONSTRAINT_KEY_RE.match(key):
            raise CapabilityError(f"{where}: constraint name {repr(key)[:70]} is not an "
                                  "identifier", capability=where)
        # Scalars only: constraints travel inside tokens as JSON and compare type-strictly.
        if not isinstance(value, (str, int, float, bool)) or value != value \
                or (isinstance(value, str) and len(value) > MAX_SCOPE_LEN):
            raise CapabilityError(f"{where}: constraint {key!r} must be a str (at most "
                                  f"{MAX_SCOPE_LEN} characters), int, float or bool, not "
                                  f"{repr(value)[:40]}", capability=where)
        out[key] = value
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True, repr=False)
class Capability:
    """Permission to perform ``actions`` on ``resource`` within ``scope``.

    ``constraints`` are extra conditions (``{"max_rows": 100}``) that travel with
    the capability for the code that uses the resource to honour; a capability
    covers another only if the other carries all of its constraints.
    """

    resource: str
    actions: frozenset[str]
    scope: str = WHOLE
    constraints: Mapping[str, ConstraintValue] = field(default_factory=lambda: _EMPTY,
                                                       hash=False)
    """Read-only mapping (``None`` given becomes an empty one)."""

    def __post_init__(self) -> None:
        where = f"Capability({repr(self.resource)[:60]})"
        _check_resource(self.resource, where, {"capability": where})
        raw = self.actions
        try:
            actions = frozenset((raw,) if isinstance(raw, str) else raw)
        except TypeError:
            raise CapabilityError(f"{where}: actions must be a set of strings, not "
                                  f"{repr(raw)[:40]}",
                                  capability=where) from None
        if not actions:
            raise CapabilityError(f"{where}: needs at least one action", capability=where)
        for action in actions:
            check_action(action, where)
        try:
            validate_scope(self.scope)
        except CapabilityError as exc:
            raise CapabilityError(f"{where}: {exc}", capability=where) from None
        # Normalize in place: frozen dataclasses only allow this in __post_init__.
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "constraints", _freeze_constraints(self.constraints, where))

    @classmethod
    def parse(cls, text: str) -> "Capability":
        """Parse ``"db:read,write:orders/*"`` (scope optional, default whole resource)."""
        if not isinstance(text, str):
            raise CapabilityError(f"capability must be a string, not {type(text).__name__}",
                                  capability=repr(text))
        parts = text.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise CapabilityError(f"capability {text[:60]!r} is not "
                                  "'resource:actions[:scope]'", capability=text[:60])
        actions = frozenset(a.strip() for a in parts[1].split(","))
        return cls(parts[0], actions, parts[2] if len(parts) == 3 else WHOLE)

    def covers(self, other: "Capability | Requirement") -> bool:
        """True if everything ``other`` permits is permitted by this capability.

        Against a capability, ``other`` must also carry all of these constraints.
        A requirement asks for an action, not for conditions: constraints are
        then for the code using the resource to honour (see ``capability_for``).
        """
        if other.resource != self.resource or not other.actions <= self.actions:
            return False
        if isinstance(other, Capability):
            theirs = other.constraints
            for key, value in self.constraints.items():
                if key not in theirs or not same_value(theirs[key], value):
                    return False
        return scope_covers(self.scope, other.scope)

    def narrow(self, *, actions: Iterable[str] | str | None = None, scope: str | None = None,
               constraints: Mapping[str, ConstraintValue] | None = None) -> "Capability":
        """Return a capability with fewer actions, a narrower scope or more constraints.

        Raises CapabilityError if the result would permit anything this one does not.
        """
        merged = dict(self.constraints)
        for key, value in (constraints or {}).items():
            if key in merged and not same_value(merged[key], value):
                raise CapabilityError(f"{self}: cannot change constraint {key!r} from "
                                      f"{merged[key]!r} to {value!r} (only add new ones)",
                                      capability=str(self))
            merged[key] = value
        wanted = self.actions if actions is None else actions
        child = Capability(self.resource,
                           frozenset((wanted,) if isinstance(wanted, str) else wanted),
                           self.scope if scope is None else scope, merged)
        if not child.actions <= self.actions:
            extra = ", ".join(sorted(child.actions - self.actions))
            raise CapabilityError(f"{self}: cannot widen to actions it lacks ({extra})",
                                  capability=str(self))
        if not scope_covers(self.scope, child.scope):
            raise CapabilityError(f"{self}: scope {child.scope!r} is not inside "
                                  f"{self.scope!r}, so it would widen", capability=str(self))
        return child

    def __str__(self) -> str:
        return f"{self.resource}:{','.join(sorted(self.actions))}:{self.scope}"

    def __repr__(self) -> str:
        extra = f", constraints={dict(self.constraints)!r}" if self.constraints else ""
        actions = "{" + ", ".join(repr(a) for a in sorted(self.actions)) + "}"  # stable order
        return f"Capability({self.resource!r}, {actions}, scope={self.scope!r}{extra})"


@dataclass(frozen=True)
class Requirement:
    """One action on one scope of one resource, as a node declares it."""

    resource: str
    action: str
    scope: str = WHOLE

    def __post_init__(self) -> None:
        _validate_requirement(self.resource, self.action, self.scope,
                              f"{self.resource}:{self.action}:{self.scope}")

    @classmethod
    def parse(cls, text: "str | Requirement") -> "Requirement":
        """Parse ``"resource:action[:scope]"``; RequirementError names a bad string."""
        if isinstance(text, Requirement):
            return text
        if not isinstance(text, str):
            raise RequirementError(f"requirement must be a string like 'db:write:orders/*', "
                                   f"not {type(text).__name__}", requirement=repr(text)[:60])
        if len(text) > _MAX_REQUIREMENT_LEN:
            raise RequirementError(f"requirement is longer than {_MAX_REQUIREMENT_LEN} "
                                   "characters", requirement=text[:57] + "...")
        return _parse_requirement(text)

    @property
    def actions(self) -> frozenset[str]:
        """The single action as a set, so a requirement reads like a capability."""
        return frozenset((self.action,))

    def __str__(self) -> str:
        return f"{self.resource}:{self.action}:{self.scope}"


@functools.lru_cache(maxsize=4096)
def _parse_requirement(text: str) -> Requirement:
    # Cached: a node's requirement strings are parsed at every dispatch.
    parts = text.split(":", 2)
    if len(parts) < 2 or not all(parts):
        raise RequirementError(f"requirement {text!r} does not parse; expected "
                               "'resource:action' or 'resource:action:scope'",
                               requirement=text)
    resource, action = parts[0], parts[1]
    scope = parts[2] if len(parts) == 3 else WHOLE
    _validate_requirement(resource, action, scope, text)  # so errors name ``text``
    return Requirement(resource, action, scope)


def _validate_requirement(resource: str, action: str, scope: str, text: str) -> None:
    where = f"requirement {text!r}"
    _check_resource(resource, where, {"requirement": text})
    try:
        check_action(action, where)
    except CapabilityError as exc:
        raise RequirementError(str(exc), requirement=text) from None
    try:
        validate_scope(scope)
    except CapabilityError as exc:
        raise RequirementError(f"{where}: {exc}", requirement=text) from None
