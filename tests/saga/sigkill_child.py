"""Child process for the saga SIGKILL tests: run sagas on a SQLite saga log until killed.

Usage: python sigkill_child.py DB_PATH MODE DISPATCH N_SAGAS

MODE ``forward``: every step succeeds. MODE ``compensate``: the last step
always fails, so every saga compensates. DISPATCH is ``local`` (handlers
called in process) or ``broker`` (commands and replies through a broker on a
SQLite event store next to the log). Each service call prints
``<kind> <instance> <step>`` before it returns; the parent kills the process
mid-way and then resumes the same log itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.patterns import (  # noqa: E402
    EventBroker, SagaKey, SagaManager, SagaManagerConfig, SqliteEventStore,
)
from lion_nb.model import RetryPolicy  # noqa: E402
from lion_nb.state import SqliteStorage  # noqa: E402

from saga.helpers import chain  # noqa: E402

STEPS = 4
KEY = SagaKey(b"a test key that is 32 bytes long")


def say(*words: str) -> None:
    """One line to the parent, flushed at once so a kill cannot hide it."""
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def build(db: str, dispatch: str) -> tuple[SagaManager, EventBroker]:
    """The manager both the child and the resuming parent use."""
    broker = EventBroker()
    if dispatch == "broker":
        broker.with_event_store(SqliteEventStore(db + ".events"))
    config = SagaManagerConfig(name="crashy", step_timeout=60, compensation_timeout=60,
                               compensation_backoff=RetryPolicy())
    # One key for the killed manager and the resuming one: replies and commands in flight
    # across the crash stay valid.
    return SagaManager(broker, config, storage=SqliteStorage(db), key=KEY), broker


def handler_for(mode: str, report):
    """A service handler that reports each call and fails the last step in compensate mode."""
    async def handler(cmd):
        await asyncio.sleep(0.05)         # real work takes time: the kill lands mid-saga
        report(cmd)
        if mode == "compensate" and cmd.kind == "step" and cmd.step_id == f"s{STEPS}":
            raise RuntimeError("payment declined")
        return {"by": cmd.step_id, "attempt": cmd.attempt}
    return handler


async def main(db: str, mode: str, dispatch: str, n: int) -> None:
    manager, _ = build(db, dispatch)
    await manager.register_definition(chain(STEPS))
    await manager.register_service("svc", handler_for(
        mode, lambda cmd: say(cmd.kind, cmd.instance_id, cmd.step_id)),
        via_broker=dispatch == "broker")
    ids = []
    for i in range(n):
        inst = await manager.create_instance("chain", {"n": i}, instance_id=f"i{i:03d}")
        ids.append(inst.id)
    for instance_id in ids:
        await manager.start_instance(instance_id)
    say("started", "-", "-")
    for instance_id in ids:
        await manager.wait(instance_id)
    say("finished", "-", "-")
    await asyncio.Event().wait()          # stay alive: the parent kills us


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
