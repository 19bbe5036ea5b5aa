"""Nodes and edges of a workflow, with their retry policy, priority and trigger rule."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from ..errors import DefinitionError
from ..security.capability import Requirement
from .condition import Condition
from .ids import EdgeId, NodeId

__all__ = ["Node", "Edge", "RetryPolicy", "Priority", "TriggerRule"]


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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing node is tried, and how long to wait in between.

    ``max_attempts`` counts the first try; the n-th retry waits
    ``min(backoff * multiplier**(n-1), max_backoff)`` seconds.
    """

    max_attempts: int = 1
    backoff: float = 0.0
    multiplier: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be an int >= 1, not {self.max_attempts!r}")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise DefinitionError("backoff and max_backoff must be >= 0 and multiplier >= 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if self.backoff == 0:
            return 0.0
        return min(self.backoff * self.multiplier ** (retry - 1), self.max_backoff)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"max_attempts": self.max_attempts, "backoff": self.backoff,
                "multiplier": self.multiplier, "max_backoff": self.max_backoff}


_NO_RETRY = RetryPolicy()


def _retry(value: "RetryPolicy | int | None") -> RetryPolicy:
    if value is None:
        return _NO_RETRY
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return RetryPolicy(max_attempts=value + 1)
    raise DefinitionError(f"retry is a RetryPolicy or a number of retries, not {value!r}")


_put = object.__setattr__
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _check_seconds(name: str, **values: float | None) -> None:
    for label, value in values.items():
        if value is not None and (not isinstance(value, (int, float)) or value <= 0
                                  or math.isnan(value)):
            raise DefinitionError(f"node {name!r}: {label} must be > 0 seconds, not {value!r}")


class Node:
    """A step of a workflow: ``Node("Extract")`` or ``Node(NodeId.new(), "Extract")``.

    ``handler`` (default: the name) is the key a handler is registered under;
    ``requires`` lists capability requirements such as ``"db:write:orders/*"``;
    ``retry`` is a RetryPolicy or a number of retries; ``timeout`` and
    ``deadline`` are seconds (the deadline counts from the instance's start).
    Nodes are immutable.
    """

    __slots__ = ("id", "name", "handler", "config", "requires", "retry", "timeout",
                 "priority", "deadline", "trigger_rule", "resources")

    def __init__(
        self,
        id_or_name: NodeId | str,
        name: str | None = None,
        *,
        handler: str | None = None,
        config: Mapping[str, Any] | None = None,
        requires: Iterable[str] = (),
        retry: RetryPolicy | int | None = None,
        timeout: float | None = None,
        priority: Priority | int = Priority.NORMAL,
        deadline: float | None = None,
        trigger_rule: TriggerRule | str = _DEFAULT_RULE,
        resources: Iterable[str] = (),
    ) -> None:
        if name is None:
            node_id, name = NodeId.new(), id_or_name
        else:
            node_id = id_or_name if type(id_or_name) is NodeId else NodeId(id_or_name)
        if type(name) is not str or not name or name.isspace():
            raise DefinitionError(f"node name must be a non-empty string, not {name!r}")
        if requires:
            if isinstance(requires, str):
                requires = [requires]
            requires = tuple(requires)
            for req in requires:  # a typo fails here, at the line that wrote it
                Requirement.parse(req)
        else:
            requires = ()
        if timeout is not None or deadline is not None:
            _check_seconds(name, timeout=timeout, deadline=deadline)
        # Fast paths for the defaults: enum lookups cost more than the rest of __init__.
        if trigger_rule is not _DEFAULT_RULE or priority is not Priority.NORMAL:
            try:
                trigger_rule = TriggerRule(trigger_rule)
                priority = Priority(priority)
            except ValueError as exc:
                raise DefinitionError(f"node {name!r}: {exc}") from None
        put = _put
        put(self, "id", node_id)
        put(self, "name", name)
        put(self, "handler", handler or name)
        put(self, "config", MappingProxyType(dict(config)) if config else _EMPTY)
        put(self, "requires", requires)
        put(self, "retry", _NO_RETRY if retry is None else _retry(retry))
        put(self, "timeout", timeout)
        put(self, "priority", priority)
        put(self, "deadline", deadline)
        put(self, "trigger_rule", trigger_rule)
        put(self, "resources", tuple(resources) if resources else ())

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Node is immutable (tried to set {key!r})")

    def __repr__(self) -> str:
        return f"Node({self.name!r}, id={str(self.id)!r})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": str(self.id), "name": self.name, "handler": self.handler,
                "config": dict(self.config), "requires": list(self.requires),
                "retry": self.retry.to_dict(), "timeout": self.timeout,
                "priority": self.priority.name, "deadline": self.deadline,
                "trigger_rule": self.trigger_rule.value, "resources": list(self.resources)}


class Edge:
    """A dependency ``source -> target``, active only when its condition holds.

    ``Edge(a.id, b.id)``, ``Edge(EdgeId.new(), a.id, b.id)``, ``Edge(a, b)``, or
    with ``condition="result.total > 100"`` (or a callable on the result).
    """

    __slots__ = ("id", "source", "target", "condition")

    def __init__(self, *args: Any, condition: "Condition | str | Callable[[Any], Any] | None"
                 = None) -> None:
        if len(args) == 3 and isinstance(args[0], EdgeId):
            edge_id, source, target = args
        elif len(args) == 2:
            edge_id, (source, target) = EdgeId.new(), args
        else:
            raise DefinitionError(
                "Edge takes (source, target) or (EdgeId, source, target), "
                f"not {len(args)} positional arguments")
        put = _put
        put(self, "id", edge_id)
        put(self, "source", _node_id(source))
        put(self, "target", _node_id(target))
        put(self, "condition", None if condition is None else Condition(condition))

    @classmethod
    def between(cls, source: NodeId, target: NodeId, condition: Any = None) -> "Edge":
        """A new edge between two node ids (the builder's fast path; ids are not re-checked)."""
        edge = object.__new__(cls)
        _put(edge, "id", EdgeId.new())
        _put(edge, "source", source)
        _put(edge, "target", target)
        _put(edge, "condition", None if condition is None else Condition(condition))
        return edge

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Edge is immutable (tried to set {key!r})")

    def __repr__(self) -> str:
        cond = f", condition={self.condition.label!r}" if self.condition else ""
        return f"Edge({str(self.source)!r} -> {str(self.target)!r}{cond})"


def _node_id(value: Any) -> NodeId:
    if type(value) is NodeId:
        return value
    value = getattr(value, "id", value)  # a Node: its id is already a NodeId
    return value if type(value) is NodeId else NodeId(value)
