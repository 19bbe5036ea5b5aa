"""Bad input and crashes: corrupt files, versions, unwritable paths, locks, torn batches."""

import asyncio
import os
import sqlite3

import pytest

from lion_nb.errors import CheckpointCorruptError, CheckpointVersionError, StorageError
from lion_nb.state import FileStorage, RecordCodec, SqliteStorage, key_to_filename


class Crash(BaseException):
    """Stands in for the process dying: nothing below catches a BaseException."""


def crash_at(step):
    def hook(name):
        if name == step:
            raise Crash(name)
    return hook


# --- corrupt records ----------------------------------------------------------------

def _rewrite(path, change):
    data = path.read_bytes()
    path.write_bytes(change(data))


@pytest.mark.parametrize("change, message", [
    (lambda b: b[:40] + bytes([b[40] ^ 0x20]) + b[41:], "checksum"),
    (lambda b: b[:-7], "truncated"),
    (lambda b: b"", "empty"),
    (lambda b: b[:100] + bytes([b[100] ^ 0x01]) + b[101:], "checksum"),
])
async def test_corrupt_record_file_raises_naming_key_and_file(tmp_path, change, message):
    store = FileStorage(tmp_path)
    await store.put("runs/1", {"result": "x" * 50})
    path = tmp_path / key_to_filename("runs/1")
    _rewrite(path, change)
    with pytest.raises(CheckpointCorruptError, match=message) as info:
        await store.get("runs/1")
    assert info.value.key == "runs/1"
    assert str(path) in str(info.value)
    await store.close()


async def test_record_file_copied_under_another_name_is_corrupt(tmp_path):
    store = FileStorage(tmp_path)
    await store.put("a", {"v": 1})
    (tmp_path / key_to_filename("b")).write_bytes((tmp_path / key_to_filename("a")).read_bytes())
    with pytest.raises(CheckpointCorruptError, match="'b' holds the record of key 'a'"):
        await store.get("b")


async def test_flipped_byte_in_sqlite_blob_is_corrupt(tmp_path):
    db = tmp_path / "s.db"
    store = SqliteStorage(db)
    await store.put("runs/1", {"result": 42})
    other = sqlite3.connect(db)
    body = bytearray(other.execute("SELECT body FROM lion_records").fetchone()[0])
    body[-5] ^= 0x04
    other.execute("UPDATE lion_records SET body = ?", (bytes(body),))
    other.commit()
    other.close()
    with pytest.raises(CheckpointCorruptError, match="'runs/1'") as info:
        await store.get("runs/1")
    assert info.value.key == "runs/1"
    await store.close()


# --- versions ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["file", "sqlite"])
async def test_future_version_and_migration_through_a_backend(tmp_path, backend):
    def open_with(codec):
        if backend == "file":
            return FileStorage(tmp_path / "f", codec=codec)
        return SqliteStorage(tmp_path / "s.db", codec=codec)

    v2 = open_with(RecordCodec(version=2))
    await v2.put("new", {"x": 1})
    await v2.close()
    v1 = open_with(RecordCodec(version=1))
    await v1.put("old", {"name": "a"})
    with pytest.raises(CheckpointVersionError) as info:
        await v1.get("new")
    assert (info.value.key, info.value.version) == ("new", 2)
    await v1.close()

    codec = RecordCodec(version=2)
    codec.migrations.register(1, lambda d: {"title": d["name"]})
    v2 = open_with(codec)
    assert await v2.get("old") == {"title": "a"}
    assert await v2.get("new") == {"x": 1}
    await v2.close()


# --- paths and locks -----------------------------------------------------------------

