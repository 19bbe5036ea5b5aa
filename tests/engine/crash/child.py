"""Child process of the crash harness: run or resume the crash workflow, maybe die on cue.

    python child.py KIND STORE LOG GENERATION start|resume INSTANCE KILL

KIND is ``sqlite``, ``file`` or ``postgres`` (STORE is then a DSN). KILL is
``none`` or ``MODE:K``: SIGKILL itself

* ``before:K`` -- as the K-th ``put_many`` of this process is about to start;
* ``inside:K`` -- at the K-th step hook of the backend (SQLite: transaction
  built, not committed; files: batch journal committed, or one record of it
  applied; PostgreSQL: before or after COMMIT);
* ``after:K``  -- right after the K-th ``put_many`` returned (acknowledged,
  successors not yet queued).

Stdout lines: ``running``, then ``acked KEY...`` after every acknowledged write
(written before any later kill, so the parent sees them), then ``done JSON``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/

from engine.crash.workflow import build, register  # noqa: E402
from lion_nb.engine import ExecutorConfig, WorkflowExecutor  # noqa: E402
from lion_nb.errors import StateError  # noqa: E402
from lion_nb.state import (  # noqa: E402
    FileStorage,
    PostgresStorage,
    SqliteStorage,
    StateMachineManager,
)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def instrument(storage, kill: str) -> None:
    mode, _, k = kill.partition(":")
    target = int(k) if k else 0
    puts = [0]
    steps = [0]
    original = storage.put_many

    async def put_many(items, *, deletes=(), fence=None):
        puts[0] += 1
        mine = puts[0]  # commits run concurrently: the counter moves while we await
        if mode == "before" and mine == target:
            die()
        await original(items, deletes=deletes, fence=fence)
        print("acked", *[key for key, _ in items], flush=True)
        if mode == "after" and mine == target:
            die()

    def hook(step: str) -> None:
        steps[0] += 1
        if mode == "inside" and steps[0] == target:
            die()

    storage.put_many = put_many
    storage.step_hook = hook


async def main(kind: str, store: str, log: str, generation: str, action: str, iid: str,
               kill: str) -> None:
    storage = {"sqlite": SqliteStorage, "file": FileStorage,
               "postgres": PostgresStorage}[kind](store)
    instrument(storage, kill)
    # Random kills are not a node's fault: allow one crash per generation of a scenario.
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage),
                                config=ExecutorConfig(max_node_crashes=8))
    register(executor, log, int(generation))
    await executor.start()
    if action == "start":
        await executor.execute_workflow(build(), instance_id=iid)
    else:
        try:
            await executor.resume(iid)
        except StateError as exc:
            if "already finished" not in str(exc):
                raise
            print("done", json.dumps(None), flush=True)  # the previous process finished it
            return
    print("running", flush=True)
    result = await executor.wait(iid)
    print("done", json.dumps({"state": result.state.value, "results": result.results,
                              "node_states": {k: v.value
                                              for k, v in result.node_states.items()}}),
          flush=True)
    await executor.stop()
    await storage.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
