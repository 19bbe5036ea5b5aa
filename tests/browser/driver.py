"""Open one notebook in JupyterLab, run every cell, and read back what the page shows.

Every wait here has a deadline; when one runs out, the error says what the page
was still waiting for::

    run = run_notebook(context, server, "01_quickstart.ipynb", shots / "01_quickstart.png")
    run.report      # cells -> outputs, each with the kernel's MIME bundle and the DOM
    run.seconds     # open + run + settle
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .lab import LabServer

__all__ = ["DARK_THEME", "LIGHT_THEME", "NotebookRun", "poll", "run_notebook", "write_notebook"]

READER_JS = Path(__file__).with_name("reader.js")

OPEN_TIMEOUT = 90.0      # JupyterLab loads its bundles and starts a kernel
RUN_TIMEOUT = 180.0      # every cell of one tutorial (the Dask one starts a cluster)
SETTLE_TIMEOUT = 30.0    # widget views attached, images decoded
MAX_SHOT_HEIGHT = 16_000  # Chromium cannot capture much taller surfaces in one piece

T = TypeVar("T")


def poll(probe: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str,
         interval: float = 0.25) -> T:
    """Call ``probe`` until ``ok`` accepts its value; TimeoutError (with the last value) after."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: still not done after {timeout:.0f}s (last: {value!r})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@dataclass
class NotebookRun:
    """What one notebook showed: the page report, where its picture is, what went wrong live.

    ``broken_images`` lists every image seen with the broken-image icon, sampled about
    four times a second while the cells ran and once more after the page settled.
    """

    path: str
    report: dict[str, Any]
    seconds: float
    screenshot: Path | None
    page_errors: list[str] = field(default_factory=list)
    broken_images: list[dict[str, Any]] = field(default_factory=list)


def run_notebook(context: Any, server: LabServer, path: str, screenshot: Path | None, *,
                 run_timeout: float = RUN_TIMEOUT, run: bool = True, save: bool = False,
                 theme: str | None = None,
                 interact: Callable[[Any], None] | None = None) -> NotebookRun:
    """Open ``path`` (relative to the server's root) in a new page, run all, report, close.

    ``run=False`` only opens it (a saved notebook, as a person reopens it); ``save=True``
    saves it after the run; ``theme`` ("JupyterLab Dark") switches the theme first and
    back to the light one before returning (the setting is the server's, shared);
    ``interact(page)`` does what a person would (clicks) before the page is read.
    """
    started = time.monotonic()
    page = context.new_page()
    page_errors: list[str] = []
    broken: dict[tuple[int, str], dict[str, Any]] = {}
    # Uncaught exceptions in the page: kept for the failure message, they often
    # explain a widget that did not render.
    page.on("pageerror", lambda exc: page_errors.append(str(exc)[:500]))
    page.add_init_script(path=str(READER_JS))

    def progress() -> dict[str, Any]:
        state: dict[str, Any] = page.evaluate("p => window.__lionNb.progress(p)", path)
        for img in state.get("broken", []):
            broken.setdefault((img["cell"], img["src"]), img)
        return state

    try:
        # A workspace of its own, reset, so no tab of an earlier notebook comes back.
        workspace = "t" + "".join(c if c.isalnum() else "-" for c in path)
        page.goto(server.url(f"lab/workspaces/{workspace}/tree/{path}", reset=""),
                  wait_until="domcontentloaded", timeout=OPEN_TIMEOUT * 1000)
        poll(lambda: page.evaluate("p => window.__lionNb.prepare(p)", path),
             lambda state: state == "ready", OPEN_TIMEOUT, f"open {path} and start its kernel")
        if theme is not None:
            _set_theme(page, theme)
        if run:
            page.evaluate("p => window.__lionNb.runAll(p)", path)
            poll(progress, lambda st: st["done"], run_timeout, f"run all cells of {path}")

        # Show everything at once: no file browser, a viewport as tall as the notebook.
        height = page.evaluate("p => window.__lionNb.showAll(p)", path)
        page.set_viewport_size({"width": 1280, "height": int(min(height + 200, MAX_SHOT_HEIGHT))})
        page.evaluate("p => window.__lionNb.showAll(p)", path)  # again, after the relayout
        poll(lambda: page.evaluate("p => window.__lionNb.pending(p)", path),
             lambda waiting: not waiting, SETTLE_TIMEOUT, f"widgets and pictures of {path}")
        progress()
        if interact is not None:
            interact(page)
            poll(lambda: page.evaluate("p => window.__lionNb.pending(p)", path),
                 lambda waiting: not waiting, SETTLE_TIMEOUT, f"{path} after interacting")
        if save:
            poll(lambda: page.evaluate("p => window.__lionNb.save(p)", path), bool,
                 SETTLE_TIMEOUT, f"save {path}")
        report = page.evaluate("p => window.__lionNb.collect(p)", path)
        report["theme"] = page.evaluate("() => window.__lionNb.theme()")
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True, timeout=60_000)
            # What the page showed, beside its picture: the first thing to read when a
            # check fails (checks.find_problems can be re-run on it offline).
            screenshot.with_suffix(".json").write_text(
                json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
        return NotebookRun(path, report, time.monotonic() - started, screenshot, page_errors,
                           sorted(broken.values(), key=lambda i: (i["cell"], i["src"])))
    except BaseException:
        if screenshot is not None:  # how far it got, for the person reading the failure
            with contextlib.suppress(Exception):
                page.screenshot(path=str(screenshot.with_suffix(".failed.png")),
                                full_page=True, timeout=10_000)
        raise
    finally:
        if theme is not None:
            with contextlib.suppress(Exception):
                _set_theme(page, LIGHT_THEME)
        with contextlib.suppress(Exception):  # the page may already be gone
            page.close()
        server.shutdown_kernels_of(path)


LIGHT_THEME = "JupyterLab Light"
DARK_THEME = "JupyterLab Dark"


def _set_theme(page: Any, theme: str) -> None:
    page.evaluate("t => window.__lionNb.setTheme(t)", theme)
    poll(lambda: page.evaluate("() => window.__lionNb.theme()"), lambda name: name == theme,
         SETTLE_TIMEOUT, f"switch JupyterLab to {theme!r}")


def write_notebook(root: Path, name: str, sources: list[str]) -> str:
    """A notebook of code cells written under the server's root (never into notebooks/)."""
    import nbformat  # with jupyterlab; imported here so a bare install can still skip

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, root / name)
    return name
