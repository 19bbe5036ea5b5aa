"""SqliteStorage: the durable embedded default. One transaction per commit.

Records are checksummed envelopes (_records.py) in ``lion_records(key, body)``
(large ones in ``lion_large``, see ``_LAYOUT``).
The connection lives on one dedicated thread (_worker.py), so the event loop never
blocks on SQLite and SQLite only ever sees one thread. WAL mode, and
``synchronous=FULL`` by default: a ``put_many`` that returned survives power
loss. Leases are rows of the same table, so a fenced ``put_many`` checks its
lease inside its own ``BEGIN IMMEDIATE`` transaction and a stale owner's
commit is refused with LeaseError, never half applied.

Group commit (``group_commit_ms=``) lets concurrent ``put_many`` calls share
one transaction, hence one WAL fsync. Every caller's ``await`` still returns
only after the transaction holding its batch is durable, so nothing
acknowledged is ever lost; the price is latency (the first caller of a group
waits up to ``group_commit_ms`` for company) and a larger unit of loss on a
crash: every batch of the group in flight is lost together -- none of them was
acknowledged, so the executor re-runs those nodes. Batches are isolated by
savepoints: one caller's refused fence does not fail the others.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from ..errors import LeaseError, StateConfigError, StorageCorruptError, StorageError
from ._group_commit import GroupCommit
from ._records import DEFAULT_CODEC, RecordCodec
from ._storage import CALLER_WAITS, Record, Storage
from ._worker import Worker

__all__ = ["SqliteStorage"]

_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
T = TypeVar("T")
_Batch = tuple[dict[str, bytes], list[str], "tuple[str, str] | None"]


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (or None)."""
    while prefix:
        c = ord(prefix[-1]) + 1
        if c == 0xD800:  # surrogates do not encode to UTF-8; skip the block
            c = 0xE000
        if c <= 0x10FFFF:
            return prefix[:-1] + chr(c)
        prefix = prefix[:-1]
    return None


#: The current layout. Small records live whole in the ``WITHOUT ROWID`` table, so a
#: commit of a node record rewrites one B-tree page (a rowid table with a text key
#: rewrites two: the row and its key index). A record too large to fit in its page
#: (a definition document) would be read whole by every lookup that passes it there
#: (issue 21), so its row holds NULL and its body lives in ``lion_large``; the
#: triggers drop that body when the row is replaced by a small one or deleted.
_LAYOUT = (
    "CREATE TABLE IF NOT EXISTS lion_records (key TEXT PRIMARY KEY, body BLOB) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS lion_large (key TEXT PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS lion_large_replaced AFTER UPDATE OF body ON lion_records "
    "WHEN old.body IS NULL AND new.body IS NOT NULL "
    "BEGIN DELETE FROM lion_large WHERE key = old.key; END",
    "CREATE TRIGGER IF NOT EXISTS lion_large_deleted AFTER DELETE ON lion_records "
    "WHEN old.body IS NULL BEGIN DELETE FROM lion_large WHERE key = old.key; END",
)
_UPSERT = ("INSERT INTO lion_records VALUES (?, ?) "
           "ON CONFLICT(key) DO UPDATE SET body = excluded.body")
_UPSERT_LARGE = ("INSERT INTO lion_large VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET body = excluded.body")
_BODY = "coalesce(r.body, (SELECT body FROM lion_large WHERE key = r.key))"
_GET = f"SELECT {_BODY} FROM lion_records r WHERE key = ?"
_GET_SMALL = "SELECT body FROM lion_records WHERE key = ?"  # NULL if the body is large


def _inline_limit(conn: sqlite3.Connection) -> int:
    """Bytes of key + body that still fit in one ``lion_records`` cell (no overflow page)."""
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    # SQLite's largest local payload of an index-tree cell, less the record header.
    return (page - 12) * 64 // 255 - 23 - 16


