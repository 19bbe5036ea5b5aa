"""Behaviour every Storage backend shares: round trips, atomic batches, leases."""

import asyncio
import re
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lion_nb.errors import LeaseError, SerializationError
from lion_nb.state import (FileStorage, MemoryStorage, PostgresStorage, SqliteStorage,
                           filename_to_key, key_to_filename)

BACKENDS = ["memory", "file", "sqlite", "sqlite_group", "postgres"]


def make(kind, root, dsn=None):
    if kind == "postgres":
        return PostgresStorage(dsn)
    if kind == "memory":
        return MemoryStorage()
    if kind == "file":
        return FileStorage(f"{root}/files")
    if kind == "sqlite":
        return SqliteStorage(f"{root}/state.db")
    return SqliteStorage(f"{root}/group.db", group_commit_ms=1)


@pytest.fixture(params=BACKENDS)
async def storage(request, tmp_path):
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    s = make(request.param, tmp_path, dsn)
    yield s
    await s.close()


async def test_put_get_delete_round_trip(storage):
    await storage.put("a", {"x": [1, 2, {"y": None}]})
    assert await storage.get("a") == {"x": [1, 2, {"y": None}]}
    assert await storage.get("missing") is None
    await storage.delete("a")
    assert await storage.get("a") is None
    await storage.delete("a")  # deleting twice is fine


async def test_get_many_reads_records_in_order_with_none_for_absent_keys(storage):
    keys = [f"k/{i:04d}" for i in range(1200)]  # more than one SQL statement's worth
    await storage.put_many([(k, {"i": i}) for i, k in enumerate(keys)])
    asked = ["k/0003", "missing", *keys[::-1]]
    got = await storage.get_many(asked)
    assert got[:2] == [{"i": 3}, None]
    assert got[2:] == [{"i": i} for i in range(1199, -1, -1)]
    assert await storage.get_many([]) == []


async def test_returned_records_are_copies(storage):
    rec = {"x": [1]}
    await storage.put("a", rec)
    rec["x"].append(2)
    got = await storage.get("a")
    got["x"].append(3)
    assert await storage.get("a") == {"x": [1]}


async def test_keys_are_sorted_and_filtered_by_prefix(storage):
    for k in ["runs/b", "runs/a", "runsX", "defs/1", "Runs/c", "runs/ä"]:
        await storage.put(k, {})
    assert await storage.keys("runs/") == ["runs/a", "runs/b", "runs/ä"]
    assert await storage.keys() == sorted(["runs/b", "runs/a", "runsX", "defs/1", "Runs/c",
                                           "runs/ä"])
    assert await storage.keys("nothing") == []


async def test_put_many_applies_deletes_then_writes(storage):
    await storage.put_many([("a", {"v": 1}), ("b", {"v": 1}), ("c", {"v": 1})])
    await storage.put_many([("a", {"v": 2}), ("d", {"v": 2})], deletes=["b", "a"])
    assert await storage.keys() == ["a", "c", "d"]
    assert await storage.get("a") == {"v": 2}


async def test_second_owner_is_refused_until_the_lease_expires(storage):
    await storage.acquire_lease("lease/run-1", "A", ttl=10, now=100)
    await storage.acquire_lease("lease/run-1", "A", ttl=10, now=105)  # renew
    with pytest.raises(LeaseError) as info:
        await storage.acquire_lease("lease/run-1", "B", ttl=10, now=110)
    assert info.value.owner == "A"
    await storage.acquire_lease("lease/run-1", "B", ttl=10, now=116)  # A's expired at 115


async def test_stale_owner_fenced_commit_is_refused_and_writes_nothing(storage):
    await storage.acquire_lease("lease/run-1", "A", ttl=5, now=0)
    await storage.put_many([("r/1", {"v": "A"})], fence=("lease/run-1", "A"))
    await storage.acquire_lease("lease/run-1", "B", ttl=5, now=10)  # A went quiet
    with pytest.raises(LeaseError) as info:
        await storage.put_many([("r/1", {"v": "stale"}), ("r/2", {})], deletes=["r/1"],
                               fence=("lease/run-1", "A"))
    assert info.value.key == "lease/run-1"
    assert await storage.get("r/1") == {"v": "A"}
    assert await storage.get("r/2") is None
    await storage.put_many([("r/1", {"v": "B"})], fence=("lease/run-1", "B"))
    assert await storage.get("r/1") == {"v": "B"}


async def test_fence_on_a_missing_lease_is_refused(storage):
    with pytest.raises(LeaseError):
        await storage.put_many([("x", {})], fence=("lease/none", "A"))


