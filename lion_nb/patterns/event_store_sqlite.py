"""The durable event store: one SQLite file, WAL journal, ``synchronous=FULL``.

Every call enqueues its work for one dedicated writer thread and returns a
future, so the event loop never blocks on disk and work runs in call order.
The thread drains whatever is queued into one transaction (group commit):
concurrent publishes and acks share one fsync, each isolated by a savepoint so
one failing operation fails alone. A future resolves only after COMMIT, so
when ``await broker.publish(...)`` or an ack returns, it is on disk.

Payloads, headers and effects must be JSON; a value that is not is refused
at the call, before anything is queued.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from typing import Any, Sequence

from ..errors import EventError, StorageError
from ._events_model import Event
from .event_store import (
    PENDING, Append, ConsumerRecord, EffectRow, EventStore, PendingRecord, StoreSnapshot,
    Update, _apply_effects,
)

__all__ = ["SqliteEventStore"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
    payload TEXT NOT NULL, headers TEXT, idem_key TEXT, timestamp REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY, pattern TEXT NOT NULL, filter TEXT, options TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    consumer TEXT NOT NULL, seq INTEGER NOT NULL, status INTEGER NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT, processed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (consumer, seq) WHERE status = 0;
CREATE TABLE IF NOT EXISTS state (
    consumer TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (consumer, key)) WITHOUT ROWID;
"""
_EVENT_COLS = "e.seq, e.id, e.topic, e.payload, e.headers, e.idem_key, e.timestamp"
_STOP = object()


def _event_from_row(row: Sequence[Any]) -> Event:
    seq, eid, topic, payload, headers, key, ts = row
    return Event(topic, json.loads(payload), id=eid,
                 headers=json.loads(headers) if headers else None,
                 idempotency_key=key, timestamp=ts, offset=seq)


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
    return (event.id, event.topic, payload, headers, event.idempotency_key, event.timestamp)


class SqliteEventStore(EventStore):
    """A durable :class:`EventStore` in one SQLite file (created if missing)."""

    durable = True
    immediate = False

    def __init__(self, path: str | Any, *, max_batch: int = 1024) -> None:
        self.path = str(path)
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- plumbing -------------------------------------------------------------

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageError(f"event store {self.path!r} is closed", key=self.path)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"lion-events-sqlite:{self.path}", daemon=True)
            self._thread.start()
        self._queue.put((fn, args, fut, loop))
        return fut

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StorageError(f"event store {self.path!r} has schema {row[0]}, this code "
                               f"reads {SCHEMA_VERSION}", key=self.path)
        return conn

    def _serve(self) -> None:
        """The writer thread: drain the queue into one transaction per round."""
        try:
            conn: sqlite3.Connection | None = self._connect()
            broken: BaseException | None = None
        except (sqlite3.Error, StorageError) as exc:
            conn = None
            broken = exc if isinstance(exc, StorageError) else StorageError(
                f"cannot open event store {self.path!r}: {exc}", key=self.path)
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item[0] is _STOP for item in batch)
            results = self._run_batch(conn, broken, batch)
            for loop, group in results.items():
                try:
                    loop.call_soon_threadsafe(_settle, group)
                except RuntimeError:
                    pass  # that loop is closed: nobody is waiting any more
            if stop:
                if conn is not None:
                    conn.close()
                return

    def _run_batch(self, conn: sqlite3.Connection | None, broken: BaseException | None,
                   batch: list[Any]) -> dict[Any, list[Any]]:
        outcomes: list[tuple[Any, Any, bool, Any]] = []
        if conn is None:
            for fn, _args, fut, loop in batch:
                outcomes.append((loop, fut, fn is _STOP, None if fn is _STOP else broken))
        else:
            single = len(batch) == 1
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, args, fut, loop in batch:
                    if fn is _STOP:
                        outcomes.append((loop, fut, True, None))
                        continue
                    if not single:
                        conn.execute("SAVEPOINT op")
                    try:
                        value = fn(conn, *args)
                    except Exception as exc:  # one failed operation must fail alone
                        if single:
                            raise
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        outcomes.append((loop, fut, False, _wrap(exc, self.path)))
                    else:
                        if not single:
                            conn.execute("RELEASE op")
                        outcomes.append((loop, fut, True, value))
                conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                err = _wrap(exc, self.path)
                outcomes = [(loop, fut, fn is _STOP, None if fn is _STOP else err)
                            for fn, _args, fut, loop in batch]
        grouped: dict[Any, list[Any]] = {}
        for loop, fut, ok, value in outcomes:
            grouped.setdefault(loop, []).append((fut, ok, value))
        return grouped

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
        """Queue a read of the log in offset order."""
        return self._submit(_read, from_offset, since, limit)

    def state(self, consumer: str) -> asyncio.Future[dict[str, Any]]:
        """Queue a read of an exactly-once consumer's committed state."""
        return self._submit(_state, consumer)

    def close(self) -> asyncio.Future[None] | None:
        """Finish queued work, then close the file (idempotent)."""
        if self._closed:
            return None
        if self._thread is None:
            self._closed = True
            return None
        fut = self._submit(_STOP)
        self._closed = True
        return fut


