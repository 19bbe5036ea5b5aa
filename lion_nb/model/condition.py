"""Edge conditions: a Python callable, or a declarative expression checked with ``ast``.

Expressions are parsed once against a whitelist and interpreted, never passed
to ``eval``: ``result`` is the source node's output, ``result.total`` reads the
key ``total`` of a dict output, and only comparisons, boolean logic,
arithmetic, constants and subscripts with constants are allowed::

    Condition("result.total > 100 and result.ok")
    Condition("result['status'] in ('paid', 'shipped')")
    Condition(lambda result: result["total"] > 100)   # not serializable
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from ..errors import ConditionError

__all__ = ["Condition"]

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
}
_MAX_LENGTH = 2_000


class Condition:
    """A predicate on the source node's result; see the module docstring."""

    __slots__ = ("expression", "_fn", "_tree")

    def __init__(self, condition: "str | Callable[[Any], Any] | Condition") -> None:
        if isinstance(condition, Condition):
            self.expression, self._fn, self._tree = (
                condition.expression, condition._fn, condition._tree)
        elif isinstance(condition, str):
            self.expression = condition
            self._fn = None
            self._tree = _parse(condition)
        elif callable(condition):
            self.expression = None
            self._fn = condition
            self._tree = None
        else:
            raise ConditionError(
                f"a condition is an expression string or a callable, not {type(condition).__name__}",
                expression=condition)

    @property
    def serializable(self) -> bool:
        """True for expressions; callables cannot be saved."""
        return self.expression is not None

    @property
    def label(self) -> str:
        """Text for pictures and tables: the expression, or the callable's name."""
        if self.expression is not None:
            return self.expression
        return getattr(self._fn, "__qualname__", None) or repr(self._fn)

    def evaluate(self, result: Any) -> bool:
        """Apply the condition to a source result; ConditionError if it cannot."""
        try:
            if self._fn is not None:
                return bool(self._fn(result))
            return bool(_eval(self._tree, result))
        except ConditionError:
            raise
        except Exception as exc:
            raise ConditionError(
                f"condition {self.label!r} failed on result {result!r:.200}: {exc}",
                expression=self.label) from exc

    def __repr__(self) -> str:
        return f"Condition({self.label!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Condition):
            return NotImplemented
        if self.expression is not None:
            return self.expression == other.expression
        return self._fn is other._fn

    def __hash__(self) -> int:
        return hash(self.expression if self.expression is not None else id(self._fn))


def _parse(expression: str) -> ast.expr:
    if not expression.strip():
        raise ConditionError("condition expression is empty", expression=expression)
    if len(expression) > _MAX_LENGTH:
        raise ConditionError(f"condition expression longer than {_MAX_LENGTH} characters",
                             expression=expression[:80] + "...")
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError as exc:
        raise ConditionError(f"condition {expression!r} does not parse: {exc.msg}",
                             expression=expression) from None
    _check(tree, expression)
    return tree


def _check(node: ast.AST, expression: str) -> None:
    """Reject anything outside the whitelist, naming the construct."""
    allowed = (ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.UnaryOp, ast.BinOp,
               ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List,
               ast.Load, *_BINOPS, *_CMPOPS, *_UNARY)
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            what = type(child).__name__
            raise ConditionError(
                f"condition {expression!r}: {what} is not allowed (only comparisons, "
                "boolean logic, arithmetic, constants and result fields)",
                expression=expression)
        if isinstance(child, ast.Name) and child.id != "result":
            raise ConditionError(
                f"condition {expression!r}: unknown name {child.id!r} (only 'result')",
                expression=expression)
        if isinstance(child, ast.Attribute) and child.attr.startswith("_"):
            raise ConditionError(
                f"condition {expression!r}: field {child.attr!r} is not allowed",
                expression=expression)
        if isinstance(child, ast.Subscript) and not isinstance(child.slice, (ast.Constant,
                                                                              ast.UnaryOp)):
            raise ConditionError(
                f"condition {expression!r}: subscripts must be constants", expression=expression)


def _field(value: Any, key: Any) -> Any:
    # Attribute syntax reads dict keys only: no object attributes, so no escape hatch.
    if isinstance(value, dict):
        if key not in value:
            raise ConditionError(f"result has no field {key!r} (fields: {sorted(value)[:10]})",
                                 expression=str(key))
        return value[key]
    if isinstance(value, (list, tuple, str)) and isinstance(key, int):
        return value[key]
    raise ConditionError(f"cannot read field {key!r} of a {type(value).__name__}",
                         expression=str(key))


def _eval(node: ast.AST, result: Any) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return result
    if isinstance(node, ast.Attribute):
        return _field(_eval(node.value, result), node.attr)
    if isinstance(node, ast.Subscript):
        return _field(_eval(node.value, result), _eval(node.slice, result))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            value: Any = True
            for sub in node.values:
                value = _eval(sub, result)
                if not value:
                    return value
            return value
        value = False
        for sub in node.values:
            value = _eval(sub, result)
            if value:
                return value
        return value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, result)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, result))
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, result), _eval(node.right, result))
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, result) for e in node.elts)
    raise ConditionError(f"unsupported expression node {type(node).__name__}")