async def test_release_lease_lets_another_owner_in(storage):
    await storage.acquire_lease("l", "A", ttl=100, now=0)
    await storage.release_lease("l", "B")  # not B's: no-op
    with pytest.raises(LeaseError):
        await storage.acquire_lease("l", "B", ttl=100, now=1)
    await storage.release_lease("l", "A")
    await storage.acquire_lease("l", "B", ttl=100, now=1)


async def test_concurrent_writers_all_land(storage):
    await asyncio.gather(*(storage.put_many([(f"k/{i}", {"i": i}), (f"j/{i}", {"i": i})])
                           for i in range(40)))
    assert len(await storage.keys("k/")) == 40
    assert await storage.get("j/39") == {"i": 39}


@pytest.mark.parametrize("kind", ["file", "sqlite", "sqlite_group", "postgres"])
async def test_durable_backends_keep_records_across_reopen(tmp_path, request, kind):
    dsn = request.getfixturevalue("pg_dsn") if kind == "postgres" else None
    s = make(kind, tmp_path, dsn)
    await s.put_many([("a", {"v": 1}), ("b", {"v": 2})])
    await s.close()
    s = make(kind, tmp_path, dsn)
    assert s.durable
    assert [await s.get("a"), await s.get("b")] == [{"v": 1}, {"v": 2}]
    await s.close()


@pytest.mark.parametrize("key", ["plain", "a/b/c", "UPPER", "..", ".hidden", "sp ace%2F",
                                 "ünï©ødé", "x" * 300, "", "a\nb", "=eq"])
def test_key_to_filename_is_safe_and_reversible(key):
    name = key_to_filename(key)
    assert "/" not in name and not name.startswith(".") and len(name) < 255
    literal = re.sub("%[0-9A-F]{2}", "", name)
    assert literal == literal.lower()  # so case-insensitive filesystems cannot merge two keys
    back = filename_to_key(name)
    assert back == key or (back is None and name.startswith("="))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
records = st.dictionaries(st.text(), json_values, max_size=5)


@pytest.mark.parametrize("kind", BACKENDS)
def test_any_json_record_round_trips_under_any_key(kind, request):
    root = tempfile.mkdtemp()
    store = make(kind, root, request.getfixturevalue("pg_dsn") if kind == "postgres" else None)

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=st.text(min_size=0, max_size=80), record=records)
    def check(key, record):
        async def go():
            await store.put_many([(key, record)])
            assert await store.get(key) == record
            assert key in await store.keys(key)
        asyncio.run(go())

    check()
    asyncio.run(store.close())


async def test_claim_takes_each_queued_record_once_with_its_lease(storage):
    for i in range(5):
        await storage.put(f"queue/{i}", {"n": i, "lease": f"leases/{i}"})
    await storage.put("queuex", {"lease": "leases/x"})  # not under the prefix
    await storage.acquire_lease("leases/0", "other", ttl=10, now=0)  # live: skipped
    claims = await asyncio.gather(*(storage.claim("queue/", f"w{j}", 10, 1) for j in range(8)))
    taken = sorted(rec["n"] for c in claims for _, rec in c)
    assert taken == [1, 2, 3, 4]
    assert await storage.keys("queue/") == ["queue/0"]
    owners = {(await storage.get(f"leases/{i}"))["owner"] for i in range(1, 5)}
    assert len(owners) == 4  # every claimer that won holds its record's lease
    assert await storage.claim("queue/", "w9", 10, 5) == []  # other's lease still live
    [(key, record)] = await storage.claim("queue/", "w9", 10, 11)  # expired: claimable
    assert key == "queue/0" and record["n"] == 0
    assert await storage.claim("queue/", "w9", 10, 11) == []


async def test_claim_takes_several_at_once_in_key_order(storage):
    for i in range(6):
        await storage.put(f"queue/{i}", {"n": i, "lease": f"leases/{i}"})
    first = await storage.claim("queue/", "w", 10, 0, limit=4)
    assert [rec["n"] for _, rec in first] == [0, 1, 2, 3]
    assert [rec["n"] for _, rec in await storage.claim("queue/", "v", 10, 0, limit=4)] == [4, 5]


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}},
                                 {"x": object()}, ["not", "a", "dict"]])
async def test_every_backend_refuses_the_same_non_json_records(storage, bad):
    await storage.put("a", {"v": 1})
    with pytest.raises(SerializationError):
        await storage.put_many([("b", {"ok": True}), ("a", bad)])
    assert await storage.get("a") == {"v": 1} and await storage.get("b") is None


async def test_every_backend_returns_what_json_gives_back(storage):
    await storage.put("a", {"t": (1, 2), "nested": {"z": [None, True, 1.5]}})
    assert await storage.get("a") == {"t": [1, 2], "nested": {"z": [None, True, 1.5]}}
