"""docs/notebook.md: every ```python block runs as written, in order, in one namespace."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "notebook.md"

# In a subprocess: the doc's last block calls a sync helper inside the running
# loop, which applies nest_asyncio2 process-wide; other tests must not inherit it.
RUNNER = textwrap.dedent("""
    import ast, asyncio, contextlib, io, re, sys, types
    text = open(sys.argv[1], encoding="utf-8").read()
    blocks = re.findall(r"^```python\\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 10, len(blocks)

    async def main():
        namespace = {"__name__": "docs_notebook"}
        out = io.StringIO()
        for number, source in enumerate(blocks, 1):
            code = compile(source, f"notebook.md block {number}", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            with contextlib.redirect_stdout(out):
                result = eval(code, namespace)
                if isinstance(result, types.CoroutineType):
                    await result
        return out.getvalue()

    printed = asyncio.run(main())
    assert printed.splitlines()[0] in ("dot", "wasm"), printed[:200]
    assert "Workflow 'orders'" in printed
    print("ok")
""")


def test_notebook_doc_code_blocks_run_as_written():
    out = subprocess.run([sys.executable, "-c", RUNNER, str(DOC)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"
