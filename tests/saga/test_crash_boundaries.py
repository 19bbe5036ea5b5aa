"""Crash injection at every commit boundary of the saga log, forward and backward.

``crash_sweep.py`` SIGKILLs a child right before and right after each write
of the saga manager, recovers the log in a new process, and checks that the
saga ends in the right status, that no step or compensation runs again after
its outcome was committed, that no step runs beyond its attempts, and that
a saga never ends ``compensated`` with a step left undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lion_nb.errors import SagaStateError
from lion_nb.state import SqliteStorage

from saga.helpers import Services, chain, make_manager

SWEEP = Path(__file__).parent / "crash_sweep.py"

# scenario -> (its final status, the fewest writes it must make)
EXPECTED = {"forward": ("completed", 7), "backward": ("compensated", 12),
            "stuck": ("compensation_failed", 9), "pivot": ("failed", 6),
            "parallel": ("compensated", 8), "abort": ("compensated", 8)}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_a_crash_at_every_commit_boundary_recovers_to_the_right_status(tmp_path, scenario):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(SWEEP), scenario, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    status, fewest = EXPECTED[scenario]
    writes = results[0]["writes"]
    assert writes >= fewest
    assert [(r["boundary"], r["when"]) for r in results] == [
        (n, when) for n in range(1, writes + 1) for when in ("before", "after")]
    assert [r for r in results if r["problems"]] == []
    # Every boundary ends in the scenario's status, except where a crash lost an abort()
    # call that never returned (the sweep expects "completed" there, and checks it).
    assert [r for r in results if r["status"] != status] == [
        r for r in results if scenario == "abort" and r["status"] == "completed"]


async def test_create_instance_refuses_an_id_the_durable_log_holds(tmp_path):
    storage = SqliteStorage(tmp_path / "sagas.db")
    first, broker, _ = make_manager(storage=storage)
    await first.register_definition(chain(2))
    await first.register_service("svc", Services())
    inst = await first.create_instance("chain", {"v": 1}, instance_id="order-1")
    await first.start_instance(inst.id)
    await first.wait(inst.id)
    await first.close()

    second, _, _ = make_manager(storage=storage, broker=broker)
    await second.register_definition(chain(2))
    try:
        with pytest.raises(SagaStateError, match="'order-1' is already in the saga log"):
            await second.create_instance("chain", {"v": 2}, instance_id="order-1")
        header = await storage.get("saga/saga-manager/inst/order-1")
        assert header is not None and header["data"] == {"v": 1}   # not overwritten
        assert header["status"] == "completed"
    finally:
        await second.close()
        await broker.close()
        await storage.close()