def test_directory_under_a_regular_file_is_a_storage_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        FileStorage(blocker / "checkpoints")
    assert str(blocker / "checkpoints") in str(info.value)
    assert isinstance(info.value, OSError)
    with pytest.raises(StorageError, match="cannot open database"):
        SqliteStorage(blocker / "state.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_a_storage_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=str(ro)):
            FileStorage(ro)
    finally:
        ro.chmod(0o700)


async def test_locked_database_is_a_storage_error_naming_it(tmp_path):
    db = tmp_path / "busy.db"
    store = SqliteStorage(db, busy_timeout=0.1)
    await store.put("a", {"v": 1})
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        with pytest.raises(StorageError, match="is locked") as info:
            await store.put("a", {"v": 2})
        assert str(db) in str(info.value) and info.value.key == "a"
        assert await store.get("a") == {"v": 1}  # readers are not blocked under WAL
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.put("a", {"v": 3})  # and the storage works once the lock is gone
    assert await store.get("a") == {"v": 3}
    await store.close()


async def test_closed_storage_refuses_calls(tmp_path):
    for store in (FileStorage(tmp_path / "f"), SqliteStorage(tmp_path / "s.db")):
        await store.close()
        with pytest.raises(StorageError, match="closed"):
            await store.get("a")


# --- torn batches ---------------------------------------------------------------------

async def test_file_batch_crash_after_commit_rolls_forward_on_reopen(tmp_path):
    store = FileStorage(tmp_path)
    await store.put_many([("a", {"v": 1}), ("gone", {"v": 1})])
    store.step_hook = crash_at("record_applied")  # dies after the first record file
    with pytest.raises(Crash):
        await store.put_many([("a", {"v": 2}), ("b", {"v": 2})], deletes=["gone"])
    assert not (tmp_path / key_to_filename("b")).exists()  # on disk: half applied
    reopened = FileStorage(tmp_path)
    assert await reopened.keys() == ["a", "b"]
    assert [await reopened.get("a"), await reopened.get("b")] == [{"v": 2}, {"v": 2}]
    assert not (tmp_path / ".journal").exists()


async def test_torn_record_of_a_committed_batch_is_rewritten_from_the_journal(tmp_path):
    store = FileStorage(tmp_path)
    await store.put("a", {"v": 1})
    store.step_hook = crash_at("record_applied")
    with pytest.raises(Crash):
        await store.put_many([("a", {"v": 2, "pad": "x" * 100}), ("b", {"v": 2})])
    _rewrite(tmp_path / key_to_filename("a"), lambda b: b[:30])  # power cut mid-write
    reopened = FileStorage(tmp_path)
    assert await reopened.get("a") == {"v": 2, "pad": "x" * 100}
    assert await reopened.get("b") == {"v": 2}


async def test_file_batch_crash_before_commit_leaves_nothing(tmp_path, monkeypatch):
    store = FileStorage(tmp_path)
    await store.put("a", {"v": 1})
    real_replace = os.replace

    def dying_replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".journal"):
            raise Crash("before the journal's rename")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(Crash):
        await store.put_many([("a", {"v": 2}), ("b", {"v": 2})])
    monkeypatch.setattr(os, "replace", real_replace)
    assert any(n.startswith(".tmp-") for n in os.listdir(tmp_path))
    reopened = FileStorage(tmp_path)
    assert await reopened.keys() == ["a"]
    assert await reopened.get("a") == {"v": 1}
    assert not any(n.startswith(".tmp-") for n in os.listdir(tmp_path))


async def test_another_reader_never_sees_a_half_applied_batch(tmp_path):
    writer, reader = FileStorage(tmp_path), FileStorage(tmp_path)
    await reader.keys()  # the reader is already open when the writer dies
    writer.step_hook = crash_at("record_applied")
    with pytest.raises(Crash):
        await writer.put_many([("a", {"v": 2}), ("b", {"v": 2})])
    assert await reader.get("b") == {"v": 2}  # it rolled the journal forward first


async def test_corrupt_journal_is_reported_not_ignored(tmp_path):
    store = FileStorage(tmp_path)
    store.step_hook = crash_at("journal_committed")
    with pytest.raises(Crash):
        await store.put_many([("a", {}), ("b", {})])
    _rewrite(tmp_path / ".journal", lambda b: b[:-3])
    with pytest.raises(CheckpointCorruptError, match="journal"):
        await FileStorage(tmp_path).get("a")


async def test_sqlite_batch_crash_before_commit_leaves_nothing(tmp_path):
    store = SqliteStorage(tmp_path / "s.db")
    await store.put("a", {"v": 1})
    store.step_hook = crash_at("before_commit")
    with pytest.raises(Crash):
        await store.put_many([("a", {"v": 2}), ("b", {"v": 2})])
    await store.close()
    reopened = SqliteStorage(tmp_path / "s.db")
    assert await reopened.keys() == ["a"] and await reopened.get("a") == {"v": 1}
    await reopened.close()


