"""docs/events.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

from pathlib import Path

from docs_runner import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


async def test_events_doc_blocks_run_in_order():
    assert python_blocks(DOC), "docs/events.md has no python blocks"
    await run_blocks(DOC, quiet=False)