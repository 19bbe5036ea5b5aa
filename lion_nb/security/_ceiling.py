"""DefinitionCeiling: the most a workflow's nodes may ever require.

A workflow definition can declare a ceiling; every node requirement must lie
inside it, so a node added later cannot quietly ask for more than the
workflow was reviewed for::

    ceiling = DefinitionCeiling(["db:read,write:orders/*", "mail:publish"])
    ceiling.check(["db:write:orders/1"], node="SaveOrder")     # fine
    ceiling.check(["db:delete:orders/1"], node="Purge")       # CapabilityDeniedError
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lion_nb.errors import CapabilityDeniedError
from lion_nb.security._capability import Capability, Requirement

__all__ = ["DefinitionCeiling"]


class DefinitionCeiling:
    """A fixed set of capabilities that bounds every requirement of a definition."""

    __slots__ = ("capabilities",)

    def __init__(self, capabilities: Iterable[Capability | str]) -> None:
        if isinstance(capabilities, (str, Capability)):
            capabilities = (capabilities,)
        self.capabilities: tuple[Capability, ...] = tuple(
            c if isinstance(c, Capability) else Capability.parse(c) for c in capabilities)
        """The capabilities a node requirement may fall inside."""

    def covers(self, requirement: Requirement | str) -> bool:
        """True if some capability of the ceiling covers ``requirement``."""
        req = Requirement.parse(requirement)
        return any(cap.covers(req) for cap in self.capabilities)

    def check(self, requirements: Iterable[Requirement | str], *,
              node: str | None = None) -> tuple[Requirement, ...]:
        """Parse ``requirements``; raise CapabilityDeniedError for one above the ceiling.

        RequirementError if one does not parse. Returns the parsed requirements.
        """
        if isinstance(requirements, (str, Requirement)):
            requirements = (requirements,)
        parsed = tuple(Requirement.parse(r) for r in requirements)
        for req in parsed:
            if not any(cap.covers(req) for cap in self.capabilities):
                allowed = ", ".join(str(c) for c in self.capabilities) or "nothing"
                raise CapabilityDeniedError(
                    f"node {node!r} requires {str(req)!r}, which is above the workflow's "
                    f"capability ceiling ({allowed})", capability=str(req), node=node)
        return parsed

    def __iter__(self) -> Iterator[Capability]:
        return iter(self.capabilities)

    def __len__(self) -> int:
        return len(self.capabilities)

    def __repr__(self) -> str:
        return f"DefinitionCeiling({[str(c) for c in self.capabilities]!r})"
