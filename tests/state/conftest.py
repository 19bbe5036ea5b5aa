"""Fixtures for the state tests: one throwaway PostgreSQL server per session.

Each test gets its own schema on it (``pg_dsn``), so tests never see each other's
tables and no database has to be created per test.
"""

from __future__ import annotations

import secrets

import pytest
import services


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL server (skips, or fails under CI, when none can be had)."""
    try:
        import psycopg  # noqa: F401  (the `postgres` extra)
    except ImportError:
        services.unavailable("PostgreSQL", "psycopg is not installed (pip install "
                             "'lion_nb[postgres]')")
    import pg_server as server_module
    try:
        server = server_module.PgServer().start()
    except (RuntimeError, OSError) as exc:
        services.unavailable("PostgreSQL", str(exc).splitlines()[0])
    yield server
    server.destroy()


def new_schema(server) -> str:
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