# --- group commit ------------------------------------------------------------------------

async def test_group_commit_batches_callers_and_isolates_a_refused_fence(tmp_path):
    store = SqliteStorage(tmp_path / "g.db", group_commit_ms=5)
    await store.acquire_lease("lease", "B", ttl=60, now=0)
    transactions = []
    real = store._commit_sync

    def counting(batches):
        transactions.append(len(batches))
        return real(batches)

    store._commit_sync = counting
    calls = [store.put_many([(f"k/{i}", {"i": i})]) for i in range(30)]
    calls.append(store.put_many([("stale", {})], fence=("lease", "A")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r).__name__ for r in results[:30]] == ["NoneType"] * 30
    assert type(results[30]).__name__ == "LeaseError"
    assert len(await store.keys("k/")) == 30 and await store.get("stale") is None
    assert sum(transactions) == 31 and len(transactions) < 31
    await store.close()
    reopened = SqliteStorage(tmp_path / "g.db")
    assert len(await reopened.keys("k/")) == 30  # acknowledged means durable
    await reopened.close()


# --- resources ----------------------------------------------------------------------------

async def test_unclosed_storages_free_their_thread_when_collected(tmp_path):
    import gc
    import threading

    def lion_threads():
        return [t for t in threading.enumerate() if t.name.startswith("lion-")]

    before = len(lion_threads())
    for i in range(5):
        f, s = FileStorage(tmp_path / "f"), SqliteStorage(tmp_path / f"s{i}.db")
        await f.put("a", {})
        await s.put("a", {})
    del f, s
    gc.collect()
    for _ in range(1000):  # a loaded machine may take a while to end threads
        if len(lion_threads()) <= before:
            break
        await asyncio.sleep(0.01)
    assert len(lion_threads()) <= before


# --- permissions (issue 15): records may hold results and grants -------------------------

async def test_storage_files_are_owner_only(tmp_path):
    old = os.umask(0o022)  # the usual umask: without explicit modes files would be 0644
    try:
        files = FileStorage(tmp_path / "files")
        await files.put_many([("a", {}), ("b", {})])
        await files.put("c", {})
        await files.close()
        db = SqliteStorage(tmp_path / "db" / "state.db")
        await db.put("a", {})
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "db").iterdir()}
        await db.close()
    finally:
        os.umask(old)
    assert (tmp_path / "files").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "files").iterdir()} == {
        ".lock": 0o600, "a.rec": 0o600, "b.rec": 0o600, "c.rec": 0o600}
    assert modes["state.db"] == 0o600 and set(modes.values()) == {0o600}, modes


# --- close() means on disk (issue 14) -------------------------------------------------------

async def test_a_copy_of_the_database_taken_right_after_close_holds_everything(tmp_path):
    import shutil
    import threading
    for round_ in range(10):
        path = tmp_path / f"r{round_}.db"
        store = SqliteStorage(path)
        await asyncio.gather(*(store.put(f"k/{i}", {"i": i}) for i in range(50)))
        await store.close()
        assert not any(t.name == f"lion-sqlite {path}" for t in threading.enumerate())
        copy = tmp_path / f"copy{round_}.db"
        shutil.copyfile(path, copy)  # the main file alone: no -wal beside it
        reopened = SqliteStorage(copy)
        try:
            assert len(await reopened.keys("k/")) == 50
        finally:
            await reopened.close()


async def test_file_storage_close_ends_its_thread(tmp_path):
    import threading
    store = FileStorage(tmp_path)
    await store.put_many([("a", {}), ("b", {})])
    await store.close()
    assert not any(t.name == f"lion-files {tmp_path}" for t in threading.enumerate())


async def test_stray_files_in_a_file_storage_are_skipped_and_reported(tmp_path, caplog):
    store = FileStorage(tmp_path)
    await store.put_many([("instances/a", {}), ("b", {})])
    for stray in ["notes%ZZ.rec", "x%C3.rec", "UPPER.rec", "readme.txt", "%4.rec"]:
        (tmp_path / stray).write_text("not mine")
    try:
        assert await store.keys() == ["b", "instances/a"]
        assert await store.keys("instances/") == ["instances/a"]
        assert store.foreign_files == {"notes%ZZ.rec", "x%C3.rec", "UPPER.rec", "readme.txt",
                                       "%4.rec"}
        assert "notes%ZZ.rec" in caplog.text
        caplog.clear()
        await store.keys()
        assert "notes%ZZ.rec" not in caplog.text  # reported once, not on every listing
    finally:
        await store.close()


