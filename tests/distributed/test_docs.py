"""docs/dask.md runs as written: every python block, in order, in one namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_runner import python_blocks, run_blocks

pytest.importorskip("distributed")

DOC = Path(__file__).resolve().parents[2] / "docs" / "dask.md"


def test_dask_doc_states_the_trust_model():
    text = DOC.read_text()
    assert "one trust domain" in text and "Dask deserializes code" in text
    assert "TLS" in text


async def test_dask_doc_blocks_run_in_order():
    assert len(python_blocks(DOC)) >= 8
    namespace: dict = {"__name__": "dask_doc"}
    try:
        await run_blocks(DOC, namespace)
    finally:  # a failing block must not leave worker processes behind
        for name in ("client", "cluster"):
            obj = namespace.get(name)
            if obj is not None and getattr(obj, "status", None) is not None \
                    and str(obj.status) not in ("closed", "Status.closed"):
                await obj.close()
