"""PostgresStorage: durable state shared by executors on several machines.

Records are the same checksummed envelopes as SQLite's and files' (_records.py),
in ``lion_records(key bytea, body bytea)``; keys are stored as their UTF-8 bytes so
that the database orders them as Python does (and any key, NUL included, fits).
``lion_meta`` holds the table layout's schema version, checked on connect.
Leases also keep their expiry in the ``expires`` column (NULL for every other
record), under a partial index, so ``expired_leases`` is an index range scan
however many instances run. A version-1 database (no such column) is upgraded
in place on connect.

One connection, on one dedicated thread (_worker.py), as for SQLite: the event
loop never blocks on the network, and concurrent ``put_many`` calls share one
transaction (group commit, see _group_commit.py), so a burst of node commits
costs one WAL flush. The server's ``synchronous_commit`` decides durability;
its default (``on``) makes a returned ``put_many`` survive a server crash.

A commit asks for its transaction id, then locks every lease that fences a
batch (``SELECT ... FOR UPDATE``): a competing ``acquire_lease`` waits until the
commit ends, so an owner whose lease was taken over can never commit after the
takeover. Batches whose lease
is held by someone else are dropped (LeaseError to that caller alone); one
statement per kind then writes the rest (a DELETE, an upsert of all rows), and
COMMIT.

Connection loss (server restart, network): every call reconnects and retries
for up to ``reconnect_timeout`` seconds. A commit whose outcome is unknown (the
connection died after COMMIT was sent) is resolved with ``pg_xact_status`` of
the transaction id fetched first: committed -> done; aborted
-> the whole transaction runs again, fence included, so it is applied at most
once, and refused if the lease moved meanwhile.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Iterable, Sequence

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # the `postgres` extra is optional; the constructor says how to get it
    psycopg = None  # type: ignore[assignment]

from ..errors import CheckpointVersionError, LeaseError, StateConfigError, StorageError
from ._group_commit import GroupCommit
from ._records import DEFAULT_CODEC, RecordCodec
from ._storage import Record, Storage
from ._worker import Worker

__all__ = ["PostgresStorage", "SCHEMA_VERSION"]

#: Version of the table layout this code creates and reads (2: the ``expires`` column).
SCHEMA_VERSION = 2

_Batch = tuple[dict[bytes, bytes], list[bytes], "tuple[str, str] | None"]
_SETUP_LOCK = 0x6C696F6E  # 'lion': serializes CREATE TABLE across concurrent first connects

_SETUP = (
    "CREATE TABLE IF NOT EXISTS lion_meta (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS lion_records (key bytea PRIMARY KEY, body bytea NOT NULL)",
)
_TO_V2 = (
    "ALTER TABLE lion_records ADD COLUMN IF NOT EXISTS expires float8",
    "CREATE INDEX IF NOT EXISTS lion_records_expires ON lion_records (expires) "
    "WHERE expires IS NOT NULL",
)
# A record written by put_many is not a lease (leases are written by acquire_lease).
_UPSERT = ("INSERT INTO lion_records (key, body) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
           "ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, expires = NULL")


class _Lost(Exception):
    """The connection died; ``.xid`` is the transaction whose COMMIT may have landed."""

    def __init__(self, cause: BaseException, xid: str | None, result: Any) -> None:
        super().__init__(_said(cause))
        self.cause, self.xid, self.result = cause, xid, result


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every one starting with ``prefix`` (or None)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _said(exc: BaseException) -> str:
    """The server's message without the SQL excerpt that follows it."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _where(dsn: str) -> str:
    """``user@host:port/db`` from a DSN, without the password, for error messages."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return (f"{info.get('user', '')}{'@' if info.get('user') else ''}{host}:"
            f"{info.get('port', 5432)}/{info.get('dbname', '')}")


class PostgresStorage(Storage):
    """Durable storage in a PostgreSQL database (see the module docstring)."""

    durable = True

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0,
                 reconnect_timeout: float = 30.0, lock_timeout: float = 10.0,
                 group_commit_ms: float = 0.0, codec: RecordCodec | None = None) -> None:
        if psycopg is None:
            raise ImportError("PostgresStorage needs psycopg 3: pip install 'lion_nb[postgres]'")
        if not isinstance(dsn, str) or not dsn:
            raise StateConfigError(f"dsn must be a non-empty string, not {dsn!r}", field="dsn")
        try:
            conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise StateConfigError(f"dsn is not a PostgreSQL connection string: {exc}",
                                   field="dsn") from None
        for name, value in [("connect_timeout", connect_timeout),
                            ("reconnect_timeout", reconnect_timeout),
                            ("lock_timeout", lock_timeout), ("group_commit_ms", group_commit_ms)]:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise StateConfigError(f"{name} must be a number >= 0, not {value!r}",
                                       field=name)
        self.dsn = dsn
        self.where = _where(dsn)
        self.codec = codec or DEFAULT_CODEC
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.lock_timeout = lock_timeout
        self._group: GroupCommit[_Batch] = GroupCommit(self._commit_group, group_commit_ms)
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._worker = Worker(f"lion-postgres {self.where}")
        try:
            self._worker.call_sync(self._open)
        except BaseException:
            self._worker.stop()
            raise
        self._finalizer = weakref.finalize(self, self._worker.stop, self._disconnect)

    def __repr__(self) -> str:
        return f"PostgresStorage({self.where!r})"

    # --- the async interface ------------------------------------------------------

    async def put_many(self, items: Sequence[tuple[str, Record]], *,
                       deletes: Iterable[str] = (),
                       fence: tuple[str, str] | None = None) -> None:
        """Write ``items`` and delete ``deletes`` in one durable transaction."""
        puts = {_key(k): self.codec.encode(k, v) for k, v in items}  # bad records fail here
        batch: _Batch = (puts, [d for d in map(_key, deletes) if d not in puts], fence)
        await self._group.submit(batch)

    async def get(self, key: str) -> Record | None:
        """The record at ``key`` (verified and migrated), or None."""
        raw = await self._run(self._read_sync, self._get_on, key)
        return None if raw is None else self.codec.decode(raw, key)[1]

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""
        return await self._run(self._read_sync, self._keys_on, prefix)

    async def items(self, prefix: str) -> list[tuple[str, Record]]:
        """Sorted ``(key, record)`` pairs under ``prefix``, in one query (one snapshot)."""
        return await self._run(self._read_sync, self._items_on, prefix)

    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Take (or renew) the lease at ``key``; LeaseError if another live owner has it."""
        await self._run(self._write_sync, self._lease_on, key, owner, ttl, now)

    async def renew_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Extend a lease ``owner`` still holds; LeaseError if it is gone or another's."""
        await self._run(self._write_sync, self._renew_on, key, owner, ttl, now)

    async def release_lease(self, key: str, owner: str) -> None:
        """Give up a lease this owner holds (no-op otherwise), atomically."""
        await self._run(self._write_sync, self._release_on, key, owner)

    async def claim(self, prefix: str, owner: str, ttl: float, now: float, *,
                    limit: int = 1) -> list[tuple[str, Record]]:
        """Take up to ``limit`` claimable records in one transaction (SKIP LOCKED)."""
        return await self._run(self._write_sync, self._claim_on, prefix, owner, ttl, now,
                               limit)

    async def expired_leases(self, prefix: str, now: float, *,
                             limit: int = 100) -> list[tuple[str, Record]]:
        """Up to ``limit`` leases under ``prefix`` expired at ``now``, oldest first (indexed)."""
        return await self._run(self._read_sync, self._expired_on, prefix, now, limit)

    async def close(self) -> None:
        """Finish pending group commits, then close the connection and its thread."""
        if self._closed:
            return
        await self._group.drain()
        self._closed = True
        await self._worker.call(int)  # let calls already queued finish first
        self._finalizer()  # closes the connection on its own thread, then stops it
        self._worker.join()  # the thread is gone when close() returns

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise StorageError(f"{self!r} is closed", key=None, path=self.where)
        return await self._worker.call(fn, *args)

    async def _commit_group(self, batches: list[_Batch]) -> list[Exception | None]:
        return await self._run(self._write_sync, self._commit_on, batches)

    # --- connection (the worker thread) -----------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=False, connect_timeout=max(1, round(self.connect_timeout)),
                application_name="lion_nb",
                # A dead server or network must not hang a commit forever.
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                tcp_user_timeout=max(1000, int(self.connect_timeout * 1000)))
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {self.where}: "
                               f"{_said(exc)}", key=None, path=self.where) from exc
        try:
            conn.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}")
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc, None) from exc
        return conn

    def _open(self) -> None:
        """Connect, create the tables if missing, and check their schema version."""
        conn = self._connect()
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            stored = conn.execute("SELECT to_regclass('lion_meta') IS NOT NULL").fetchone()
            if stored is None or not stored[0]:
                for sql in _SETUP + _TO_V2:
                    conn.execute(sql)
                conn.execute("INSERT INTO lion_meta VALUES ('schema_version', %s) "
                             "ON CONFLICT (name) DO NOTHING", (str(SCHEMA_VERSION),))
            row = conn.execute(
                "SELECT value FROM lion_meta WHERE name = 'schema_version'").fetchone()
            if row is not None and row[0] == "1":
                self._upgrade_v1(conn)
                row = (str(SCHEMA_VERSION),)
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc, None) from exc
        version = None if row is None else row[0]
        if version != str(SCHEMA_VERSION):
            conn.close()
            raise CheckpointVersionError(
                f"database {self.where} holds lion_nb tables of schema version {version!r}; "
                f"this code reads version {SCHEMA_VERSION}"
                + ("; upgrade lion_nb to use it" if str(version).isdigit()
                   and int(str(version)) > SCHEMA_VERSION else ""),
                key="lion_meta.schema_version", version=version)
        self._conn = conn

    def _upgrade_v1(self, conn: psycopg.Connection[Any]) -> None:
        """Add the ``expires`` column and index, filled from the leases (one pass, once)."""
        for sql in _TO_V2:
            conn.execute(sql)
        expiries = []
        for raw_key, body in conn.execute("SELECT key, body FROM lion_records").fetchall():
            key = bytes(raw_key).decode("utf-8", "surrogatepass")
            record = self.codec.decode(bytes(body), key)[1]
            if set(record) == {"owner", "expires"}:  # the shape acquire_lease writes
                expiries.append((float(record["expires"]), bytes(raw_key)))
        if expiries:
            conn.cursor().executemany("UPDATE lion_records SET expires = %s WHERE key = %s",
                                      expiries)
        conn.execute("UPDATE lion_meta SET value = %s WHERE name = 'schema_version'",
                     (str(SCHEMA_VERSION),))

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._disconnect()
            self._conn = self._connect()
        return self._conn

    # --- transactions with reconnect ------------------------------------------------

    def _read_sync(self, body: Callable[..., Any], *args: Any) -> Any:
        return self._retrying(body, args, xid_first=False)

    def _write_sync(self, body: Callable[..., Any], *args: Any) -> Any:
        return self._retrying(body, args, xid_first=True)

    def _retrying(self, body: Callable[..., Any], args: tuple[Any, ...],
                  xid_first: bool) -> Any:
        """Run ``body(conn, *args)`` in one transaction, reconnecting if the server went away."""
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while True:
            try:
                return self._transaction(body, args, xid_first)
            except _Lost as lost:
                if lost.xid is not None and self._outcome(lost.xid, deadline) == "committed":
                    return lost.result  # it landed: never apply it a second time
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"lost the connection to PostgreSQL at {self.where} and could not "
                        f"reconnect within {self.reconnect_timeout:g}s: {lost}",
                        key=None, path=self.where) from lost.cause
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _transaction(self, body: Callable[..., Any], args: tuple[Any, ...],
                     xid_first: bool) -> Any:
        try:
            conn = self._live()
        except StorageError as exc:
            raise _Lost(exc, None, None) from exc
        xid = result = None
        committing = False
        try:
            # Not pipelined: psycopg's pipeline mode measured slower here (its syncs
            # cost more than the round trips they save on a loopback connection).
            if xid_first:
                row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
                xid = None if row is None else str(row[0])
            result = body(conn, *args)
            self._step("before_commit")
            committing = True
            conn.commit()
            self._step("after_commit")
            return result
        except psycopg.Error as exc:
            if conn.broken or conn.closed or isinstance(exc, pg_errors.AdminShutdown):
                self._disconnect()
                # Before COMMIT went out the server rolls back: just run it again.
                raise _Lost(exc, xid if committing else None, result) from exc
            self._rollback(conn)
            raise self._error(exc, args[0] if args and isinstance(args[0], str) else None
                              ) from exc
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.rollback()
        except psycopg.Error:  # the connection is gone; the server rolls back for us
            self._disconnect()

    def _outcome(self, xid: str, deadline: float) -> str | None:
        """The fate of a transaction whose COMMIT got no answer (polls while in progress)."""
        while time.monotonic() < deadline:
            try:
                conn = self._live()
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
                conn.commit()
            except pg_errors.InvalidParameterValue:
                # "in the future": the restarted server never logged that id, so it
                # wrote nothing, let alone a commit record.
                self._disconnect()
                return "aborted"
            except (psycopg.Error, StorageError):
                self._disconnect()
                time.sleep(0.1)
                continue
            status = None if row is None else row[0]
            if status != "in progress":
                return status
            time.sleep(0.05)
        return None

    # --- transaction bodies (the worker thread, inside a transaction) ----------------

    def _commit_on(self, conn: psycopg.Connection[Any],
                   batches: list[_Batch]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        leases: dict[str, Record | None] = {}
        for _, _, fence in batches:
            if fence is not None and fence[0] not in leases:
                leases[fence[0]] = self._locked_record(conn, fence[0])
        final: dict[bytes, bytes | None] = {}  # later batches win, as if run one by one
        for puts, dels, fence in batches:
            if fence is not None:
                lease = leases[fence[0]]
                if lease is None or lease.get("owner") != fence[1]:
                    errors.append(LeaseError(f"lease {fence[0]!r} is not held by {fence[1]!r}",
                                             key=fence[0], owner=fence[1]))
                    continue
            final.update(dict.fromkeys(dels))
            final.update(puts)
            errors.append(None)
        doomed = [k for k, v in final.items() if v is None]
        if doomed:
            conn.execute("DELETE FROM lion_records WHERE key = ANY(%s)", (doomed,))
        kept = [(k, v) for k, v in final.items() if v is not None]
        if kept:
            conn.execute(_UPSERT, ([k for k, _ in kept], [v for _, v in kept]))
        return errors

    def _locked_record(self, conn: psycopg.Connection[Any], key: str) -> Record | None:
        row = conn.execute("SELECT body FROM lion_records WHERE key = %s FOR UPDATE",
                           (_key(key),)).fetchone()
        return None if row is None else self.codec.decode(bytes(row[0]), key)[1]

    def _lease_on(self, conn: psycopg.Connection[Any], key: str, owner: str, ttl: float,
                  now: float) -> None:
        body = self.codec.encode(key, {"owner": owner, "expires": now + ttl})
        cur = conn.execute("INSERT INTO lion_records (key, body, expires) VALUES (%s, %s, %s) "
                           "ON CONFLICT (key) DO NOTHING", (_key(key), body, now + ttl))
        if cur.rowcount == 1:
            return
        held = self._locked_record(conn, key)
        if held is not None and held.get("owner") != owner and held.get("expires", 0) > now:
            raise LeaseError(f"{key!r} is leased by {held['owner']!r}", key=key,
                             owner=held["owner"])
        conn.execute("UPDATE lion_records SET body = %s, expires = %s WHERE key = %s",
                     (body, now + ttl, _key(key)))

    def _renew_on(self, conn: psycopg.Connection[Any], key: str, owner: str, ttl: float,
                  now: float) -> None:
        held = self._locked_record(conn, key)
        if held is None or held.get("owner") != owner:
            raise LeaseError(f"lease {key!r} is no longer held by {owner!r}", key=key,
                             owner=None if held is None else held.get("owner"))
        conn.execute("UPDATE lion_records SET body = %s, expires = %s WHERE key = %s",
                     (self.codec.encode(key, {"owner": owner, "expires": now + ttl}),
                      now + ttl, _key(key)))

    def _claim_on(self, conn: psycopg.Connection[Any], prefix: str, owner: str, ttl: float,
                  now: float, limit: int) -> list[tuple[str, Record]]:
        start = _key(prefix)
        end = _prefix_end(start) or b"\xff" * 8
        # Rows another claimer is taking are skipped, not waited for.
        rows = conn.execute("SELECT key, body FROM lion_records WHERE key >= %s AND key < %s "
                            "ORDER BY key LIMIT %s FOR UPDATE SKIP LOCKED",
                            (start, end, limit + 16)).fetchall()
        taken: list[tuple[str, Record]] = []
        for raw_key, body in rows:
            if len(taken) >= limit:
                break
            key = bytes(raw_key).decode("utf-8", "surrogatepass")
            record = self.codec.decode(bytes(body), key)[1]
            lease = record.get("lease")
            if not isinstance(lease, str):
                continue
            try:
                self._lease_on(conn, lease, owner, ttl, now)
            except LeaseError:
                continue
            taken.append((key, record))
        if taken:
            conn.execute("DELETE FROM lion_records WHERE key = ANY(%s)",
                         ([_key(k) for k, _ in taken],))
        return taken

    def _release_on(self, conn: psycopg.Connection[Any], key: str, owner: str) -> None:
        held = self._locked_record(conn, key)
        if held is not None and held.get("owner") == owner:
            conn.execute("DELETE FROM lion_records WHERE key = %s", (_key(key),))

    def _expired_on(self, conn: psycopg.Connection[Any], prefix: str, now: float,
                    limit: int) -> list[tuple[str, Record]]:
        start = _key(prefix)
        end = _prefix_end(start) or b"\xff" * 8
        rows = conn.execute("SELECT key, body FROM lion_records WHERE expires <= %s "
                            "AND key >= %s AND key < %s ORDER BY expires LIMIT %s",
                            (now, start, end, limit)).fetchall()
        out = []
        for raw_key, body in rows:
            key = bytes(raw_key).decode("utf-8", "surrogatepass")
            out.append((key, self.codec.decode(bytes(body), key)[1]))
        return out

    def _get_on(self, conn: psycopg.Connection[Any], key: str) -> bytes | None:
        row = conn.execute("SELECT body FROM lion_records WHERE key = %s",
                           (_key(key),)).fetchone()
        return None if row is None else bytes(row[0])

    def _keys_on(self, conn: psycopg.Connection[Any], prefix: str) -> list[str]:
        return [row[0] for row in self._range(conn, "key", prefix)]

    def _items_on(self, conn: psycopg.Connection[Any],
                  prefix: str) -> list[tuple[str, Record]]:
        return [(key, self.codec.decode(bytes(body), key)[1])
                for key, body in self._range(conn, "key, body", prefix)]

    def _range(self, conn: psycopg.Connection[Any], columns: str,
               prefix: str) -> list[tuple[Any, ...]]:
        """``(key, *columns[1:])`` rows whose key starts with ``prefix``, in key order."""
        start = _key(prefix)
        end = _prefix_end(start)
        sql, args = f"SELECT {columns} FROM lion_records WHERE key >= %s", [start]
        if end is not None:
            sql, args = sql + " AND key < %s", [start, end]
        rows = conn.execute(sql + " ORDER BY key", args).fetchall()
        return [(bytes(r[0]).decode("utf-8", "surrogatepass"), *r[1:]) for r in rows]

    # --- errors ---------------------------------------------------------------------

    def _error(self, exc: psycopg.Error, key: str | None) -> StorageError:
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            text = (f"permission denied in PostgreSQL at {self.where}: {_said(exc)} "
                    f"(the role needs CREATE on the schema, or SELECT/INSERT/UPDATE/DELETE "
                    f"on lion_meta and lion_records)")
        elif isinstance(exc, pg_errors.LockNotAvailable):
            text = (f"PostgreSQL at {self.where}: a row stayed locked by another transaction "
                    f"for {self.lock_timeout:g}s (lock_timeout=)")
        else:
            text = f"PostgreSQL at {self.where}: {_said(exc)}"
        return StorageError(text, key=key, path=self.where)
