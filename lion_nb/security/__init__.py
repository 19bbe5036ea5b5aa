"""Capability-based security: capabilities, signed tokens, grants, resources, audit.

Deny by default. An :class:`Authority` holds a secret key and mints tokens for
a :class:`Capability`; anyone holding a token can attenuate it (only
narrower); an instance is granted tokens as a :class:`GrantSet` whose
``check`` says whether a node may do what it requires; every decision is an
:class:`AuditRecord`::

    from lion_nb.security import Authority, Capability
    authority = Authority.generate()
    token = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"),
                           expires_in=3600)
    read_only = token.attenuate(actions={"read"})
    grants = authority.grant([read_only], instance_id="inst-1")
    grants.allows("db:read:orders/1", node="Load")     # True
    grants.allows("db:write:orders/1", node="Save")    # False

See ``docs/security.md`` for what this protects against, and what it does not.
"""

from lion_nb.security.audit import AuditLog, AuditRecord
from lion_nb.security.authority import Authority
from lion_nb.security.capability import (
    DEFAULT_ACTIONS, Capability, Requirement, known_actions, register_action,
)
from lion_nb.security.ceiling import DefinitionCeiling
from lion_nb.security.grants import GrantSet
from lion_nb.security.resources import ResourceRegistry, resource_for
from lion_nb.security.scope import scope_covers
from lion_nb.security.token import Token

__all__ = [
    "Authority", "Capability", "Requirement", "Token", "GrantSet", "DefinitionCeiling",
    "ResourceRegistry", "resource_for", "AuditRecord", "AuditLog",
    "DEFAULT_ACTIONS", "known_actions", "register_action", "scope_covers",
]
