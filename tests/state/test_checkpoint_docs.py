"""docs/checkpoints.md: every ```python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_runner import python_blocks, run_blocks

import lion_nb.state

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpoints.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_NEEDED = ("CheckpointManager", "FileStorage", "SqliteStorage", "RecordCodec")


@pytest.mark.skipif(not all(hasattr(lion_nb.state, n) for n in _NEEDED),
                    reason="lion_nb.state does not export the checkpoint names yet")
async def test_checkpoint_doc_code_blocks_run_as_written(pg_dsn, monkeypatch):
    monkeypatch.setenv("LION_POSTGRES_DSN", pg_dsn)  # the PostgreSQL section's server
    assert len(python_blocks(DOC)) >= 8
    await run_blocks(DOC)


def test_checkpoint_doc_shows_the_seed_example_verbatim():
    text = DOC.read_text()
    seed = [
        'from lion_nb.state import CheckpointManager, FileStorage',
        'checkpoint_manager = CheckpointManager.with_file_storage(checkpoint_dir, "1.0.0")',
        'checkpoint_id = await checkpoint_manager.save_checkpoint(workflow)',
        'workflow = await checkpoint_manager.load_latest_checkpoint(workflow.id)',
    ]
    for line in seed:
        assert line in text
