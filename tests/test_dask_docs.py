"""docs/dask.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

pytest.importorskip("distributed")

DOC = Path(__file__).resolve().parents[1] / "docs" / "dask.md"


def test_dask_doc_states_the_trust_model():
    text = DOC.read_text()
    assert "one trust domain" in text and "Dask deserializes code" in text
    assert "TLS" in text


async def test_dask_doc_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {"__name__": "dask_doc"}
    try:
        for i, block in enumerate(blocks):
            code = compile(block, f"{DOC.name}[block {i}]", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            with contextlib.redirect_stdout(io.StringIO()):
                result = eval(code, namespace)
                if result is not None:
                    await result
    finally:  # a failing block must not leave worker processes behind
        for name in ("client", "cluster"):
            obj = namespace.get(name)
            if obj is not None and getattr(obj, "status", None) is not None \
                    and str(obj.status) not in ("closed", "Status.closed"):
                await obj.close()
