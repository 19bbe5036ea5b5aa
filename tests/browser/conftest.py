"""Fixtures for the browser suite: one JupyterLab server and one Chromium for all of it.

Both are package-scoped: started before the first test of ``tests/browser``
and shut down right after its last one, whatever happened in between, so no
server, kernel or browser outlives this folder (and Playwright's own event
loop is gone before the asyncio tests of the other folders run).

Without Chromium, JupyterLab or Playwright the folder is skipped with one line
saying why; with ``LION_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import LabServer, launch_chromium, missing_requirement

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOTS = REPO / "build" / "screenshots"


@pytest.fixture(scope="package", autouse=True)
def browser_requirements() -> None:
    """Skip (or, in CI, fail) every test here when the browser stack is not installed.

    A fixture rather than a module-level skip in this file: pytest cannot skip an
    initial conftest (``pytest tests/browser``), and a failure here leaves the rest
    of the suite running and reporting.
    """
    why = missing_requirement()
    if why is None:
        return
    if os.environ.get("LION_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (LION_REQUIRE_BROWSER=1) but {why}", pytrace=False)
    pytest.skip(f"browser tests skipped: {why}")


@pytest.fixture(scope="package")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of notebooks/: runs and saves never touch the committed tutorials."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(NOTEBOOKS, root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return root


@pytest.fixture(scope="package")
def lab_server(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = LabServer.start(tmp_path_factory.mktemp("jupyter"), lab_root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium (a persistent context on a fresh profile); each test opens its own page."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        context = launch_chromium(pw, tmp_path_factory.mktemp("chromium") / "profile")
        try:
            yield context
        finally:
            context.close()
    finally:
        pw.stop()


@pytest.fixture(scope="package")
def screenshots() -> Path:
    """build/screenshots/ (build/ is not committed): one PNG per notebook, for a person."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