# --- a damaged SQLite file is named, never a raw sqlite3 or decode error (issue 14) -----------

async def test_a_key_that_is_not_utf8_is_a_storage_corrupt_error(tmp_path):
    from lion_nb.errors import StorageCorruptError
    store = SqliteStorage(tmp_path / "s.db")
    await store.put("a", {})
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("INSERT INTO lion_records VALUES (CAST(x'ff41' AS TEXT), x'00')")
    store = SqliteStorage(tmp_path / "s.db")
    try:
        with pytest.raises(StorageCorruptError, match="damaged"):
            await store.keys()
    finally:
        await store.close()


async def test_a_damaged_sqlite_file_is_refused_when_opened(tmp_path):
    from lion_nb.errors import CheckpointCorruptError, StorageCorruptError
    path = tmp_path / "s.db"
    store = SqliteStorage(path)
    await store.put_many([(f"k/{i:04d}", {"i": i, "pad": "x" * 200}) for i in range(400)])
    await store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, 2 * page + 64):  # garble an interior b-tree page header
        data[offset] ^= 0xA5
    path.write_bytes(bytes(data))
    try:
        store = SqliteStorage(path)
    except StorageCorruptError as exc:
        assert isinstance(exc, CheckpointCorruptError) and exc.path == str(path)
    else:
        try:  # if the garbled page went unnoticed at open, reading must still name it
            with pytest.raises(CheckpointCorruptError):
                for key in await store.keys():
                    await store.get(key)
        finally:
            await store.close()


@pytest.mark.parametrize("old_layout", ["WITHOUT ROWID", ""])
async def test_a_file_of_an_older_layout_is_upgraded_in_place(tmp_path, old_layout):
    """Both earlier layouts (every record in one table) open, read and upgrade."""
    path = tmp_path / "old.db"
    codec = RecordCodec()
    small, large = {"v": 1}, {"document": "x" * 50_000}
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE lion_records (key TEXT PRIMARY KEY, body BLOB NOT NULL) "
                     + old_layout)
        conn.execute("INSERT INTO lion_records VALUES ('a', ?), ('big', ?)",
                     (codec.encode("a", small), codec.encode("big", large)))
    store = SqliteStorage(path)
    try:
        assert await store.get("a") == small and await store.get("big") == large
        assert await store.keys() == ["a", "big"]
        await store.put_many([("big", {"v": 3}), ("huge", large)])  # large -> small
    finally:
        await store.close()
    store = SqliteStorage(path)  # a second open leaves the upgraded file as it is
    try:
        assert await store.get_many(["a", "big", "huge"]) == [small, {"v": 3}, large]
        await store.delete("huge")
        assert await store.keys() == ["a", "big"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'lion_records'").fetchone()
        # No body of a replaced or deleted large record is left behind.
        assert conn.execute("SELECT count(*) FROM lion_large").fetchone() == (0,)
    assert "WITHOUT ROWID" in sql[0].upper()


async def test_a_large_record_lives_apart_and_small_ones_stay_one_page_per_commit(tmp_path):
    """A node commit rewrites one page of the hot table; a large record never sits in it."""
    path = tmp_path / "s.db"
    store = SqliteStorage(path)
    try:
        await store.put("definitions/run", {"document": "y" * 100_000})
        await store.put("nodes/run/000001", {"state": "succeeded", "output": {"rows": 1}})
        with sqlite3.connect(path) as conn:
            rows = dict(conn.execute("SELECT key, body IS NULL FROM lion_records"))
            assert rows == {"definitions/run": 1, "nodes/run/000001": 0}
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL
        await store.put("nodes/run/000002", {"state": "succeeded", "output": {"rows": 2}})
        wal = os.path.getsize(f"{path}-wal")
        assert (wal - 32) // (4096 + 24) == 1  # WAL frames written by that commit: one page
        assert (await store.get("definitions/run"))["document"] == "y" * 100_000
    finally:
        await store.close()
