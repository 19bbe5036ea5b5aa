"""Capability-based security: capabilities, signed tokens, grants, resources, audit.

Deny by default. An :class:`Authority` holds a key and mints tokens for a
:class:`Capability`; anyone holding a token can attenuate it (only
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

``Authority.generate_ed25519()`` makes public-key tokens instead, which
processes outside the notebook verify with ``Authority.from_public_key(...)``.
See ``docs/security.md`` for what this protects against, and what it does not.
"""

from lion_nb.security._audit import AuditLog, AuditRecord
from lion_nb.security._authority import Authority
from lion_nb.security._capability import (
    DEFAULT_ACTIONS, Capability, Requirement, known_actions, register_action,
)
from lion_nb.security._ceiling import DefinitionCeiling
from lion_nb.security._grants import GrantIssuer, GrantSet
from lion_nb.security._pending import PendingBinding
from lion_nb.security._resources import ResourceRegistry, resource_for
from lion_nb.security._scope import MAX_SCOPE_LEN, MAX_SEGMENTS, scope_covers
from lion_nb.security._token import MAX_CAVEATS, MAX_TOKEN_LEN, Token, narrow_tokens

__all__ = [
    "AuditLog",
    "AuditRecord",
    "Authority",
    "Capability",
    "DEFAULT_ACTIONS",
    "DefinitionCeiling",
    "GrantIssuer",
    "GrantSet",
    "MAX_CAVEATS",
    "MAX_SCOPE_LEN",
    "MAX_SEGMENTS",
    "MAX_TOKEN_LEN",
    "PendingBinding",
    "Requirement",
    "ResourceRegistry",
    "Token",
    "known_actions",
    "narrow_tokens",
    "register_action",
    "resource_for",
    "scope_covers",
]
