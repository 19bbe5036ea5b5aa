"""The declarative filter evaluator: what it allows, refuses and how it evaluates."""

from __future__ import annotations

import pytest

from lion_nb.errors import ConditionError
from lion_nb.patterns import Event, EventFilter

EV = Event("order.created", {"total": 150, "region": "eu", "items": [1, 2, 3],
                              "customer": {"tier": "gold"}, "note": None},
           headers={"priority": "high"})


@pytest.mark.parametrize("expr, expected", [
    ("payload.total > 100", True),
    ("payload.total > 100 and payload.region == 'us'", False),
    ("payload.region in ['eu', 'uk'] or payload.total < 0", True),
    ("'test' not in payload", True),
    ("not payload.test", False),            # a missing key is an error: the filter is false
    ("payload.customer.tier == 'gold'", True),
    ("payload['customer']['tier'] != 'gold'", False),
    ("len(payload.items) >= 3", True),
    ("payload.items[0] == 1 and payload.items[-1] == 3", True),
    ("payload.items[9] is None", False),    # no index 9: an error, so false
    ("headers.priority == 'high'", True),
    ("topic == 'order.created'", True),
    ("100 < payload.total <= 150", True),
    ("payload.total * 2 - 100 == 200", True),
    ("payload.total % 7 == 3", True),
    ("-payload.total < 0", True),
    ("payload.note is None", True),
    ("payload.missing > 3", False),         # missing key: false for this event
    ("payload.note > 3", False),            # None > 3 raises TypeError: false too
    ("payload._private == None", False),    # single underscores are ordinary keys
    ("payload.region not in ('eu',)", False),
])
def test_expression_evaluates(expr, expected):
    assert EventFilter(expr)(EV) is expected


@pytest.mark.parametrize("expr", [
    "__import__('os').system('x')", "payload.__class__.__bases__[0]()", "eval('1')",
    "[x for x in payload]", "payload.total if True else 0", "lambda: 1", "x",
    "payload.items[payload.total]", "payload.total ** 2", "f'{payload}'", "payload.total >",
    "len(payload, 2)",
])
def test_expression_refuses_what_is_not_whitelisted(expr):
    with pytest.raises(ConditionError) as info:
        EventFilter(expr)
    assert info.value.expression == expr


def test_dunder_fields_are_refused_when_compiled():
    with pytest.raises(ConditionError, match="__class__"):
        EventFilter("payload.__class__ is None")


def test_one_missing_key_rule_for_filters_and_edge_conditions():
    """The shared compiler: a missing key raises; the filter reads that as 'no', the
    condition as an error naming the field (so a typo never silently picks a branch)."""
    from lion_nb.model import Condition
    from lion_nb.model import Expression

    expr = Expression("payload.total", ["payload"])
    with pytest.raises(ConditionError, match="no field 'total'"):
        expr({"payload": {}})
    assert expr({"payload": {"total": 0}}) == 0
    assert EventFilter("payload.total > 1")(Event("t", {})) is False
    with pytest.raises(ConditionError, match="no field 'total'"):
        Condition("result.total > 1").evaluate({})
    # the same language on both sides: displays, len only where offered, same refusals
    assert Condition("result.tags == ['a', 'b']").evaluate({"tags": ["a", "b"]})
    assert EventFilter("payload.tags == ['a', 'b']")(Event("t", {"tags": ["a", "b"]}))
    with pytest.raises(ConditionError):
        Condition("len(result) > 1")
    for bad in ("result.__class__", "result ** 2", "[x for x in result]"):
        with pytest.raises(ConditionError):
            Condition(bad)
        with pytest.raises(ConditionError):
            EventFilter(bad.replace("result", "payload"))


def test_same_as_compares_expressions_and_callables():
    fn = lambda e: True  # noqa: E731
    assert EventFilter("payload.x == 1").same_as(EventFilter("payload.x == 1"))
    assert EventFilter(fn).same_as(EventFilter(fn))
    assert not EventFilter(fn).same_as(EventFilter(lambda e: True))
