"""Run the ```python blocks of a Markdown file in order, in one namespace, like notebook cells."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


async def run_blocks(path: Path, namespace: dict | None = None, *, quiet: bool = True) -> dict:
    """Execute every block (top-level ``await`` allowed); return the shared namespace.

    ``namespace`` may be passed in so a caller can clean up what the blocks
    made (clusters, clients) even when one of them fails.
    """
    namespace = {"__name__": f"docs_{path.stem}"} if namespace is None else namespace
    out = io.StringIO()
    for number, source in enumerate(python_blocks(path), 1):
        code = compile(source, f"{path.name} block {number}", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            result = eval(code, namespace)  # noqa: S307 - our own documentation
            if isinstance(result, types.CoroutineType):
                await result
    return namespace
