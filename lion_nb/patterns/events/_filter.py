"""Subscription filters: a Python callable, or a declarative expression.

Expressions use the library's one expression language
(:class:`lion_nb.model.Expression`) with the names ``topic``,
``payload``, ``headers``, ``id`` and the function ``len``::

    "payload.total > 100 and payload.region in ['eu', 'uk']"
    "headers.priority == 'high' or 'test' not in payload"
    "topic == 'order.created' and len(payload.items) >= 2"

An expression that fails on an event - a missing key (the language's one
rule: a missing key is an error, never ``None``), or ``None > 3`` - does not
pass that event. Declarative filters are stored with a durable subscription;
callables cannot be.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import ConditionError
from ...model import Expression

__all__ = ["EventFilter", "compile_filter"]

_NAMES = ("topic", "payload", "headers", "id")
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"len": len}
_EVAL_ERRORS = (ConditionError, TypeError, ValueError, ArithmeticError)


class EventFilter:
    """A compiled filter; call it with an event to learn whether it passes."""

    __slots__ = ("expression", "_fn", "_expr")

    def __init__(self, spec: str | Callable[[Any], bool]) -> None:
        self._fn: Callable[[Any], bool] | None = None
        self._expr: Expression | None = None
        self.expression: str | None = None
        if isinstance(spec, str):
            self._expr = Expression(spec, _NAMES, what="filter", functions=_FUNCTIONS)
            self.expression = spec
        elif callable(spec):
            self._fn = spec
        else:
            raise ConditionError(
                f"a filter is a callable or an expression string, not {type(spec).__name__}",
                expression=spec,
            )

    def __call__(self, event: Any) -> bool:
        """True when ``event`` passes; exceptions from a callable filter propagate."""
        if self._fn is not None:
            return bool(self._fn(event))
        env = {"topic": event.topic, "payload": event.payload,
               "headers": event.headers or {}, "id": event.id}
        try:
            return bool(self._expr(env))  # type: ignore[misc]
        except _EVAL_ERRORS:
            return False

    def same_as(self, other: "EventFilter | None") -> bool:
        """True when ``other`` is the same expression or the same callable."""
        if other is None:
            return False
        if self.expression is not None:
            return self.expression == other.expression
        return self._fn is other._fn

    def __repr__(self) -> str:
        return f"EventFilter({self.expression or self._fn!r})"


def compile_filter(spec: str | Callable[[Any], bool] | EventFilter | None) -> EventFilter | None:
    """Compile ``spec`` (None, a callable, or an expression) into an :class:`EventFilter`."""
    if spec is None or isinstance(spec, EventFilter):
        return spec
    return EventFilter(spec)
