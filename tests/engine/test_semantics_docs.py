"""docs/semantics.md runs: its trigger-rule table is checked row by row, its blocks run."""

from __future__ import annotations

import re

import pytest
from docs_runner import ROOT, run_blocks
from engine.test_trigger_rules import _STATE, airflow, matrix, outcome, ours, target

from lion_nb.engine import WorkflowExecutor
from lion_nb.model import TriggerRule

DOC = ROOT / "docs" / "semantics.md"
_ROW = re.compile(r"^\| `(\w+)` \| ([a-z_, ]+) \| (\w+) \| (\w+) \|$", re.M)


def cases() -> list[tuple[str, tuple[str, ...], str, str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- trigger-rule-cases -->")[1].split("<!-- /trigger-rule-cases -->")[0]
    return [(rule, tuple(x.strip() for x in inputs.split(",")), theirs, mine)
            for rule, inputs, theirs, mine in _ROW.findall(table)]


def test_the_table_has_every_rule_but_always():
    assert {c[0] for c in cases()} == {r.value for r in TriggerRule} - {"always"}


@pytest.mark.parametrize("rule, inputs, theirs, mine", cases(),
                         ids=lambda v: ",".join(v) if isinstance(v, tuple) else str(v))
async def test_each_row_is_what_airflow_and_the_engine_decide(rule, inputs, theirs, mine):
    assert airflow(rule, inputs) == theirs
    assert ours(rule, inputs) == mine
    ex = WorkflowExecutor()
    ex.add_handler("outcome", outcome)
    ex.add_handler("target", target)
    await ex.start()
    try:
        result = await ex.run(matrix(TriggerRule(rule), [inputs]))
    finally:
        await ex.stop()
    assert result.node_states["t0"] is _STATE[mine]


async def test_the_blocks_run():
    ns = await run_blocks(DOC)
    assert ns["branch_result"].node_states["small"].value == "skipped"
    assert ns["branch_result"].succeeded
