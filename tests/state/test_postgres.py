"""PostgreSQL specifics: bad input, server restarts, commits whose outcome is unknown.

The contract every backend shares runs in test_storage_backends.py; the crash sweep
through the executor in test_crash_resume.py. Here: what only a network database does.
"""

import asyncio
import subprocess
import sys
import time
from collections import Counter

import pytest

try:
    import psycopg
except ImportError:  # without the `postgres` extra every test here skips via its pg fixture
    psycopg = None

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.errors import (CheckpointCorruptError, CheckpointVersionError, LeaseError,
                            StateConfigError, StorageError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import InstanceState, PostgresStorage, RecordCodec, StateMachineManager


@pytest.fixture
async def storage(pg_dsn):
    s = PostgresStorage(pg_dsn)
    yield s
    await s.close()


def admin(server):
    return psycopg.connect(server.dsn(), autocommit=True)


def test_importing_the_state_package_does_not_import_psycopg():
    code = ("import sys, lion_nb, lion_nb.state, lion_nb.engine\n"
            "assert 'psycopg' not in sys.modules, 'eager'\n"
            "from lion_nb.state import PostgresStorage\n"
            "print(PostgresStorage.__name__, 'psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["PostgresStorage", str(psycopg is not None)]


# --- bad input ---------------------------------------------------------------------------

def test_unreachable_server_is_a_clear_error_without_a_hang(pg_server):
    with admin(pg_server) as conn:  # a port nobody listens on
        conn.execute("SELECT 1")
    dead = pg_server.dsn().replace(f":{pg_server.port}/", ":1/")
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot connect to PostgreSQL at lion@127\.0\.0\.1:1"):
        PostgresStorage(dead)
    # A black-holed address: the connect timeout bounds the wait.
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect"):
        PostgresStorage("postgresql://lion@192.0.2.1:5432/x?sslmode=disable", connect_timeout=2)
    assert time.monotonic() - started < 6


def test_bad_settings_are_config_errors(pg_server):
    with pytest.raises(StateConfigError) as info:
        PostgresStorage("")
    assert info.value.field == "dsn"
    with pytest.raises(StateConfigError, match="not a PostgreSQL connection string"):
        PostgresStorage("this is = not = a dsn")
    with pytest.raises(StateConfigError) as info:
        PostgresStorage("postgresql://x@127.0.0.1/x", connect_timeout=-1)
    assert info.value.field == "connect_timeout"


def test_the_password_never_appears_in_errors(pg_server):
    dsn = pg_server.dsn().replace("lion@", "lion:s3cret@").replace(f":{pg_server.port}/", ":1/")
    with pytest.raises(StorageError) as info:
        PostgresStorage(dsn)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.path)


async def test_a_newer_schema_version_in_the_database_is_refused(pg_dsn):
    s = PostgresStorage(pg_dsn)
    await s.put("a", {})
    await s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE lion_meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(CheckpointVersionError,
                       match="schema version '99'.*upgrade lion_nb") as info:
        PostgresStorage(pg_dsn)
    assert info.value.version == "99"


async def test_permission_denied_is_a_storage_error_naming_the_grant(pg_server, pg_dsn):
    schema = pg_dsn.rsplit("%3D", 1)[1]
    with admin(pg_server) as conn:  # may use the schema, may not create in it
        conn.execute(f"CREATE ROLE r_{schema} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO r_{schema}")
    as_reader = pg_dsn.replace("lion@", f"r_{schema}@")
    with pytest.raises(StorageError, match="permission denied.*needs CREATE"):
        PostgresStorage(as_reader)  # may not create the tables
    owner = PostgresStorage(pg_dsn)
    await owner.put("a", {"v": 1})
    await owner.close()
    with admin(pg_server) as conn:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO r_{schema}")
    reader = PostgresStorage(as_reader)
    try:
        assert await reader.get("a") == {"v": 1}
        with pytest.raises(StorageError, match="permission denied") as info:
            await reader.put("b", {})
        assert info.value.key is None or isinstance(info.value.key, str)
    finally:
        await reader.close()


async def test_a_tampered_row_fails_its_checksum(storage, pg_dsn):
    await storage.put("a", {"v": 1})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE lion_records SET body = convert_to(replace("
                     "convert_from(body, 'UTF8'), '\"v\":1', '\"v\":2'), 'UTF8') "
                     "WHERE key = 'a'::bytea")
    with pytest.raises(CheckpointCorruptError, match="checksum"):
        await storage.get("a")


# --- commits whose outcome is unknown ----------------------------------------------------

def kill_storage_connections(dsn):
    """Terminate every lion_nb connection to the server, as a restart or a proxy would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'lion_nb' AND pid <> pg_backend_pid()")


async def test_a_commit_that_landed_but_lost_its_reply_is_not_applied_again(pg_server, pg_dsn):
    """The COMMIT landed, then the connection died: pg_xact_status says so, no re-run."""
    s = PostgresStorage(pg_dsn, reconnect_timeout=10)
    thief = PostgresStorage(pg_dsn)
    await s.acquire_lease("leases/i", "A", ttl=1, now=0)
    steps = Counter()

    def hook(step):
        steps[step] += 1
        if step == "after_commit" and steps[step] == 1:
            # After our commit, the lease moves on; a second application would be refused.
            kill_storage_connections(pg_dsn)
            raise psycopg.errors.AdminShutdown("terminating connection due to administrator "
                                               "command")

    try:
        s.step_hook = hook
        await s.put_many([("nodes/i/1", {"v": 1})], fence=("leases/i", "A"))
        assert steps["before_commit"] == 1  # the transaction ran once
        await thief.acquire_lease("leases/i", "B", ttl=1, now=10)
        with pytest.raises(LeaseError):
            await s.put_many([("nodes/i/2", {})], fence=("leases/i", "A"))
        assert await thief.get("nodes/i/1") == {"v": 1}
    finally:
        await s.close()
        await thief.close()


async def test_a_commit_cut_off_before_it_landed_runs_again_once(pg_dsn):
    s = PostgresStorage(pg_dsn, reconnect_timeout=10)
    await s.acquire_lease("leases/i", "A", ttl=100, now=0)
    steps = Counter()

    def hook(step):
        steps[step] += 1
        if step == "before_commit" and steps[step] == 1:
            kill_storage_connections(pg_dsn)

    try:
        s.step_hook = hook
        await s.put_many([("nodes/i/1", {"v": 1})], deletes=["x"], fence=("leases/i", "A"))
        assert steps["before_commit"] == 2  # aborted by the server, then run again
        assert await s.get("nodes/i/1") == {"v": 1}
    finally:
        await s.close()


async def test_a_retried_commit_is_refused_if_the_lease_moved_meanwhile(pg_dsn):
    s = PostgresStorage(pg_dsn, reconnect_timeout=10)
    await s.acquire_lease("leases/i", "A", ttl=1, now=0)
    steps = Counter()

    def hook(step):
        steps[step] += 1
        if step == "before_commit" and steps[step] == 1:
            kill_storage_connections(pg_dsn)
            # While this owner reconnects, another one takes the lease over.
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                lease = RecordCodec().encode("leases/i", {"owner": "B", "expires": 1e12})
                conn.execute("UPDATE lion_records SET body = %s WHERE key = 'leases/i'::bytea",
                             (lease,))

    try:
        s.step_hook = hook
        with pytest.raises(LeaseError):
            await s.put_many([("nodes/i/1", {"v": 1})], fence=("leases/i", "A"))
        assert steps["before_commit"] == 2  # ran again, and its fence refused the batch
        assert await s.get("nodes/i/1") is None
    finally:
        await s.close()


# --- the server restarts in the middle of a run --------------------------------------------

def chain(n):
    nodes = [Node(f"n{i}", handler="work") for i in range(n)]
    builder = WorkflowBuilder("chain").add_nodes(*nodes)
    for a, b in zip(nodes, nodes[1:]):
        builder.connect(a, b)
    return builder.build()


async def test_a_server_restart_mid_run_loses_nothing_and_reruns_nothing(pg_server, pg_dsn):
    calls = Counter()
    restarted = asyncio.Event()

    async def work(ctx):
        calls[ctx.node_name] += 1
        if ctx.node_name == "n5":  # crash the server while the run is in full swing
            await asyncio.to_thread(pg_server.restart, "immediate")
            restarted.set()
        return {"i": int(ctx.node_name[1:])}

    storage = PostgresStorage(pg_dsn, reconnect_timeout=60)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage),
                                config=ExecutorConfig(lease_ttl=30))
    executor.add_handler("work", work)
    try:
        await executor.start()
        result = await executor.run(chain(12))
    finally:
        await executor.stop()
        await storage.close()
    assert restarted.is_set()
    assert result.state == InstanceState.SUCCEEDED
    assert all(calls[f"n{i}"] == 1 for i in range(12)), calls
    fresh = PostgresStorage(pg_dsn)
    try:
        nodes = await fresh.keys("nodes/")
        assert len(nodes) == 12
    finally:
        await fresh.close()
