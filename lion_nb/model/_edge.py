"""Edge: a dependency between two nodes, active only when its condition holds."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import DefinitionError
from ._ids import EdgeId, NodeId, node_id_of
from ._condition import Condition

__all__ = ["Edge", "as_condition"]

_put = object.__setattr__


def as_condition(condition: Any) -> Condition | None:
    """A Condition from an expression, a callable or a Condition (kept as is); None stays."""
    if condition is None or type(condition) is Condition:
        return condition
    return Condition(condition)


class Edge:
    """A dependency ``source -> target``, active only when its condition holds.

    ``Edge(a.id, b.id)``, ``Edge(EdgeId.new(), a.id, b.id)``, ``Edge(a, b)``, or
    with ``condition="result.total > 100"`` (or a callable on the result).
    """

    __slots__ = ("id", "source", "target", "condition")

    id: EdgeId
    source: NodeId
    target: NodeId
    condition: Condition | None

    def __init__(self, *args: Any, condition: "Condition | str | Callable[[Any], Any] | None"
                 = None) -> None:
        if len(args) == 3 and isinstance(args[0], EdgeId):
            edge_id, source, target = args
        elif len(args) == 2:
            edge_id, (source, target) = EdgeId.new(), args
        else:
            raise DefinitionError(
                "Edge takes (source, target) or (EdgeId, source, target), "
                f"not {len(args)} positional arguments", field="args")
        put = _put
        put(self, "id", edge_id)
        put(self, "source", node_id_of(source))
        put(self, "target", node_id_of(target))
        put(self, "condition", as_condition(condition))

    @classmethod
    def between(cls, source: NodeId, target: NodeId, condition: Any = None,
                edge_id: EdgeId | None = None) -> "Edge":
        """A new edge between two node ids (the builder's fast path; ids are not re-checked)."""
        edge = object.__new__(cls)
        _put(edge, "id", EdgeId.new() if edge_id is None else edge_id)
        _put(edge, "source", source)
        _put(edge, "target", target)
        _put(edge, "condition", as_condition(condition))
        return edge

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Edge is immutable (tried to set {key!r})")

    def __repr__(self) -> str:
        cond = f", condition={self.condition.label!r}" if self.condition else ""
        return f"Edge({str(self.source)!r} -> {str(self.target)!r}{cond})"
