"""The durable event store: one SQLite file, WAL journal, ``synchronous=FULL``.

The connection lives on the state layer's dedicated thread
(:class:`lion_nb.state._worker.Worker` - the one SQLite writer-thread design
of the library), so the event loop never blocks on disk and work runs in call
order. Calls queue on the loop while a transaction is in flight and the next
round takes them all in one transaction (group commit): concurrent publishes
and acks share one fsync, each isolated by a savepoint so one failing
operation fails alone. A future resolves only after COMMIT, so when
``await broker.publish(...)`` or an ack returns, it is on disk.

Every event row carries a SHA-256 checksum of its fields. A row that fails it
(or does not decode) is never delivered: the broker dead-letters it for each
consumer that still needed it, with :class:`~lion_nb.errors.EventCorruptError`
named as the reason, and the other events keep flowing.

One process at a time: the file is opened in SQLite's exclusive locking mode,
so a second process (or a second store object) opening it gets a
:class:`~lion_nb.errors.StorageError` that says so at once, instead of
silently never seeing the other's events. Events cannot cross processes
through this store; a message server can (see docs/events.md).

Payloads, headers and effects must be JSON; a value that is not is refused
at the call, before anything is queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import weakref
from typing import Any, Callable, Sequence

from ...errors import ConfigError, EventCorruptError, EventError, StorageError
from ...state._worker import Worker
from ._model import Event
from ._store import (
    PENDING, Append, ConsumerRecord, DamagedRecord, EffectRow, EventStore, PendingRecord,
    StoreSnapshot, Update, apply_effects,
)
from ._topics import validate_topic

__all__ = ["SqliteEventStore"]

_log = logging.getLogger("lion_nb.events")
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
    payload TEXT NOT NULL, headers TEXT, idem_key TEXT, timestamp REAL NOT NULL,
    checksum TEXT);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY, pattern TEXT NOT NULL, filter TEXT, options TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    consumer TEXT NOT NULL, seq INTEGER NOT NULL, status INTEGER NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT, processed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (consumer, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries (seq);
CREATE TABLE IF NOT EXISTS state (
    consumer TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (consumer, key)) WITHOUT ROWID;
"""
_EVENT_COLS = "e.seq, e.id, e.topic, e.payload, e.headers, e.idem_key, e.timestamp, e.checksum"
_INSERT = ("INSERT OR IGNORE INTO events (id, topic, payload, headers, idem_key, timestamp, "
           "checksum) VALUES (?, ?, ?, ?, ?, ?, ?)")


def _checksum(eid: Any, topic: Any, payload: Any, headers: Any, key: Any, ts: Any) -> str:
    """SHA-256 over the row's fields, framed so no two rows hash alike by shifting text."""
    framed = json.dumps([eid, topic, payload, headers, key, ts])
    return hashlib.sha256(framed.encode()).hexdigest()


def _event_from_row(row: Sequence[Any]) -> Event:
    """The event of a stored row, verified; EventCorruptError naming it if damaged."""
    seq, eid, topic, payload, headers, key, ts, checksum = row
    try:
        if checksum != _checksum(eid, topic, payload, headers, key, ts):
            raise ValueError("checksum mismatch")
        return Event(topic, json.loads(payload), id=eid,
                     headers=json.loads(headers) if headers else None,
                     idempotency_key=key, timestamp=ts, offset=seq)
    except (ValueError, TypeError) as exc:
        raise EventCorruptError(f"stored event at offset {seq} (id {eid!r}) is damaged: "
                                f"{exc}", offset=seq, event_id=eid) from None


def _encode(event: Event) -> tuple[Any, ...]:
    try:
        payload = json.dumps(event.payload, allow_nan=False)
        headers = json.dumps(event.headers, allow_nan=False) if event.headers else None
    except (TypeError, ValueError) as exc:
        raise EventError(
            f"event {event.id!r} on topic {event.topic!r} cannot go to the durable store: "
            f"its payload or headers are not JSON ({exc})",
            topic=event.topic, event_id=event.id,
        ) from None
    fields = (event.id, event.topic, payload, headers, event.idempotency_key, event.timestamp)
    return (*fields, _checksum(*fields))


