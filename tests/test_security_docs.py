"""docs/security.md: every ```python block runs, in order, in one namespace."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_security_doc_has_an_honesty_section():
    text = DOC.read_text()
    assert "What this protects against, and what it does not" in text
    assert "not a sandbox" in text


async def test_security_doc_code_blocks_run_as_written():
    blocks = _BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 10
    namespace: dict[str, object] = {"__name__": "docs_security"}
    for number, source in enumerate(blocks, 1):
        code = compile(source, f"{DOC.name} block {number}", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(io.StringIO()):
            result = eval(code, namespace)  # noqa: S307 - our own documentation
            if result is not None:  # a coroutine when the block awaits at top level
                await result