def _wrap(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StorageError(f"event store {path!r}: {exc}", key=path)
    return exc


def _settle(group: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in group:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


# -- operations, run on the writer thread ---------------------------------------

def _write(conn: sqlite3.Connection, encoded: list[Any], updates: list[Update],
           effects: list[EffectRow]) -> tuple[list[int | None], list[bool]]:
    applied = [_apply_effect(conn, consumer, seq, fx) for consumer, seq, fx in effects]
    offsets: list[int | None] = []
    rows: list[tuple[str, int]] = []
    insert = "INSERT OR IGNORE INTO events (id, topic, payload, headers, idem_key, timestamp) " \
             "VALUES (?, ?, ?, ?, ?, ?)"
    for row, consumers in encoded:
        cur = conn.execute(insert, row)
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


def _apply_effect(conn: sqlite3.Connection, consumer: str, seq: int,
                  effects: Any) -> bool:
    row = conn.execute("SELECT status, processed FROM deliveries WHERE consumer = ? AND seq = ?",
                       (consumer, seq)).fetchone()
    if row is None or row[0] != PENDING or row[1]:
        return False  # finished or already processed: the effect was applied before
    old = {k: json.loads(v) for k, v in
           conn.execute("SELECT key, value FROM state WHERE consumer = ?", (consumer,))}
    new = _apply_effects(old, effects)
    gone = [(consumer, k) for k in old if k not in new]
    changed = [(consumer, k, json.dumps(v, allow_nan=False)) for k, v in new.items()
               if k not in old or old[k] != v]
    conn.executemany("DELETE FROM state WHERE consumer = ? AND key = ?", gone)
    conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", changed)
    conn.execute("UPDATE deliveries SET processed = 1 WHERE consumer = ? AND seq = ?",
                 (consumer, seq))
    return True


def _load(conn: sqlite3.Connection, keys_since: float) -> StoreSnapshot:
    consumers = [ConsumerRecord(n, p, f, json.loads(o)) for n, p, f, o in
                 conn.execute("SELECT name, pattern, filter, options FROM consumers")]
    pending: dict[str, list[PendingRecord]] = {c.name: [] for c in consumers}
    for row in conn.execute(
            f"SELECT d.consumer, d.attempts, d.last_error, d.processed, {_EVENT_COLS} "
            "FROM deliveries d JOIN events e ON e.seq = d.seq "
            "WHERE d.status = 0 ORDER BY d.consumer, d.seq"):
        if row[0] in pending:
            pending[row[0]].append(PendingRecord(_event_from_row(row[4:]), row[1], row[2],
                                                 bool(row[3])))
    keys = list(conn.execute("SELECT idem_key, id, timestamp FROM events WHERE timestamp >= ? "
                             "AND idem_key IS NOT NULL ORDER BY seq", (keys_since,)))
    last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    return StoreSnapshot(consumers, pending, [tuple(k) for k in keys], last)


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
    return [_event_from_row(r) for r in rows]


def _state(conn: sqlite3.Connection, consumer: str) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in
            conn.execute("SELECT key, value FROM state WHERE consumer = ? ORDER BY key",
                         (consumer,))}

