"""Subscription filters: a Python callable, or a small declarative expression.

An expression is Python syntax parsed with :mod:`ast` and checked against a
whitelist, then compiled to nested closures; nothing is ever ``eval``-ed::

    "payload.total > 100 and payload.region in ['eu', 'uk']"
    "headers.priority == 'high' or not payload.test"
    "topic == 'order.created' and len(payload.items) >= 2"

Names: ``topic``, ``payload``, ``headers``, ``id``. ``a.b`` on a dict reads the
key ``b`` (a missing key reads as ``None``); ``a[0]`` / ``a['k']`` index with a
constant. Allowed: ``and or not``, comparisons (``== != < <= > >= in not in
is is not``), ``+ - * / %``, unary ``-``, literals, list/tuple/set displays and
the function ``len``. An expression whose evaluation fails on an event (say
``None > 3``) is false for that event. Declarative filters are stored with a
durable subscription; callables cannot be.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from ..errors import ConditionError

__all__ = ["EventFilter", "compile_filter"]

_Eval = Callable[[dict[str, Any]], Any]
_NAMES = frozenset({"topic", "payload", "headers", "id"})
_CMP = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BIN = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Mod: operator.mod,
}
_FUNCS: dict[str, Callable[[Any], Any]] = {"len": len}


def _member(value: Any, key: Any) -> Any:
    """``value.key`` / ``value[key]`` for the data shapes events carry."""
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, (list, tuple, str)) and isinstance(key, int):
        return value[key] if -len(value) <= key < len(value) else None
    return None


class _Compiler:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def fail(self, node: ast.AST, why: str) -> ConditionError:
        col = getattr(node, "col_offset", 0)
        return ConditionError(
            f"filter {self.expression!r}: {why} (at column {col + 1})", expression=self.expression
        )

    def build(self, node: ast.AST) -> _Eval:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            if node.id not in _NAMES:
                raise self.fail(node, f"unknown name {node.id!r}; use one of {sorted(_NAMES)}")
            name = node.id
            return lambda env: env[name]
        if isinstance(node, ast.Attribute):
            inner, attr = self.build(node.value), node.attr
            return lambda env: _member(inner(env), attr)
        if isinstance(node, ast.Subscript):
            if not isinstance(node.slice, ast.Constant):
                raise self.fail(node, "only constant subscripts like a[0] or a['key'] are allowed")
            inner, key = self.build(node.value), node.slice.value
            return lambda env: _member(inner(env), key)
        if isinstance(node, ast.BoolOp):
            parts = [self.build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(node, ast.UnaryOp):
            operand = self.build(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda env: not operand(env)
            if isinstance(node.op, ast.USub):
                return lambda env: -operand(env)
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            op = _BIN.get(type(node.op))
            if op is None:
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
            left, right = self.build(node.left), self.build(node.right)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.Compare):
            first = self.build(node.left)
            pairs = []
            for op_node, comparator in zip(node.ops, node.comparators):
                cmp = _CMP.get(type(op_node))
                if cmp is None:
                    raise self.fail(node, f"comparison {type(op_node).__name__} is not allowed")
                pairs.append((cmp, self.build(comparator)))

            def compare(env: dict[str, Any]) -> bool:
                left = first(env)
                for cmp, right_eval in pairs:
                    right = right_eval(env)
                    if not cmp(left, right):
                        return False
                    left = right
                return True

            return compare
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.build(e) for e in node.elts]
            kind = {ast.List: list, ast.Tuple: tuple, ast.Set: frozenset}[type(node)]
            return lambda env: kind(i(env) for i in items)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
                raise self.fail(node, f"only calls to {sorted(_FUNCS)} are allowed")
            if node.keywords or len(node.args) != 1:
                raise self.fail(node, f"{node.func.id}() takes exactly one argument")
            fn, arg = _FUNCS[node.func.id], self.build(node.args[0])
            return lambda env: fn(arg(env))
        raise self.fail(node, f"{type(node).__name__} is not allowed in a filter")


class EventFilter:
    """A compiled filter; call it with an event to learn whether it passes."""

    __slots__ = ("expression", "_fn", "_expr_eval")

    def __init__(self, spec: str | Callable[[Any], bool]) -> None:
        self._fn: Callable[[Any], bool] | None = None
        self._expr_eval: _Eval | None = None
        self.expression: str | None = None
        if isinstance(spec, str):
            try:
                tree = ast.parse(spec.strip(), mode="eval")
            except SyntaxError as exc:
                raise ConditionError(
                    f"filter {spec!r} does not parse: {exc.msg}", expression=spec
                ) from None
            self._expr_eval = _Compiler(spec).build(tree)
            self.expression = spec
        elif callable(spec):
            self._fn = spec
        else:
            raise ConditionError(
                f"a filter is a callable or an expression string, not {type(spec).__name__}",
                expression=spec,
            )

    def __call__(self, event: Any) -> bool:
        """True when ``event`` passes; exceptions from the filter propagate."""
        if self._fn is not None:
            return bool(self._fn(event))
        env = {"topic": event.topic, "payload": event.payload,
               "headers": event.headers or {}, "id": event.id}
        try:
            return bool(self._expr_eval(env))  # type: ignore[misc]
        except (TypeError, ValueError, ArithmeticError):
            return False  # e.g. None > 3 on an event that lacks the field

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
