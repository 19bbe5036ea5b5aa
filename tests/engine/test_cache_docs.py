"""docs/cache.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

from pathlib import Path

from docs_runner import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "cache.md"


async def test_cache_doc_blocks_run_in_order():
    assert python_blocks(DOC), "docs/cache.md lost its example"
    ns = await run_blocks(DOC)
    assert ns["changed"].reasons["extract"].detail == "input 'extra'"
