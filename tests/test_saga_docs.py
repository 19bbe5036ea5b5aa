"""docs/sagas.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

import ast
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "sagas.md"


async def test_sagas_doc_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8, "docs/sagas.md lost its examples"
    namespace: dict = {"__name__": "sagas_doc"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{DOC.name}[block {i}]", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # noqa: S307 - our own documentation
        if result is not None:
            await result
