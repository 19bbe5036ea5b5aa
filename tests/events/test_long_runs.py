"""Issue 14, events: bounded memory, damaged rows, one process per SQLite store, retention."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lion_nb.errors import StorageError
from lion_nb.patterns import Event, SqliteEventStore

from events.helpers import drain, make_broker


async def test_a_million_unique_idempotency_keys_stay_bounded_by_the_window():
    broker, clock = make_broker(dedup_window=1.0, history_limit=0, retention=2.0)
    held = []
    batch = 10_000
    for start in range(0, 1_000_000, batch):
        ids = await broker.publish_many([Event("pay", start + i, idempotency_key=f"k{start + i}")
                                         for i in range(batch)])
        if start == 0:
            first_id = ids[0]
        await clock.advance(0.25)       # 40,000 keys per simulated second
        held.append(broker.statistics().idempotency_keys)
    assert broker.statistics().published == 1_000_000
    assert max(held) <= 5 * batch       # the window holds at most 4-5 batches, never 1M
    assert held[-1] <= 5 * batch
    assert len(broker.store) <= 12 * batch   # retention compacts the in-memory log too
    # a key inside the window still de-duplicates; one outside it no longer does
    last = f"k{1_000_000 - 1}"
    assert await broker.publish(Event("pay", 0, idempotency_key=last)) == ids[-1]
    assert broker.statistics().duplicates == 1
    assert await broker.publish(Event("pay", 0, idempotency_key="k0")) != first_id
    assert broker.statistics().duplicates == 1


async def test_the_key_cap_holds_even_inside_the_window():
    broker, _ = make_broker(dedup_window=3600, dedup_max_keys=1_000, history_limit=0)
    await broker.publish_many([Event("t", i, idempotency_key=str(i)) for i in range(5_000)])
    assert broker.statistics().idempotency_keys == 1_000
    await broker.publish(Event("t", "again", idempotency_key="4999"))
    assert broker.statistics().duplicates == 1


def _damage(db: Path, payload_of: dict[int, str]) -> None:
    conn = sqlite3.connect(db)
    for seq, payload in payload_of.items():
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
    conn.commit()
    conn.close()


async def test_a_damaged_row_is_dead_lettered_with_a_named_error_and_the_rest_flow(tmp_path):
    db = tmp_path / "events.db"
    broker, clock = make_broker(SqliteEventStore(db))
    await broker.subscribe("t", "s")
    await broker.subscribe("$dlq.t", "ops")
    ids = [await broker.publish(Event("t", {"n": n})) for n in range(4)]
    await broker.close()
    _damage(db, {2: '{"n": 99}', 3: '{"n'})      # one edited, one truncated

    broker2, _ = make_broker(SqliteEventStore(db), clock=clock)
    rx, ack = await broker2.subscribe("t", "s")
    got = await drain(rx)
    assert [d.payload for d in got] == [{"n": 0}, {"n": 3}]   # never the edited one
    for d in got:
        await ack.success(d)
    dlq_rx, dlq_ack = await broker2.subscribe("$dlq.t", "ops")
    dead = await drain(dlq_rx)
    assert [d.payload["event"]["id"] for d in dead] == ids[1:3]
    assert all("EventCorruptError" in d.payload["last_error"] for d in dead)
    assert all(d.payload["subscriber"] == "s" for d in dead)
    assert broker2.statistics().dead_lettered == 2
    assert [e.id for e in await broker2.replay("t")] == [ids[0], ids[3]]
    await broker2.close()

    broker3, _ = make_broker(SqliteEventStore(db), clock=clock)   # settled: not again
    rx3, _ = await broker3.subscribe("t", "s")
    assert await drain(rx3) == []
    assert broker3.statistics().dead_lettered == 0
    await broker3.close()


async def test_a_version_1_store_gets_checksums_and_keeps_its_events(tmp_path):
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL, payload TEXT NOT NULL, headers TEXT, idem_key TEXT,
            timestamp REAL NOT NULL);
        INSERT INTO events (id, topic, payload, timestamp) VALUES ('e1', 't', '{"a": 1}', 5);
    """)
    conn.close()
    broker, _ = make_broker(SqliteEventStore(db))
    assert [(e.id, e.payload) for e in await broker.replay("t")] == [("e1", {"a": 1})]
    await broker.close()


_OPEN_SECOND = """
import sys, time
from lion_nb.patterns import SqliteEventStore
from lion_nb.errors import StorageError
t0 = time.monotonic()
try:
    SqliteEventStore(sys.argv[1])
except StorageError as exc:
    print("refused", round(time.monotonic() - t0, 1), exc)
else:
    print("opened")
"""


async def test_a_second_process_on_the_same_sqlite_store_is_told_at_once(tmp_path):
    db = tmp_path / "events.db"
    broker, _ = make_broker(SqliteEventStore(db), max_pending=2)
    await broker.subscribe("t", "s")
    root = Path(__file__).resolve().parents[2]
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _OPEN_SECOND, str(db)], capture_output=True,
        text=True, timeout=60, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.stdout.startswith("refused"), out.stdout + out.stderr
    assert float(out.stdout.split()[1]) < 5          # at once, not a hang
    assert "another process" in out.stdout and "NATS" in out.stdout
    with pytest.raises(StorageError, match="another process"):   # a second store, same process
        SqliteEventStore(db)
    await broker.publish(Event("t", 1))             # the first one is unharmed
    await broker.close()
    SqliteEventStore(db)                            # and once closed, the file is free again


async def test_compaction_drops_finished_events_past_retention_only(tmp_path):
    broker, clock = make_broker(SqliteEventStore(tmp_path / "e.db"), max_deliveries=1)
    rx, ack = await broker.subscribe("t", "s")
    await broker.subscribe("$dlq.t", "ops")
    await broker.publish(Event("t", "acked"))
    await broker.publish(Event("t", "dead"))
    await broker.publish(Event("t", "open"))
    await ack.success(await rx.recv())
    await ack.failure(await rx.recv(), "boom")      # max_deliveries=1: dead-lettered
    await clock.advance(100)
    await broker.publish(Event("t", "recent"))
    # acked, dead-lettered, and the advisory nobody subscribed to; "open" and the $dlq event
    # (pending for ops) are still needed
    assert await broker.compact(older_than=50) == 3
    assert [e.payload for e in await broker.replay("t")] == ["open", "recent"]
    assert [d.payload for d in await drain(rx)] == ["open", "recent"]
    await broker.close()


async def test_retention_compacts_while_publishing():
    broker, clock = make_broker(retention=10, history_limit=0)
    for n in range(100):
        await broker.publish(Event("t", n))
        await clock.advance(1)
    await asyncio.sleep(0)
    assert len(broker.store) <= 20          # about retention + retention / 4 seconds' worth
    assert broker.statistics().published == 100


async def test_recv_returns_none_to_a_waiting_receiver_when_the_broker_closes():
    broker, _ = make_broker()
    rx, _ = await broker.subscribe("t", "s")
    waiting = asyncio.ensure_future(rx.recv())
    consuming = asyncio.ensure_future(_consume(rx))
    await asyncio.sleep(0)
    await broker.close()
    assert await waiting is None
    assert await consuming == []


async def _consume(rx):
    return [d async for d in rx]

