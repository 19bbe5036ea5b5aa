"""A crash at every commit boundary of the SQLite event store loses nothing committed,
redelivers nothing acked, and applies each exactly-once effect once.

The child stops itself (SIGKILL) right before or right after the N-th commit of its
store; the parent reopens the file and finishes the work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lion_nb.patterns import DeliveryMode, EventAck, SqliteEventStore

from events.helpers import drain, make_broker

CHILD = Path(__file__).parent / "helpers" / "crash_child.py"
ROOT = Path(__file__).resolve().parents[2]
# 2 registrations, 5 publishes, 10 acks: 17 commits in a run that is not stopped
BOUNDARIES = [1, 2, 3, 5, 7, 8, 9, 12, 16, 17]


def run_child(db: Path, step: str, n: int) -> tuple[int, list[list[str]]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(CHILD), str(db), step, str(n)],
                         capture_output=True, text=True, env=env, timeout=120)
    return out.returncode, [line.split() for line in out.stdout.splitlines()]


@pytest.mark.parametrize("step", ["before_commit", "after_commit"])
@pytest.mark.parametrize("n", BOUNDARIES)
async def test_a_crash_at_a_commit_boundary(tmp_path, step, n):
    db = tmp_path / "events.db"
    code, lines = run_child(db, step, n)
    assert code == -signal.SIGKILL, lines
    published = [w[1] for w in lines if w[0] == "published"]
    acked = {(w[1], w[2]) for w in lines if w[0] == "acked"}

    broker, _ = make_broker(SqliteEventStore(db))
    logged = [e for e in await broker.replay("job")]
    # everything whose publish returned is in the log, once; at most one more (in flight)
    assert [e.id for e in logged][:len(published)] == published
    assert len(logged) <= len(published) + 1
    if not logged:
        await broker.close()
        return
    plain_rx, plain_ack = await broker.subscribe("job", "plain")
    sums_rx, sums_ack = await broker.subscribe("job", "sums", mode=DeliveryMode.EXACTLY_ONCE)
    again_plain = await drain(plain_rx)
    assert not {("plain", d.id) for d in again_plain} & acked      # acked: never again
    for d in again_plain:
        await plain_ack.send(EventAck.success(d, "plain"))
    for d in await drain(sums_rx):
        assert ("sums", d.id) not in acked
        await sums_ack.send(EventAck.success(
            d, "sums", effects={"sum": (await broker.subscriber_state("sums")).get("sum", 0)
                                + d.payload["n"],
                                "count": (await broker.subscriber_state("sums"))
                                .get("count", 0) + 1}))
    state = await broker.subscriber_state("sums")
    # each logged event's effect applied exactly once, across the crash and the restart
    assert state.get("count", 0) == len(logged)
    assert state.get("sum", 0) == sum(e.payload["n"] for e in logged)
    # and every logged event reached "plain" exactly as often as needed: nothing pending
    assert broker.statistics().pending == {"plain": 0, "sums": 0}
    await broker.close()
