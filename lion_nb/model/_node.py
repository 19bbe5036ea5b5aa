"""Node: a step of a workflow, with its priority, trigger rule and retry policy."""

from __future__ import annotations

import enum
import functools
import math
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from ..errors import DefinitionError
from ..security import Requirement
from ._ids import NodeId
from ._retry import NO_RETRY, RetryPolicy, as_retry_policy

__all__ = ["Node", "Priority", "TriggerRule"]


class Priority(enum.IntEnum):
    """Scheduling priority of a node; higher runs first under the PRIORITY policy."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class TriggerRule(enum.StrEnum):
    """When a node runs, given how its inputs ended: Airflow's rules, with Airflow's meanings.

    The default, NONE_FAILED_MIN_ONE_SUCCESS, runs a node once no input failed and at
    least one edge is active -- what joins after conditional branches need. An
    edge whose condition is false counts as a skipped input. docs/semantics.md has
    the table of every rule, and where it differs from Airflow.
    """

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"
    ALL_SKIPPED = "all_skipped"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


_DEFAULT_RULE = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
# Read once per Node: module globals, since an enum member read costs ~100 ns and an
# ``object.__new__`` attribute read another lookup (Node() is ~10k instructions in all).
_NORMAL = Priority.NORMAL
_new_object = object.__new__


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _check_seconds(name: str, **values: float | None) -> None:
    for label, value in values.items():
        if value is not None and (not isinstance(value, (int, float)) or value <= 0
                                  or isinstance(value, bool) or math.isnan(value)):
            raise DefinitionError(f"node {name!r}: {label} must be > 0 seconds, not {value!r}",
                                  node=name, field=label)


def _strings(name: str, label: str, value: Any) -> tuple[str, ...]:
    """``requires=``/``resources=``: one string or an iterable of strings, as a tuple."""
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        out = (value,)
    if not all(type(v) is str for v in out):
        raise DefinitionError(f"node {name!r}: {label} is a string or a list of strings, "
                              f"not {value!r}", node=name, field=label)
    return out


@functools.lru_cache(maxsize=4096)
def _shared_requires(needs: tuple[str, ...]) -> tuple[str, ...]:
    """``needs`` checked, as the one tuple every node declaring the same requirements holds.

    Shared, the dispatch gate's lookup by tuple matches by identity: no element
    compare and no cold tuple per node. A typo raises (and is not cached).
    """
    for req in needs:
        Requirement.parse(req)
    return needs


_FIELDS = ("_id", "name", "handler", "config", "requires", "retry", "timeout", "priority",
           "deadline", "trigger_rule", "resources", "cache", "cache_ttl", "version")


class _NodeFields:
    """The slots of a Node, writable: a Node is filled in as one, then becomes a Node.

    ``object.__setattr__`` past Node's own refusing ``__setattr__`` costs ~0.5 µs a
    field (fourteen per node); plain slot stores and one ``__class__`` switch cost
    a tenth of that, and the result is the same immutable object.
    """

    __slots__ = _FIELDS

    _id: NodeId | None
    name: str
    handler: str
    config: Mapping[str, Any]
    requires: tuple[str, ...]
    retry: RetryPolicy
    timeout: float | None
    priority: Priority
    deadline: float | None
    trigger_rule: TriggerRule
    resources: tuple[str, ...]
    cache: bool
    cache_ttl: float | None
    version: str | None


class Node(_NodeFields):
    """A step of a workflow: ``Node("Extract")`` or ``Node(NodeId.new(), "Extract")``.

    ``handler`` (default: the name) is the key a handler is registered under;
    ``requires`` lists capability requirements such as ``"db:write:orders/*"``;
    ``retry`` is a RetryPolicy or a number of retries; ``timeout`` and
    ``deadline`` are seconds (the deadline counts from the instance's start).
    ``cache=False`` keeps the node out of the result cache (side effects,
    randomness); ``cache_ttl`` is how many seconds a cached result stays good;
    ``version`` replaces the handler's code version (code that cannot be read).
    Nodes are immutable.
    """

    __slots__ = ()

    def __new__(
        cls,
        id_or_name: NodeId | str,
        name: str | None = None,
        *,
        handler: str | None = None,
        config: Mapping[str, Any] | None = None,
        requires: Iterable[str] = (),
        retry: RetryPolicy | int | None = None,
        timeout: float | None = None,
        priority: Priority | int = _NORMAL,
        deadline: float | None = None,
        trigger_rule: TriggerRule | str = _DEFAULT_RULE,
        resources: Iterable[str] = (),
        cache: bool = True,
        cache_ttl: float | None = None,
        version: str | None = None,
    ) -> "Node":
        node_id: NodeId | None
        if name is None:  # the id is drawn when first read: most graphs never read it
            node_id, name = None, id_or_name
        else:
            node_id = id_or_name if type(id_or_name) is NodeId else NodeId(id_or_name)
        if type(name) is not str or not name or name.isspace():
            raise DefinitionError(f"node name must be a non-empty string, not {name!r}",
                                  node=name, field="name")
        needs: tuple[str, ...] = ()
        if requires:
            # A typo fails here, at the line that wrote it.
            needs = _shared_requires(_strings(name, "requires", requires))
        if handler is not None and (type(handler) is not str or not handler):
            raise DefinitionError(f"node {name!r}: handler is a non-empty string (a handler "
                                  f"key), not {handler!r}", node=name, field="handler")
        if config and not isinstance(config, Mapping):
            raise DefinitionError(f"node {name!r}: config is a mapping, not {config!r}",
                                  node=name, field="config")
        if timeout is not None or deadline is not None or cache_ttl is not None:
            _check_seconds(name, timeout=timeout, deadline=deadline, cache_ttl=cache_ttl)
        if type(cache) is not bool:
            raise DefinitionError(f"node {name!r}: cache is True or False, not {cache!r}",
                                  node=name, field="cache")
        if version is not None and (type(version) is not str or not version):
            raise DefinitionError(f"node {name!r}: version is a non-empty string, not "
                                  f"{version!r}", node=name, field="version")
        # Fast paths for the defaults: enum lookups cost more than the rest of __init__.
        if trigger_rule is not _DEFAULT_RULE or priority is not _NORMAL:
            field = "trigger_rule"
            try:
                trigger_rule = TriggerRule(trigger_rule)
                field = "priority"
                priority = Priority(priority)
            except ValueError as exc:
                raise DefinitionError(f"node {name!r}: {exc}", node=name, field=field) from None
        self = _new_object(_NodeFields)
        self._id = node_id
        self.name = name
        self.handler = handler or name
        self.config = MappingProxyType(dict(config)) if config else _EMPTY
        self.requires = needs
        if retry is None:
            self.retry = NO_RETRY
        else:
            try:
                self.retry = as_retry_policy(retry)
            except DefinitionError as exc:  # the same message, naming the node
                raise DefinitionError(f"node {name!r}: {exc}", node=name,
                                      field="retry") from None
        self.timeout = timeout
        self.priority = priority
        self.deadline = deadline
        self.trigger_rule = trigger_rule
        self.resources = _strings(name, "resources", resources) if resources else ()
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.version = version
        self.__class__ = cls  # from here on immutable
        return self  # type: ignore[return-value]

    @property
    def id(self) -> NodeId:
        """The node's id; a node made without one draws a fresh id when this is first read."""
        node_id = self._id
        if node_id is None:
            node_id = NodeId.new()
            object.__setattr__(self, "_id", node_id)  # once: a cache, not a change
        return node_id

    @property
    def assigned_id(self) -> NodeId | None:
        """The id if the node has one yet, else None (reading this draws none)."""
        return self._id

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Node is immutable (tried to set {key!r})")

    def __repr__(self) -> str:
        return f"Node({self.name!r}, id={str(self.id)!r})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the cache settings only when they are not the defaults)."""
        doc = {"id": str(self.id), "name": self.name, "handler": self.handler,
               "config": dict(self.config), "requires": list(self.requires),
               "retry": self.retry.to_dict(), "timeout": self.timeout,
               "priority": self.priority.name, "deadline": self.deadline,
               "trigger_rule": self.trigger_rule.value, "resources": list(self.resources)}
        if not self.cache or self.cache_ttl is not None or self.version is not None:
            doc.update(cache=self.cache, cache_ttl=self.cache_ttl, version=self.version)
        return doc
