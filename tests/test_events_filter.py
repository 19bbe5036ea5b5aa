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
    ("not payload.test", True),
    ("payload.customer.tier == 'gold'", True),
    ("payload['customer']['tier'] != 'gold'", False),
    ("len(payload.items) >= 3", True),
    ("payload.items[0] == 1 and payload.items[9] is None", True),
    ("headers.priority == 'high'", True),
    ("topic == 'order.created'", True),
    ("100 < payload.total <= 150", True),
    ("payload.total * 2 - 100 == 200", True),
    ("payload.total % 7 == 3", True),
    ("-payload.total < 0", True),
    ("payload.note is None", True),
    ("payload.missing > 3", False),         # None > 3 is false, not an error
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


def test_dunder_attribute_reads_a_missing_key_not_the_object():
    assert EventFilter("payload.__class__ is None")(EV) is True


def test_same_as_compares_expressions_and_callables():
    fn = lambda e: True  # noqa: E731
    assert EventFilter("payload.x == 1").same_as(EventFilter("payload.x == 1"))
    assert EventFilter(fn).same_as(EventFilter(fn))
    assert not EventFilter(fn).same_as(EventFilter(lambda e: True))
