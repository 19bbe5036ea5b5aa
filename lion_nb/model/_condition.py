"""Declarative expressions, and the edge conditions built on them.

One whitelisted expression language serves edge conditions (names:
``result``) and event filters (names: ``topic``, ``payload``, ``headers``,
``id``). An expression is parsed once with :mod:`ast`, checked against the
whitelist and compiled to nested closures; nothing is ever passed to ``eval``::

    Condition("result.total > 100 and result.ok")
    Condition("result['status'] in ('paid', 'shipped')")
    Condition(lambda result: result["total"] > 100)   # not serializable

Allowed: ``and or not``, comparisons (``== != < <= > >= in not in is is
not``), ``+ - * / // %``, unary ``-``/``+``, constants, list/tuple/set
displays, ``a.b`` and ``a[const]``, and the functions a user of the language
offers (event filters offer ``len``).

**The missing-key rule** (the same for every user): ``a.b`` reads the key
``b`` of the dict ``a`` and ``a[k]`` reads key or index ``k``; when that key
or index does not exist, or ``a`` is not a dict/list/tuple/str, evaluation
raises :class:`~lion_nb.errors.ConditionError` naming the field. It never
reads as ``None``, so a typo is loud. Test for presence with ``'b' in a``.
What an error means is the user's rule: an edge condition fails its target
node; an event filter does not pass the event.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Collection, Mapping

from ..errors import ConditionError

__all__ = ["Condition", "Expression"]

_Eval = Callable[[Mapping[str, Any]], Any]
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
_DISPLAYS: dict[type, Callable[[Any], Any]] = {ast.List: list, ast.Tuple: tuple,
                                               ast.Set: frozenset}
_MAX_LENGTH = 2_000


def _field(value: Any, key: Any) -> Any:
    """``value.key`` / ``value[key]``: dict keys and sequence indexes only, never attributes."""
    if isinstance(value, dict):
        try:
            return value[key]
        except KeyError:
            raise ConditionError(f"no field {key!r} (fields: {sorted(map(str, value))[:10]})",
                                 expression=str(key)) from None
    if isinstance(value, (list, tuple, str)) and isinstance(key, int) \
            and not isinstance(key, bool):
        if -len(value) <= key < len(value):
            return value[key]
        raise ConditionError(f"no index {key} in a {type(value).__name__} of {len(value)}",
                             expression=str(key))
    raise ConditionError(f"cannot read field {key!r} of a {type(value).__name__}",
                         expression=str(key))


class _Compiler:
    """Turns a checked AST into nested closures (one per node, built once)."""

    def __init__(self, text: str, what: str, names: Collection[str],
                 functions: Mapping[str, Callable[[Any], Any]]) -> None:
        self.text, self.what, self.names, self.functions = text, what, names, functions

    def fail(self, node: ast.AST, why: str) -> ConditionError:
        col = getattr(node, "col_offset", 0)
        return ConditionError(f"{self.what} {self.text!r}: {why} (at column {col + 1})",
                              expression=self.text)

    def constant(self, node: ast.AST) -> Any:
        """A subscript key: a constant or a negated number (``a[-1]``)."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, int):
            return -node.operand.value
        raise self.fail(node, "only constant subscripts like a[0] or a['key'] are allowed")

    def build(self, node: ast.AST) -> _Eval:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Constant):
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise self.fail(node, f"unknown name {node.id!r}; use one of "
                                      f"{sorted(self.names)}")
            name = node.id
            return lambda env: env[name]
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                raise self.fail(node, f"field {node.attr!r} is not allowed")
            inner, attr = self.build(node.value), node.attr
            return lambda env: _field(inner(env), attr)
        if isinstance(node, ast.Subscript):
            inner, key = self.build(node.value), self.constant(node.slice)
            return lambda env: _field(inner(env), key)
        if isinstance(node, ast.BoolOp):
            parts = [self.build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                def all_of(env: Mapping[str, Any]) -> Any:
                    value: Any = True
                    for part in parts:
                        value = part(env)
                        if not value:
                            break
                    return value
                return all_of

            def any_of(env: Mapping[str, Any]) -> Any:
                value: Any = False
                for part in parts:
                    value = part(env)
                    if value:
                        break
                return value
            return any_of
        if isinstance(node, ast.UnaryOp):
            unary = _UNARY.get(type(node.op))
            if unary is None:
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
            operand = self.build(node.operand)
            return lambda env: unary(operand(env))
        if isinstance(node, ast.BinOp):
            binop = _BINOPS.get(type(node.op))
            if binop is None:
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
            left, right = self.build(node.left), self.build(node.right)
            return lambda env: binop(left(env), right(env))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.build(e) for e in node.elts]
            kind = _DISPLAYS[type(node)]
            return lambda env: kind(i(env) for i in items)
        if isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name) or func.id not in self.functions:
                allowed = sorted(self.functions) or "no function"
                raise self.fail(node, f"only calls to {allowed} are allowed")
            if node.keywords or len(node.args) != 1:
                raise self.fail(node, f"{func.id}() takes exactly one argument")
            fn, arg = self.functions[func.id], self.build(node.args[0])
            return lambda env: fn(arg(env))
        raise self.fail(node, f"{type(node).__name__} is not allowed (only comparisons, "
                              "boolean logic, arithmetic, constants and fields)")

    def compare(self, node: ast.Compare) -> _Eval:
        first = self.build(node.left)
        pairs = []
        for op_node, comparator in zip(node.ops, node.comparators):
            cmp = _CMPOPS.get(type(op_node))
            if cmp is None:
                raise self.fail(node, f"comparison {type(op_node).__name__} is not allowed")
            pairs.append((cmp, self.build(comparator)))

        def compare(env: Mapping[str, Any]) -> bool:
            left = first(env)
            for cmp, right_eval in pairs:
                right = right_eval(env)
                if not cmp(left, right):
                    return False
                left = right
            return True
        return compare


