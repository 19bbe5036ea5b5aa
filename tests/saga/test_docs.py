"""docs/sagas.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

from pathlib import Path

from docs_runner import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "sagas.md"


async def test_sagas_doc_blocks_run_in_order():
    assert len(python_blocks(DOC)) >= 8, "docs/sagas.md lost its examples"
    await run_blocks(DOC, quiet=False)