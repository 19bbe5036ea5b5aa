"""Capabilities for saga steps: each command carries tokens narrowed to its step.

A step declares ``requires=["payment:write:orders/*"]``; the instance is
started with ``grants=[token, ...]``. Before each attempt (and each
compensation) the manager narrows the instance's grants to exactly each
requirement the step declared (one action on one scope of one resource),
checks them, and puts the narrowed tokens on the command, so a service
receives no more authority than the step needs and can verify it with the
authority's key. A step whose requirements
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


def step_tokens(grants: GrantSet | None, step: Any, saga_id: str,
                expires_in: float | None = None) -> tuple[str, ...]:
    """The serialized tokens a step's command carries; CapabilityDeniedError if not covered.

    One narrowing per requirement, so the command gets exactly the action
    and scope each requirement names (never the product of all resources
    and actions), expiring within ``expires_in`` seconds.
    """
    who = f"{saga_id}/{step.id}"
    if not step.requires:
        return ()
    if grants is None:
        raise CapabilityDeniedError(
            f"saga step {who!r} requires {list(step.requires)} but its instance holds no "
            "grants", capability=step.requires[0], node=who)
    narrowed = grants.narrow(step.requires, expires_in=expires_in, node=who)
    return tuple(t.serialize() for t in narrowed.tokens)
