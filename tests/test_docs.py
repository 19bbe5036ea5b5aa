"""Every Python block of README.md runs as written, in order, with top-level await."""

from __future__ import annotations

import ast
import pathlib
import re
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: pathlib.Path) -> list[str]:
    """The ```python blocks of a Markdown file."""
    return BLOCK.findall(path.read_text(encoding="utf-8"))


async def run_blocks(path: pathlib.Path) -> dict:
    """Execute the blocks in one namespace, like cells of a notebook."""
    namespace: dict = {"__name__": "__docs__"}
    for i, source in enumerate(python_blocks(path)):
        code = compile(source, f"{path.name}[block {i}]", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # noqa: S307 - our own documentation
        if isinstance(result, types.CoroutineType):
            await result
    return namespace


def test_readme_has_the_two_commands_and_the_seed_examples():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 7
    for needle in ("WorkflowBuilder(\"Example Workflow\")", "execute_workflow",
                   "change_policy(SchedulingPolicy.PRIORITY)", "CheckpointManager.with_file_storage",
                   "broker.subscribe(\"order.created\""):
        assert any(needle in b for b in blocks), needle


async def test_readme_blocks_run():
    ns = await run_blocks(ROOT / "README.md")
    assert ns["result"].succeeded
    assert ns["ok"].succeeded and not ns["denied"].succeeded
    assert ns["orders_db"] == {"orders": ["A-1"]}