def _prepare_layout(conn: sqlite3.Connection, limit: int) -> None:
    """Create the tables, or move a file of an older layout to this one in one transaction.

    Older files hold every record in ``lion_records(key, body NOT NULL)``, as a
    ``WITHOUT ROWID`` table (the first layout) or a rowid one (the second).
    """
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'lion_large'").fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "lion_large" not in names and "lion_records" in names:  # not moved meanwhile
            conn.execute("ALTER TABLE lion_records RENAME TO lion_records_old")
            big = "length(CAST(key AS BLOB)) + length(body) > ?"
            for sql in _LAYOUT[:2]:
                conn.execute(sql)
            conn.execute(f"INSERT INTO lion_large SELECT key, body FROM lion_records_old "
                         f"WHERE {big}", (limit,))
            conn.execute(f"INSERT INTO lion_records SELECT key, CASE WHEN {big} THEN NULL "
                         f"ELSE body END FROM lion_records_old", (limit,))
            conn.execute("DROP TABLE lion_records_old")
        for sql in _LAYOUT:
            conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _wal_mode(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the file in WAL mode, waiting up to ``busy_timeout`` for other processes.

    Opened while another process closes its last connection to the file (which
    checkpoints and removes the WAL under an exclusive lock), this pragma can
    answer "database is locked" at once, without SQLite's busy handler: seen in
    tests/engine/test_cache.py with two writers. So it is retried here.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


def _close_db(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:  # another connection is reading: closing still checkpoints
        pass
    conn.close()


class SqliteStorage(Storage):
    """Durable storage in one SQLite database (see the module docstring)."""

    durable = True

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 busy_timeout: float = 5.0, group_commit_ms: float | None = None,
                 codec: RecordCodec | None = None) -> None:
        if str(synchronous).upper() not in _SYNC_MODES:
            raise StateConfigError(f"synchronous must be one of {_SYNC_MODES}, "
                                   f"not {synchronous!r}", field="synchronous")
        if group_commit_ms is not None and group_commit_ms < 0:
            raise StateConfigError(f"group_commit_ms must be >= 0, not {group_commit_ms!r}",
                                   field="group_commit_ms")
        self.path = str(path)
        self.codec = codec or DEFAULT_CODEC
        self.busy_timeout = busy_timeout
        self.group_commit_ms = group_commit_ms
        self._group: GroupCommit[_Batch] = GroupCommit(self._commit_group,
                                                      group_commit_ms or 0.0)
        self._closed = False
        self._fence_seen: tuple[str, str, bytes] | None = None  # last lease that passed
        self._worker = Worker(f"lion-sqlite {self.path}")
        try:
            self._conn = self._worker.call_sync(self._connect, str(synchronous).upper())
            # One cursor for the writes: Connection.execute makes a new one per statement,
            # a tenth of a statement's cost (issue 21).
            self._cursor = self._conn.cursor()
        except BaseException:
            self._worker.stop()
            raise
        self.durable = self.path != ":memory:"
        # Dropped without close() (common in notebooks): still close it when collected.
        self._finalizer = weakref.finalize(self, self._worker.stop,
                                           functools.partial(_close_db, self._conn))

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r})"

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        try:
            if self.path != ":memory:":
                # Owner-only: records may hold results and grants. SQLite gives its -wal
                # and -shm files the database file's mode, so creating it first suffices.
                Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            try:
                _wal_mode(conn, self.busy_timeout)
                conn.execute(f"PRAGMA synchronous={synchronous}")
                self._inline = _inline_limit(conn)
                _prepare_layout(conn, self._inline)
                # A damaged page can change a key or lose a row without any record's
                # checksum seeing it: check the file's structure before trusting it.
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise StorageCorruptError(
                        f"database {self.path!r} fails SQLite's integrity check: "
                        f"{'; '.join(map(str, problems))}", key=None, path=self.path)
            except BaseException:
                conn.close()
                raise
        except StorageError:
            raise
        except (OSError, sqlite3.Error) as exc:
            mapped = self._storage_error(exc, None) if isinstance(exc, sqlite3.Error) else None
            if isinstance(mapped, StorageCorruptError):
                raise mapped from exc
            raise StorageError(f"cannot open database {self.path!r}: {exc}", key=None,
                               path=self.path) from exc
        return conn

    async def _run(self, fn: Callable[..., Any], *args: Any, here: bool = False) -> Any:
        if self._closed:
            raise StorageError(f"{self!r} is closed", key=None, path=self.path)
        return await self._worker.call(fn, *args, here=here)

    # --- the async interface ------------------------------------------------------

    async def put_many(self, items: Sequence[tuple[str, Record]], *,
                       deletes: Iterable[str] = (),
                       fence: tuple[str, str] | None = None) -> None:
        """Write ``items`` and delete ``deletes`` in one durable transaction."""
        encode = self.codec.encode
        puts = {k: encode(k, v) for k, v in items}  # bad records fail here
        batch: _Batch = (puts, [k for k in deletes if k not in puts] if deletes else [], fence)
        if self.group_commit_ms is not None:
            await self._group.submit(batch)
            return
        if self._closed:
            raise StorageError(f"{self!r} is closed", key=None, path=self.path)
        error = (await self._worker.call(self._commit_sync, [batch],
                                         here=CALLER_WAITS.get()))[0]
        if error is not None:
            raise error

    async def get(self, key: str) -> Record | None:
        """The record at ``key`` (verified and migrated), or None."""
        raw = await self._run(self._get_sync, key)
        return None if raw is None else self.codec.decode(raw, key)[1]

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """The records at ``keys`` (None where absent), read in one call to the thread."""
        raws = await self._run(self._get_many_sync, list(keys))
        return [None if raw is None else self.codec.decode(raw, k)[1]
                for k, raw in zip(keys, raws)]

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""
        return await self._run(self._keys_sync, prefix)

    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Take (or renew) the lease at ``key``; LeaseError if another live owner has it."""
        await self._run(self._lease_sync, key, owner, ttl, now)

    async def close(self) -> None:
        """Finish pending group commits, then close the connection and its thread."""
        if self._closed:
            return
        await self._group.drain()
        self._closed = True
        await self._worker.call(int)  # let calls already queued finish first
        self._finalizer()  # checkpoints and closes the connection on its thread, stops it
        # Returns once the WAL is folded into the database file and the thread is gone,
        # so a copy of the file taken right after close() holds everything.
        self._worker.join()

    async def _commit_group(self, batches: list[_Batch]) -> list[Exception | None]:
        return await self._run(self._commit_sync, batches)

    # --- synchronous work (the connection's own thread) -------------------------------

    def _atomically(self, work: Callable[[sqlite3.Cursor], T],
                    key: Callable[[], str | None]) -> T:
        """``BEGIN IMMEDIATE``, ``work(cursor)``, ``COMMIT``; rolled back on any error,
        SQLite's mapped (naming ``key()``). Not a generator-based context manager: this
        runs once per node commit, where one costs ~1.5 µs (issue 21)."""
        cur = self._cursor
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                result = work(cur)
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._storage_error(exc, key()) from exc
        return result

    def _commit_sync(self, batches: list[_Batch]) -> list[Exception | None]:
        """One transaction for all batches; per-batch LeaseErrors roll back only that batch."""
        try:
            return self._atomically(
                functools.partial(self._write_batches, batches),
                lambda: next((k for p, d, _ in batches for k in (*p, *d)), None))
        except LeaseError as exc:
            return [exc]

    def _write_batches(self, batches: list[_Batch], conn: sqlite3.Cursor
                       ) -> list[Exception | None]:
        errors: list[Exception | None] = []
        isolate = len(batches) > 1
        for puts, dels, fence in batches:
            if isolate:
                conn.execute("SAVEPOINT batch")
            try:
                self._write(conn, puts, dels, fence)
            except LeaseError as exc:
                if not isolate:
                    raise
                conn.execute("ROLLBACK TO batch")
                errors.append(exc)
            else:
                errors.append(None)
            if isolate:
                conn.execute("RELEASE batch")
        self._step("before_commit")
        return errors

    def _write(self, conn: sqlite3.Cursor, puts: dict[str, bytes], dels: list[str],
               fence: tuple[str, str] | None) -> None:
        if fence is not None:
            self._check_fence(*fence)
        if dels:
            conn.executemany("DELETE FROM lion_records WHERE key = ?", [(k,) for k in dels])
        limit = self._inline
        large = [(k, b) for k, b in puts.items() if len(b) + len(k) * 4 > limit
                 and len(b) + len(k.encode()) > limit]
        if large:
            conn.executemany(_UPSERT_LARGE, large)
            conn.executemany(_UPSERT, [(k, None) for k, _ in large])
            puts = {k: b for k, b in puts.items() if len(b) + len(k.encode()) <= limit}
        if len(puts) == 1:
            conn.execute(_UPSERT, next(iter(puts.items())))
        elif puts:
            conn.executemany(_UPSERT, puts.items())

    def _check_fence(self, lease_key: str, owner: str) -> None:
        # Every commit of an instance checks the same lease, unchanged between renewals:
        # the bytes verified last time need no second checksum and parse.
        seen = self._fence_seen
        if seen is not None and seen[0] == lease_key and seen[1] == owner:
            row = self._cursor.execute(_GET_SMALL, (lease_key,)).fetchone()
            if row is not None and row[0] == seen[2]:
                return
        raw = self._get_sync(lease_key)
        lease = None if raw is None else self.codec.decode(raw, lease_key)[1]
        if raw is None or lease is None or lease.get("owner") != owner:
            raise LeaseError(f"lease {lease_key!r} is not held by {owner!r}",
                             key=lease_key, owner=owner)
        self._fence_seen = (lease_key, owner, raw)

    def _lease_sync(self, key: str, owner: str, ttl: float, now: float) -> None:
        def take(conn: sqlite3.Cursor) -> None:
            cur = self._decode_row(key)
            if cur is not None and cur.get("owner") != owner and cur.get("expires", 0) > now:
                raise LeaseError(f"{key!r} is leased by {cur['owner']!r}", key=key,
                                 owner=cur["owner"])
            self._write(conn, {key: self.codec.encode(
                key, {"owner": owner, "expires": now + ttl})}, [], None)
        self._atomically(take, lambda: key)

    def _decode_row(self, key: str) -> Record | None:
        raw = self._get_sync(key)
        return None if raw is None else self.codec.decode(raw, key)[1]

    def _get_sync(self, key: str) -> bytes | None:
        try:
            row = self._conn.execute(_GET, (key,)).fetchone()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._storage_error(exc, key) from exc
        return None if row is None else bytes(row[0])

    def _get_many_sync(self, keys: list[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        try:
            for at in range(0, len(keys), 500):  # under SQLite's bound-parameter limit
                chunk = keys[at:at + 500]
                sql = (f"SELECT key, {_BODY} FROM lion_records r WHERE key IN "
                       f"({','.join('?' * len(chunk))})")
                found.update((k, bytes(b)) for k, b in self._conn.execute(sql, chunk))
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._storage_error(exc, keys[0] if keys else None) from exc
        return [found.get(k) for k in keys]

    def _keys_sync(self, prefix: str) -> list[str]:
        end = _prefix_end(prefix)
        sql, args = "SELECT key FROM lion_records WHERE key >= ?", [prefix]
        if end is not None:
            sql, args = sql + " AND key < ?", [prefix, end]
        try:
            # BINARY collation orders UTF-8 bytes, which is Python's code-point order.
            return [r[0] for r in self._conn.execute(sql + " ORDER BY key", args)]
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._storage_error(exc, prefix) from exc

    def _storage_error(self, exc: sqlite3.Error | UnicodeDecodeError,
                       key: str | None) -> StorageError:
        text = str(exc)
        if (isinstance(exc, UnicodeDecodeError) or "malformed" in text
                or "not a database" in text or "decode" in text):
            return StorageCorruptError(f"database {self.path!r} is damaged: {text}", key=key,
                                       path=self.path)
        if "locked" in text or "busy" in text:
            text = (f"database {self.path!r} is locked by another connection "
                    f"(waited {self.busy_timeout:g}s; raise busy_timeout= or find the "
                    f"process holding a write transaction)")
        else:
            text = f"database {self.path!r}: {text}"
        return StorageError(text, key=key, path=self.path)
