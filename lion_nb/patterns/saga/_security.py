"""Capabilities for saga steps: each command carries tokens narrowed to its step.

A step declares ``requires=["payment:write:orders/*"]``; the instance is
started with ``grants=[token, ...]``. Before each attempt (and each
compensation) the manager narrows the instance's grants to exactly the
resources and actions the step declared, checks them, and puts the narrowed
tokens on the command, so a service receives no more authority than the step
needs and can verify it with the authority's key. A step whose requirements
are not covered is not dispatched; the denial is final (retrying cannot help)
and the saga compensates as for any failed step.
"""

from __future__ import annotations

from typing import Any, Iterable

from ...errors import CapabilityDeniedError
from ...security import GrantSet, Requirement

__all__ = ["parse_requirements", "step_tokens"]


def parse_requirements(requires: Iterable[str] | str) -> tuple[str, ...]:
    """Validate requirement strings (RequirementError names a bad one)."""
    reqs = (requires,) if isinstance(requires, str) else tuple(requires)
    for req in reqs:
        Requirement.parse(req)
    return reqs


def step_tokens(grants: GrantSet | None, step: Any, saga_id: str) -> tuple[str, ...]:
    """The serialized tokens a step's command carries; CapabilityDeniedError if not covered."""
    who = f"{saga_id}/{step.id}"
    if not step.requires:
        return ()
    reqs = [Requirement.parse(r) for r in step.requires]
    if grants is None:
        raise CapabilityDeniedError(
            f"saga step {who!r} requires {list(step.requires)} but its instance holds no "
            "grants", capability=step.requires[0], node=who)
    scopes = {r.scope for r in reqs}
    narrowed = grants.attenuate(resources={r.resource for r in reqs},
                                actions={r.action for r in reqs},
                                scope=scopes.pop() if len(scopes) == 1 else None)
    for req in reqs:
        narrowed.check(req, node=who)
    return tuple(t.serialize() for t in narrowed.tokens)
