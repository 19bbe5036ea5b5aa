"""docs/checkpoints.md: every ```python block runs, in order, in one namespace."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

import lion_nb.state

DOC = Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_NEEDED = ("CheckpointManager", "FileStorage", "SqliteStorage", "RecordCodec")


@pytest.mark.skipif(not all(hasattr(lion_nb.state, n) for n in _NEEDED),
                    reason="lion_nb.state does not export the checkpoint names yet")
async def test_checkpoint_doc_code_blocks_run_as_written():
    blocks = _BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "docs_checkpoints"}
    for number, source in enumerate(blocks, 1):
        code = compile(source, f"{DOC.name} block {number}", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(io.StringIO()):
            result = eval(code, namespace)  # noqa: S307 - our own documentation
            if result is not None:  # a coroutine when the block awaits at top level
                await result


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
