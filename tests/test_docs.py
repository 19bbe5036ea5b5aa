"""Every Python block of README.md runs as written, in order, with top-level await."""

from __future__ import annotations

from docs_runner import ROOT, python_blocks, run_blocks


def test_readme_has_the_two_commands_and_the_seed_examples():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 7
    for needle in ("WorkflowBuilder(\"Example Workflow\")", "execute_workflow",
                   "change_policy(SchedulingPolicy.PRIORITY)", "CheckpointManager.with_file_storage",
                   "broker.subscribe(\"order.created\""):
        assert any(needle in b for b in blocks), needle


async def test_readme_blocks_run():
    ns = await run_blocks(ROOT / "README.md")
    assert ns["result"].succeeded
    assert ns["ok"].succeeded and not ns["denied"].succeeded
    assert ns["orders_db"] == {"orders": ["A-1"]}
