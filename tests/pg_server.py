"""A throwaway PostgreSQL server for tests and benchmarks, from Debian's binaries.

``initdb`` into a temp dir and ``pg_ctl start`` on a free loopback port. initdb
refuses to run as root, so under root every server command runs as the
``postgres`` user (``runuser -u postgres --``) and the temp dir is handed to it.
The ``pg_server`` fixture starts one per session; ``pg_dsn`` gives each test a
schema of its own on it, so tests never see each other's tables.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import services


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temp dir; ``dsn()`` connects as superuser ``lion``."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = bin_dir()
        if self.bin is None:
            raise RuntimeError("Debian's postgresql is not installed "
                               "(/usr/lib/postgresql/*/bin/initdb missing)")
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="lion-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user "
                                   "to run initdb as") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True,
                              check=check, timeout=120)

    def start(self) -> "PgServer":
        """initdb (first time) and start; raises RuntimeError with the server's words."""
        try:
            if not self.data.exists():
                self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "lion",
                          "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C")
            self._pg_ctl("start")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{' '.join(exc.cmd[-3:])} failed: "
                               f"{(exc.stderr or exc.stdout).strip()[-400:]}") from None
        return self

    def _pg_ctl(self, action: str, mode: str = "fast") -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        args = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                "-l", str(self.root / "log")]
        if action == "start":
            self._run(*args, "-o", opts, "start")
        else:
            self._run(*args, "-m", mode, action, check=action != "stop")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode="immediate"`` is a crash: no shutdown checkpoint)."""
        self._pg_ctl("stop", mode)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash) and start again on the same port."""
        self.stop(mode)
        self._pg_ctl("start")

    def dsn(self, dbname: str = "postgres", user: str = "lion", **options: str) -> str:
        """A connection URI to this server."""
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}?sslmode=disable{extra}"

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# --- pytest fixtures (tests/conftest.py imports them) --------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL server (skips, or fails under CI, when none can be had)."""
    try:
        import psycopg  # noqa: F401  (the `postgres` extra)
    except ImportError:
        services.unavailable("PostgreSQL", "psycopg is not installed "
                             "(pip install 'lion_nb[postgres]')")
    try:
        server = PgServer().start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        services.unavailable("PostgreSQL", str(exc).splitlines()[0])
    yield server
    server.destroy()


def new_schema(server: PgServer) -> str:
    """A DSN whose tables live in a fresh schema of ``server``."""
    import psycopg
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return server.dsn(options=f"-csearch_path%3D{name}")


@pytest.fixture
def pg_dsn(pg_server):
    """A DSN to a schema of its own on the session's PostgreSQL server."""
    return new_schema(pg_server)
