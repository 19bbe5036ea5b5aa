"""ResourceRegistry: the objects handlers may be handed, and the checked way to get one.

Handlers never import a database handle; they ask for it by name, and get it
only if their instance holds a capability for the action::

    registry = ResourceRegistry()
    registry.register("db", db_handle)
    db = resource_for(grants, registry, "db", "write", "orders/7", node="SaveOrder")

A scope only gates the hand-out; what the object then reaches is up to it. A
resource registered as a *factory* gets the checked scope and can return a
handle confined to it::

    registry.register_factory("files", lambda scope: ScopedDir(root, scope))
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterator, NamedTuple

from lion_nb.errors import RequirementError, ResourceError
from lion_nb.security._grants import GrantSet
from lion_nb.security._scope import WHOLE

__all__ = ["ResourceRegistry", "resource_for"]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}\Z")

ScopedFactory = Callable[[str], Any]
"""Makes a resource handle confined to the scope it is given (the checked one)."""


class _Factory(NamedTuple):
    make: ScopedFactory


class ResourceRegistry:
    """Named objects (database handles, clients) that handlers reach through checks."""

    __slots__ = ("_items", "_lock")

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def register(self, name: str, obj: Any) -> None:
        """Make ``obj`` available as ``name``; ResourceError if the name is taken or invalid."""
        self._add(name, obj)

    def register_factory(self, name: str, factory: ScopedFactory) -> None:
        """Make ``factory(scope)`` what ``name`` hands out, called with the checked scope."""
        if not callable(factory):
            raise ResourceError(f"resource {name!r}: factory must be callable, not "
                                f"{type(factory).__name__}", resource=name)
        self._add(name, _Factory(factory))

    def _add(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ResourceError(f"resource name {name!r} must be an identifier "
                                "(letters, digits, '_', '.', '-')", resource=name)
        with self._lock:
            if name in self._items:
                # Silently replacing a handle would change what granted code can reach.
                raise ResourceError(f"resource {name!r} is already registered; "
                                    "unregister it first", resource=name)
            self._items[name] = obj

    def unregister(self, name: str) -> Any:
        """Remove ``name`` and return its object; ResourceError if unknown."""
        with self._lock:
            if name not in self._items:
                raise ResourceError(f"resource {name!r} is not registered", resource=name)
            obj = self._items.pop(name)
        return obj.make if isinstance(obj, _Factory) else obj

    def get(self, name: str, scope: str = WHOLE) -> Any:
        """The object registered as ``name`` (unchecked); ResourceError if unknown.

        For a factory, what it makes for ``scope``.
        """
        try:
            obj = self._items[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._items)) or "none"
            raise ResourceError(f"resource {str(name)[:60]!r} is not registered (registered: "
                                f"{known})", resource=name) from None
        return obj.make(scope) if isinstance(obj, _Factory) else obj

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"<ResourceRegistry {self.names()}>"


def resource_for(grants: GrantSet, registry: ResourceRegistry, name: str, action: str,
                 scope: str = WHOLE, *, node: str | None) -> Any:
    """Check ``name:action:scope`` against ``grants`` for ``node``, then return the object.

    The check comes first, so a node without the capability learns nothing about
    which resources exist. Raises CapabilityDeniedError, RequirementError or
    ResourceError.
    """
    if not isinstance(name, str) or not isinstance(action, str) or ":" in name or ":" in action:
        raise RequirementError(f"resource {name!r} / action {action!r} must be strings "
                               "without ':'", requirement=f"{name}:{action}:{scope}")
    # A string key: GrantSet caches decisions per requirement text, so this is cheap.
    grants.check(f"{name}:{action}:{scope}", node=node)
    return registry.get(name, scope)
