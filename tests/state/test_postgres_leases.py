"""Leases shared by executors: renewal never takes a lease back, expired ones come from an index.

Run on every backend (the claim workers' rules must hold wherever they run), with
the PostgreSQL specifics (the index, the version-1 upgrade) at the end.
"""

import pytest

from lion_nb.errors import LeaseError
from lion_nb.state import FileStorage, MemoryStorage, PostgresStorage, RecordCodec, SqliteStorage

try:
    import psycopg
except ImportError:  # the postgres tests skip through pg_dsn
    psycopg = None

BACKENDS = ["memory", "file", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def storage(request, tmp_path):
    kind = request.param
    if kind == "postgres":
        s = PostgresStorage(request.getfixturevalue("pg_dsn"))
    elif kind == "memory":
        s = MemoryStorage()
    elif kind == "file":
        s = FileStorage(tmp_path / "files")
    else:
        s = SqliteStorage(tmp_path / "state.db")
    yield s
    await s.close()


async def test_renewal_never_takes_back_a_lease_that_lapsed_to_another_owner(storage):
    # A slow owner A misses its renewals; B takes the expired lease over and runs
    # on; B's lease lapses too. A's late renewal must fail (acquire would succeed):
    # B may have committed nodes A knows nothing about, which A would run again.
    await storage.acquire_lease("leases/i", "A", 1.0, 100.0)
    await storage.renew_lease("leases/i", "A", 1.0, 100.5)
    assert (await storage.get("leases/i"))["expires"] == 101.5
    await storage.acquire_lease("leases/i", "B", 1.0, 102.0)
    with pytest.raises(LeaseError):
        await storage.renew_lease("leases/i", "A", 1.0, 104.0)
    assert (await storage.get("leases/i"))["owner"] == "B"
    await storage.release_lease("leases/i", "B")
    with pytest.raises(LeaseError):  # released: renewing must not bring it back
        await storage.renew_lease("leases/i", "B", 1.0, 105.0)
    assert await storage.get("leases/i") is None


async def test_expired_leases_lists_only_expired_ones_oldest_first_and_bounded(storage):
    for i in range(6):
        await storage.acquire_lease(f"leases/{i}", f"o{i}", 10.0, 100.0 - i)
    await storage.acquire_lease("other/x", "o", 1.0, 0.0)  # expired, wrong prefix
    await storage.put("leases/not-a-lease-yet", {"note": 1})
    assert await storage.expired_leases("leases/", 50.0) == []
    found = await storage.expired_leases("leases/", 108.5, limit=3)
    assert [k for k, _ in found] == ["leases/5", "leases/4", "leases/3"]
    assert found[0][1] == {"owner": "o5", "expires": 105.0}
    await storage.renew_lease("leases/5", "o5", 100.0, 108.0)  # renewed: no longer expired
    assert [k for k, _ in await storage.expired_leases("leases/", 108.5)] == [
        "leases/4", "leases/3", "leases/2"]


async def test_expired_leases_is_an_index_scan_on_postgresql(pg_dsn):
    storage = PostgresStorage(pg_dsn)
    try:
        for i in range(50):
            await storage.acquire_lease(f"leases/{i:03d}", "o", 10.0, float(i))
            await storage.put(f"nodes/{i:03d}", {"n": i})
    finally:
        await storage.close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("ANALYZE lion_records")
        conn.execute("SET enable_seqscan = off")  # a 100-row table would be scanned anyway
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT key, body FROM lion_records WHERE expires <= 20 "
            "AND key >= 'leases/' AND key < 'leases0' ORDER BY expires LIMIT 16"))
        assert "lion_records_expires" in plan, plan
        (indexed,) = conn.execute(
            "SELECT count(*) FROM lion_records WHERE expires IS NOT NULL").fetchone()
        assert indexed == 50  # leases only: node records stay out of the index


async def test_a_version_1_database_is_upgraded_in_place(pg_dsn):
    codec = RecordCodec()
    with psycopg.connect(pg_dsn) as conn:  # the layout version 1 created
        conn.execute("CREATE TABLE lion_meta (name text PRIMARY KEY, value text NOT NULL)")
        conn.execute("CREATE TABLE lion_records (key bytea PRIMARY KEY, body bytea NOT NULL)")
        conn.execute("INSERT INTO lion_meta VALUES ('schema_version', '1')")
        for key, record in [("leases/a", {"owner": "dead", "expires": 5.0}),
                            ("instances/a", {"owner": "x", "expires": 1.0, "state": "running"})]:
            conn.execute("INSERT INTO lion_records VALUES (%s, %s)",
                         (key.encode(), codec.encode(key, record)))
    storage = PostgresStorage(pg_dsn)
    try:
        assert await storage.expired_leases("", 10.0) == [
            ("leases/a", {"owner": "dead", "expires": 5.0})]
        assert (await storage.get("instances/a"))["state"] == "running"
    finally:
        await storage.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT value FROM lion_meta").fetchone() == ("2",)


async def test_items_reads_a_prefix_in_key_order(storage):
    """What a follower reads each poll: one query on PostgreSQL, the same pairs everywhere."""
    await storage.put_many([("nodes/a/000002", {"n": 2}), ("nodes/a/000001", {"n": 1}),
                            ("nodes/ab/000001", {"n": 9}), ("nodes/b/000001", {"n": 3})])
    assert await storage.items("nodes/a/") == [("nodes/a/000001", {"n": 1}),
                                               ("nodes/a/000002", {"n": 2})]
    assert [k for k, _ in await storage.items("nodes/a")] == [
        "nodes/a/000001", "nodes/a/000002", "nodes/ab/000001"]
    assert await storage.items("none/") == []


async def test_an_owner_whose_instance_was_taken_over_and_finished_stops(tmp_path):
    """The sweep's "committed, then ran again": owner A stalls past its TTL, B takes the
    instance over, finishes it and releases the lease; A's next renewal must not
    re-create the lease and carry on with its stale view (re-running B's nodes)."""
    import asyncio
    import time
    from collections import Counter

    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder
    from lion_nb.state import StateMachineManager

    storage = SqliteStorage(tmp_path / "s.db")
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(lease_ttl=0.6))
    gate, ran = asyncio.Event(), Counter()

    async def step(ctx):
        ran[ctx.node_name] += 1
        if ctx.node_name == "s0":
            await gate.wait()
        return {"n": 1}

    ex.add_handler("step", step)
    a, b = Node("s0", handler="step"), Node("s1", handler="step")
    wf = WorkflowBuilder("two").add_nodes(a, b).connect(a, b).build()
    try:
        await ex.start()
        iid = await ex.execute_workflow(wf)
        while not ran["s0"]:
            await asyncio.sleep(0.01)
        # B, seeing A's lease as expired (a later clock), takes it, finishes, releases it.
        await storage.acquire_lease(f"leases/{iid}", "B", 0.6, time.time() + 10)
        await storage.release_lease(f"leases/{iid}", "B")
        await asyncio.sleep(0.5)  # A's renewals (every 0.2 s) find the lease gone
        gate.set()
        result = await ex.wait(iid, timeout=10)
    finally:
        await ex.stop()
        await storage.close()
    assert ran["s1"] == 0, "A carried on with an instance that is no longer its own"
    assert not result.succeeded