class Expression:
    """A compiled expression: ``Expression("result.n > 2", {"result"})({"result": {...}})``.

    ``names`` are the variables it may use, ``functions`` the one-argument
    functions it may call; ``what`` names the user in error messages.
    Calling it with an environment returns the value; a missing field raises
    ConditionError (see the module docstring), other failures (``None > 3``)
    raise what Python raises.
    """

    __slots__ = ("text", "_eval")

    def __init__(self, text: str, names: Collection[str], *, what: str = "expression",
                 functions: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ConditionError(f"{what} expression is empty", expression=text)
        if len(text) > _MAX_LENGTH:
            raise ConditionError(f"{what} expression longer than {_MAX_LENGTH} characters",
                                 expression=text[:80] + "...")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ConditionError(f"{what} {text!r} does not parse: {exc.msg}",
                                 expression=text) from None
        self.text = text
        self._eval = _Compiler(text, what, frozenset(names), functions or {}).build(tree)

    def __call__(self, env: Mapping[str, Any]) -> Any:
        return self._eval(env)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


class Condition:
    """A predicate on the source node's result; see the module docstring."""

    __slots__ = ("expression", "_fn", "_compiled")

    def __init__(self, condition: "str | Callable[[Any], Any] | Condition") -> None:
        self._fn: Callable[[Any], Any] | None
        self._compiled: Expression | None
        self.expression: str | None
        if isinstance(condition, Condition):
            self.expression, self._fn, self._compiled = (
                condition.expression, condition._fn, condition._compiled)
        elif isinstance(condition, str):
            self.expression = condition
            self._fn = None
            self._compiled = Expression(condition, ("result",), what="condition")
        elif callable(condition):
            self.expression = None
            self._fn = condition
            self._compiled = None
        else:
            raise ConditionError(
                "a condition is an expression string or a callable, not "
                f"{type(condition).__name__}", expression=condition)

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
            return bool(self._compiled({"result": result}))  # type: ignore[misc]
        except ConditionError as exc:
            if getattr(exc, "expression", None) == self.expression:
                raise
            raise ConditionError(f"condition {self.label!r} on result {result!r:.200}: {exc}",
                                 expression=self.label) from None
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
