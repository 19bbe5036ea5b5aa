"""Child process of the prune crash test: prune everything finished, maybe die on cue.

    python prune_child.py KIND STORE KILL

KILL is as in child.py (``before:K``, ``inside:K``, ``after:K`` or ``none``).
Prints ``pruned N`` if it lives to the end.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/

from engine.crash.child import instrument  # noqa: E402
from lion_nb.engine import WorkflowExecutor  # noqa: E402
from lion_nb.state import FileStorage, SqliteStorage, StateMachineManager  # noqa: E402


async def main(kind: str, store: str, kill: str) -> None:
    storage = {"sqlite": SqliteStorage, "file": FileStorage}[kind](store)
    instrument(storage, kill)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage))
    await executor.start()
    try:
        print("pruned", await executor.prune(), flush=True)
    finally:
        await executor.stop()
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
