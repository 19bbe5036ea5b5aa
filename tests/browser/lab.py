"""A throwaway JupyterLab server on loopback, and Debian's Chromium for Playwright.

Everything the server writes (config, runtime files, settings, workspaces,
checkpoints) lives under one temporary folder, and it serves a copy of the
notebooks, so a run never touches the committed ones nor the user's Jupyter
set-up::

    server = LabServer.start(tmp_dir, root_dir)      # waits until /api/status answers
    ...  server.url("lab/tree/01_quickstart.ipynb")
    server.stop()                                    # kernels too; always call it
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "LabServer",
    "free_port",
    "launch_chromium",
    "missing_requirement",
]

CHROMIUM = Path("/usr/bin/chromium")

# The network here is closed: without the background-networking flags Chromium
# keeps dialling Google's hosts (refused, many at a time). No sandbox because
# the suite runs as root in CI; no GPU on these machines.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic")

# JupyterLab settings that make a page deterministic: every cell is kept in the
# DOM (no windowing, so off-screen outputs can be inspected and photographed),
# and nothing asks for attention over the notebook.
_USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

_SERVER_CONFIG = {
    "ServerApp": {
        # Terminals and the language server are not needed and cost start-up time.
        "jpserver_extensions": {"jupyter_lsp": False, "jupyter_server_terminals": False},
        "terminals_enabled": False,
        "allow_root": True,       # CI runs as root
        "open_browser": False,
        "port_retries": 0,        # fail loudly instead of silently moving to another port
        "shutdown_no_activity_timeout": 0,
    },
    "LabApp": {
        # window.jupyterapp: lets the driver run JupyterLab's own commands and read the
        # notebook model (the kernel's full MIME bundles) next to the rendered DOM.
        "expose_app_in_browser": True,
        "news_url": None,
        "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "extension_manager": "readonly",  # no PyPI queries on a closed network
    },
}


def missing_requirement() -> str | None:
    """One line saying what the browser suite lacks, or None when it can run."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"{CHROMIUM} not found (Debian's chromium package: "
                "`apt-get install chromium`, as root; `make test` does it)")
    for module, package in (("jupyterlab", "jupyterlab"), ("playwright", "playwright"),
                            ("ipywidgets", "ipywidgets"), ("nbformat", "nbformat")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (it is in the dev extra: `make install-dev`)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


@dataclass
class LabServer:
    """A running ``jupyter lab`` process and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    root_dir: Path
    log_path: Path

    @classmethod
    def start(cls, base: Path, root_dir: Path, *, timeout: float = 60.0) -> LabServer:
        """Start JupyterLab serving ``root_dir``; private dirs under ``base``; wait until up."""
        dirs = {name: base / name for name in ("config", "data", "runtime", "settings",
                                               "workspaces", "ipython")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        _write_json(dirs["config"] / "jupyter_server_config.json", _SERVER_CONFIG)
        # The news/announcement toast would cover part of every screenshot.
        _write_json(dirs["config"] / "labconfig" / "page_config.json",
                    {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements":
                                            True}})
        for rel, value in _USER_SETTINGS.items():
            _write_json(dirs["settings"] / rel, value)

        port, token = free_port(), secrets.token_hex(16)
        env = dict(os.environ)
        env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
                   JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
                   JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
                   JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
                   IPYTHONDIR=str(dirs["ipython"]), JUPYTER_PLATFORM_DIRS="1",
                   PYTHONUNBUFFERED="1")
        # Kernels are started as "python" resolved to this interpreter; keep its
        # bin folder first so anything a tutorial shells out to comes from the venv.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("LION_REQUIRE_BROWSER", None)
        log_path = base / "jupyterlab.log"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root_dir}"]
        with open(log_path, "wb") as log:
            # Its own session, so a last-resort kill reaches the whole process group.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=root_dir, start_new_session=True)
        server = cls(proc, port, token, root_dir, log_path)
        try:
            server._wait_until_up(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str, **query: str) -> str:
        """An address on the server with the token in the query (it sets the login cookie)."""
        from urllib.parse import urlencode

        return f"{self.base_url}{path}?{urlencode({**query, 'token': self.token})}"

    def api(self, path: str, method: str = "GET", timeout: float = 10.0) -> object:
        """Call the REST API; returns the decoded JSON (None for an empty answer)."""
        req = urllib.request.Request(f"{self.base_url}api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        return "(no log)"

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                self.api("status", timeout=2.0)
                return
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            time.sleep(0.1)  # bounded by the deadline above
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f}s "
                           f"({last_error}):\n{self.log_tail()}")

    def shutdown_kernels_of(self, path: str) -> None:
        """Delete the sessions (and so the kernels) of one notebook; frees CPU for the next."""
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            for session in self.api("sessions"):  # type: ignore[union-attr]
                if session.get("path") == path:
                    self.api(f"sessions/{session['id']}", method="DELETE", timeout=30.0)

    def stop(self, timeout: float = 20.0) -> None:
        """Shut down kernels and server: politely, then SIGTERM, then SIGKILL the group."""
        if self.process.poll() is None:
            # The shutdown endpoint stops every kernel before the server exits; kernels
            # live in their own sessions, so a plain kill would orphan them.
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                self.api("shutdown", method="POST", timeout=5.0)
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.process.pid, sig)
                try:
                    self.process.wait(timeout / 2 if sig is None else 5.0)
                    break
                except subprocess.TimeoutExpired:
                    continue


def launch_chromium(playwright: object, user_data_dir: Path) -> object:
    """Debian's Chromium with the closed-network flags and a fresh profile (a BrowserContext).

    Playwright refuses ``--user-data-dir`` among plain arguments; a persistent
    context is how it takes one. It is still one browser for the whole suite,
    with a new page per notebook.
    """
    if user_data_dir.exists():
        shutil.rmtree(user_data_dir)
    user_data_dir.mkdir(parents=True)
    return playwright.chromium.launch_persistent_context(  # type: ignore[attr-defined]
        str(user_data_dir), executable_path=str(CHROMIUM), headless=True,
        args=list(CHROMIUM_FLAGS), viewport={"width": 1280, "height": 900}, timeout=60_000)