class SqliteEventStore(EventStore):
    """A durable :class:`EventStore` in one SQLite file (created if missing).

    Opening it takes the file for this store alone (see the module docstring);
    ``busy_timeout`` is how long to wait for another holder before refusing.
    """

    durable = True
    immediate = False

    def __init__(self, path: str | Any, *, max_batch: int = 1024,
                 busy_timeout: float = 0.5) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"SqliteEventStore: max_batch must be an int >= 1, got "
                              f"{max_batch!r}", field="max_batch")
        if not isinstance(busy_timeout, (int, float)) or not busy_timeout >= 0:
            raise ConfigError(f"SqliteEventStore: busy_timeout must be >= 0 seconds, got "
                              f"{busy_timeout!r}", field="busy_timeout")
        self.path = str(path)
        self.max_batch = max_batch
        #: Tests set this to a callable that stops the process at a named step
        #: ("before_commit", "after_commit"), on the writer thread.
        self.step_hook: Callable[[str], None] | None = None
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...],
                                 asyncio.Future[Any]]] = []
        self._drain: asyncio.Task[None] | None = None
        self._closed = False
        self._worker = Worker(f"lion-events-sqlite {self.path}")
        try:
            self._conn: sqlite3.Connection = self._worker.call_sync(self._connect, busy_timeout)
        except BaseException:
            self._worker.stop()
            raise
        # Dropped without close() (common in notebooks): still release the file.
        self._finalizer = weakref.finalize(self, self._worker.stop, self._conn.close)

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.path!r})"

    # -- plumbing -------------------------------------------------------------

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open event store {self.path!r}: {exc}",
                               key=self.path) from None
        try:
            # Exclusive: held until close, so a second process fails here, not silently later.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
            conn.executescript(_SCHEMA)
            self._migrate(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageError(
                    f"event store {self.path!r} is open in another process (or by another "
                    "SqliteEventStore): a SQLite event store serves one process, and events "
                    "do not cross processes through it. Close the other one, or use a store "
                    "on a message server (NATS JetStream) to share events between processes",
                    key=self.path) from None
            raise StorageError(f"cannot open event store {self.path!r}: {exc}",
                               key=self.path) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return
        version = int(row[0])
        if version == 1:  # v1 rows had no checksum: add it, computed from the rows as they are
            conn.execute("BEGIN IMMEDIATE")
            cols = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
            if "checksum" not in cols:
                conn.execute("ALTER TABLE events ADD COLUMN checksum TEXT")
            rows = conn.execute("SELECT seq, id, topic, payload, headers, idem_key, timestamp "
                                "FROM events").fetchall()
            conn.executemany("UPDATE events SET checksum = ? WHERE seq = ?",
                             [(_checksum(*r[1:]), r[0]) for r in rows])
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                         (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise StorageError(f"event store {self.path!r} has schema {version}, this code "
                               f"reads {SCHEMA_VERSION}", key=self.path)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageError(f"event store {self.path!r} is closed", key=self.path)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queued.append((fn, args, fut))
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._run_queued())
        return fut

    async def _run_queued(self) -> None:
        """Run what is queued, one transaction per round; what arrives meanwhile is next."""
        while self._queued:
            batch = self._queued[:self.max_batch]
            del self._queued[:self.max_batch]
            try:
                outcomes = await self._worker.call(self._run_batch, self._conn,
                                                   [(fn, args) for fn, args, _ in batch])
            except BaseException as exc:  # thread stopped, or we are cancelled: fail, not hang
                error = StorageError(f"event store {self.path!r}: {exc!r}", key=self.path)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                if isinstance(exc, Exception):
                    continue
                raise
            for (_, _, fut), (ok, value) in zip(batch, outcomes):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _run_batch(self, conn: sqlite3.Connection,
                   batch: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        """On the worker thread: one transaction, a savepoint per operation."""
        outcomes: list[tuple[bool, Any]] = []
        single = len(batch) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args in batch:
                if not single:
                    conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn, *args)
                except Exception as exc:  # one failed operation must fail alone
                    if single:
                        raise
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, _wrap(exc, self.path)))
                else:
                    if not single:
                        conn.execute("RELEASE op")
                    outcomes.append((True, value))
            hook = self.step_hook
            if hook is not None:
                hook("before_commit")
            conn.execute("COMMIT")
            if hook is not None:
                hook("after_commit")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = _wrap(exc, self.path)
            outcomes = [(False, err)] * len(batch)
        return outcomes

    # -- the EventStore interface ---------------------------------------------

    def write(self, appends: Sequence[Append] = (), updates: Sequence[Update] = (),
              effects: Sequence[EffectRow] = ()) -> asyncio.Future[Any]:
        """Queue one atomic change (see :meth:`EventStore.write`); JSON is checked here."""
        encoded = [(_encode(event), tuple(consumers)) for event, consumers in appends]
        for consumer, _seq, fx in effects:
            if not callable(fx):
                try:
                    json.dumps(dict(fx), allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise EventError(f"effects of subscriber {consumer!r} are not JSON ({exc})",
                                     subscriber=consumer) from None
        return self._submit(_write, encoded, list(updates), list(effects))

    def load(self, keys_since: float) -> asyncio.Future[StoreSnapshot]:
        """Queue a read of everything a broker needs to resume."""
        return self._submit(_load, keys_since)

    def register_consumer(self, record: ConsumerRecord) -> asyncio.Future[None]:
        """Queue a consumer's registration (insert or update)."""
        return self._submit(_register, record.name, record.pattern, record.filter,
                            json.dumps(dict(record.options)))

    def drop_consumer(self, name: str) -> asyncio.Future[None]:
        """Queue forgetting a consumer, its deliveries and its state."""
        return self._submit(_drop, name)

    def read(self, from_offset: int | None = None, since: float | None = None,
             limit: int | None = None) -> asyncio.Future[list[Event]]:
        """Queue a read of the log in offset order (damaged rows are left out, logged)."""
        return self._submit(_read, from_offset, since, limit)

    def state(self, consumer: str) -> asyncio.Future[dict[str, Any]]:
        """Queue a read of an exactly-once consumer's committed state."""
        return self._submit(_state, consumer)

    def compact(self, before: float) -> asyncio.Future[int]:
        """Queue deleting finished events stamped before ``before`` (see EventStore)."""
        return self._submit(_compact, before)

    async def close(self) -> None:
        """Finish queued work, then close the file and end its thread (idempotent)."""
        if self._closed:
            return
        if self._drain is not None and not self._drain.done():
            await asyncio.gather(self._drain, return_exceptions=True)
        self._closed = True
        self._finalizer.detach()
        if not self._worker.stopped:
            # On its own thread, after what is queued; awaited, so the file (and its
            # exclusive lock) is released when close() returns.
            await self._worker.call(self._conn.close)
            self._worker.stop()


def _wrap(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StorageError(f"event store {path!r}: {exc}", key=path)
    return exc


# -- operations, run on the writer thread ---------------------------------------

def _write(conn: sqlite3.Connection, encoded: list[Any], updates: list[Update],
           effects: list[EffectRow]) -> tuple[list[int | None], list[bool]]:
    applied = [_apply_effect(conn, consumer, seq, fx) for consumer, seq, fx in effects]
    offsets: list[int | None] = []
    rows: list[tuple[str, int | None]] = []
    for row, consumers in encoded:
        cur = conn.execute(_INSERT, row)
        if cur.rowcount == 0:
            offsets.append(None)  # that id is already in the log
            continue
        seq = cur.lastrowid
        offsets.append(seq)
        rows.extend((c, seq) for c in consumers)
    if rows:  # one statement for the whole batch's delivery rows
        conn.executemany("INSERT OR IGNORE INTO deliveries (consumer, seq, status, attempts) "
                         "VALUES (?, ?, 0, 0)", rows)
    if updates:
        conn.executemany(
            "INSERT INTO deliveries (consumer, seq, status, attempts, last_error) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer, seq) DO UPDATE SET "
            "status = excluded.status, attempts = excluded.attempts, "
            "last_error = excluded.last_error", updates)
    return offsets, applied


def _apply_effect(conn: sqlite3.Connection, consumer: str, seq: int | None,
                  effects: Any) -> bool:
    row = conn.execute("SELECT status, processed FROM deliveries WHERE consumer = ? AND seq = ?",
                       (consumer, seq)).fetchone()
    if row is None or row[0] != PENDING or row[1]:
        return False  # finished or already processed: the effect was applied before
    old = _state(conn, consumer)
    new = apply_effects(old, effects)
    gone = [(consumer, k) for k in old if k not in new]
    changed = [(consumer, k, json.dumps(v, allow_nan=False)) for k, v in new.items()
               if k not in old or old[k] != v]
    conn.executemany("DELETE FROM state WHERE consumer = ? AND key = ?", gone)
    conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", changed)
    conn.execute("UPDATE deliveries SET processed = 1 WHERE consumer = ? AND seq = ?",
                 (consumer, seq))
    return True


def _load(conn: sqlite3.Connection, keys_since: float) -> StoreSnapshot:
    consumers = [ConsumerRecord(n, p, f, _json(o, f"options of consumer {n!r}")) for n, p, f, o
                 in conn.execute("SELECT name, pattern, filter, options FROM consumers")]
    pending: dict[str, list[PendingRecord]] = {c.name: [] for c in consumers}
    damaged: list[DamagedRecord] = []
    for row in conn.execute(
            f"SELECT d.consumer, d.attempts, d.last_error, d.processed, {_EVENT_COLS} "
            "FROM deliveries d JOIN events e ON e.seq = d.seq "
            "WHERE d.status = 0 ORDER BY d.consumer, d.seq"):
        if row[0] not in pending:
            continue
        try:
            event = _event_from_row(row[4:])
        except EventCorruptError as exc:
            damaged.append(DamagedRecord(row[0], row[4], str(row[5]), _topic(row[6]),
                                         f"EventCorruptError: {exc}"))
            continue
        pending[row[0]].append(PendingRecord(event, row[1], row[2], bool(row[3])))
    keys = list(conn.execute("SELECT idem_key, id, timestamp FROM events WHERE timestamp >= ? "
                             "AND idem_key IS NOT NULL ORDER BY seq", (keys_since,)))
    return StoreSnapshot(consumers, pending, [tuple(k) for k in keys], damaged)


def _topic(value: Any) -> str:
    """A damaged row's topic if it still reads as one, for naming its dead letter."""
    try:
        return validate_topic(value)
    except Exception:  # the topic itself is what was damaged
        return "damaged"


def _register(conn: sqlite3.Connection, name: str, pattern: str, flt: str | None,
              options: str) -> None:
    conn.execute("INSERT OR REPLACE INTO consumers VALUES (?, ?, ?, ?)",
                 (name, pattern, flt, options))


def _drop(conn: sqlite3.Connection, name: str) -> None:
    for table, column in (("consumers", "name"), ("deliveries", "consumer"),
                          ("state", "consumer")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))


def _read(conn: sqlite3.Connection, from_offset: int | None, since: float | None,
          limit: int | None) -> list[Event]:
    rows = conn.execute(
        f"SELECT {_EVENT_COLS} FROM events e WHERE e.seq >= ? AND e.timestamp >= ? "
        "ORDER BY e.seq LIMIT ?",
        (from_offset or 0, since if since is not None else float("-inf"),
         -1 if limit is None else limit))
    out = []
    for row in rows:
        try:
            out.append(_event_from_row(row))
        except EventCorruptError as exc:
            _log.error("event store: %s; left out of the replay", exc)
    return out


def _compact(conn: sqlite3.Connection, before: float) -> int:
    """Delete events stamped before ``before`` whose deliveries are all finished."""
    gone = [r[0] for r in conn.execute(
        "SELECT e.seq FROM events e WHERE e.timestamp < ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.status = ?)",
        (before, PENDING))]
    conn.executemany("DELETE FROM deliveries WHERE seq = ?", [(g,) for g in gone])
    conn.executemany("DELETE FROM events WHERE seq = ?", [(g,) for g in gone])
    return len(gone)


def _json(text: str, what: str) -> Any:
    """Parse a stored JSON text; a damaged one is a StorageError naming what it was."""
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise StorageError(f"event store: the stored {what} is damaged ({exc})",
                           key=what) from None


def _state(conn: sqlite3.Connection, consumer: str) -> dict[str, Any]:
    return {k: _json(v, f"state {k!r} of consumer {consumer!r}") for k, v in
            conn.execute("SELECT key, value FROM state WHERE consumer = ? ORDER BY key",
                         (consumer,))}

