"""docs/security.md: every ```python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

from docs_runner import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_security_doc_has_an_honesty_section():
    text = DOC.read_text()
    assert "## Threat model" in text and "Inside one process, not protected" in text
    assert "not a sandbox" in text
    assert "## Compared with macaroons and Biscuit" in text


async def test_security_doc_code_blocks_run_as_written():
    assert len(python_blocks(DOC)) >= 10
    await run_blocks(DOC)