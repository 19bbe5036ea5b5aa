"""Crash harness: SIGKILL a process running a durable workflow at many points, resume, check.

Each scenario starts the 26-node crash workflow (tests/engine/crash/workflow.py) in a
child process with SqliteStorage or FileStorage and kills it -- as a write
starts, inside a write (the backends' step hooks), right after a write was
acknowledged, or at a random time -- then starts a new child that calls
``executor.resume(iid)``, and so on until a child finishes. After every child
the parent reads the storage and checks:

* no committed result lost: every acknowledged node record, and every record
  seen after an earlier child, is still there, unchanged;
* no committed node re-executed: a node committed before a child started never
  appears in that child's side-effect log, and the run that committed a node is
  the only one of its generation;
* the final results and node states equal those of an uninterrupted run;
* the commit sequence never reads as damage (read_instance checks it and would
  raise StorageCorruptError for a record missing or a header older than one).

CI runs a few dozen kills; ``LION_CRASH_KILLS=200`` runs the long sweep.
"""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine.crash.workflow import build, register
from pg_server import new_schema
from lion_nb.engine import WorkflowExecutor
from lion_nb.engine import read_instance
from lion_nb.state import FileStorage, PostgresStorage, SqliteStorage

CHILD = str(Path(__file__).parent / "crash" / "child.py")
KILLS = int(os.environ.get("LION_CRASH_KILLS", "0") or 0)
CI_KILLS_PER_BACKEND = 16
MAX_GENERATIONS = 8  # per scenario; the last one runs without a kill
MODES = ("before", "inside", "after", "random")


def kills_per_backend() -> int:
    return max(1, KILLS // 2) if KILLS else CI_KILLS_PER_BACKEND


async def expected_outcome() -> dict:
    """Results and node states of an uninterrupted, in-memory run."""
    executor = WorkflowExecutor()
    register(executor, max_sleep=0)
    async with executor:
        result = await executor.run(build())
    return {"results": result.results,
            "node_states": {k: v.value for k, v in result.node_states.items()}}


def open_storage(kind, path):
    return {"sqlite": SqliteStorage, "file": FileStorage, "postgres": PostgresStorage}[kind](path)


async def snapshot(kind, path, iid):
    """The stored instance as a fresh process sees it: {node name: committed record}.

    Records in state "running" are start records (a node's attempt began), which
    its end record overwrites: they are not committed results.
    """
    store = open_storage(kind, path)
    try:
        stored = await read_instance(store, iid)
    finally:
        await store.close()
    if stored is None:
        return None, {}
    return stored, {rec["name"]: rec for rec in stored.nodes.values()
                    if rec["state"] != "running"}


def kill_plan(rng: random.Random, kind: str) -> str:
    mode = rng.choice(MODES)
    if mode == "inside":
        # FileStorage has step hooks only in multi-record batches (a handful per run).
        return f"inside:{rng.randint(1, 4 if kind == 'file' else 24)}"
    if mode == "random":
        return f"random:{rng.uniform(0.0, 0.06):.3f}"
    return f"{mode}:{rng.randint(1, 24)}"


def run_child(kind, path, log, gen, action, iid, plan):
    """Run one child to its end (natural or SIGKILL); (returncode, acked keys, done payload)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    delay = None
    if plan.startswith("random:"):
        delay, plan = float(plan.split(":")[1]), "none"
    child = subprocess.Popen([sys.executable, CHILD, kind, path, log, str(gen), action, iid,
                              plan], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    if delay is not None:
        lines = []
        while True:  # kill at a random time after the instance is running
            line = child.stdout.readline()
            lines.append(line)
            if not line or line.strip() == "running":
                break
        if line:
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
        out = "".join(lines) + out
    else:
        out, err = child.communicate(timeout=60)
    acked, done = [], None
    for line in out.splitlines():
        if line.startswith("acked "):
            acked.extend(line.split()[1:])
        elif line.startswith("done "):
            done = json.loads(line[5:])
    if child.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child {gen} ({plan}) failed with {child.returncode}:\n{err}")
    return child.returncode, acked, done


def read_log(log):
    by_gen = defaultdict(list)
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                gen, node, attempt = line.split()
                by_gen[int(gen)].append((node, int(attempt)))
    return by_gen


async def run_scenario(kind, root, scenario, rng, expected, budget, pg=None):
    """One instance from start to finish under kills; returns the kill modes that struck."""
    path = str(root / (f"s{scenario}.db" if kind == "sqlite" else f"s{scenario}"))
    if kind == "postgres":
        path = new_schema(pg)
    log = str(root / f"s{scenario}.log")
    iid = f"crash-{kind}-{scenario}"
    committed: dict[str, dict] = {}   # node name -> record, as of the last child
    committed_at: dict[str, int] = {}  # node name -> generation that committed it
    kills: list[str] = []
    gen, done, stored = 0, None, None
    while True:
        last = gen == MAX_GENERATIONS - 1 or len(kills) >= budget
        plan = "none" if last else kill_plan(rng, kind)
        # Killed before its header committed, the instance never existed: start it again.
        action = "resume" if gen and stored is not None else "start"
        code, acked, done = run_child(kind, path, log, gen, action, iid, plan)
        if code == -signal.SIGKILL:
            kills.append(plan.split(":")[0])
        stored, now = await snapshot(kind, path, iid)
        where = f"{kind} scenario {scenario}, generation {gen} ({plan})"
        for name, rec in committed.items():  # nothing committed is lost or changed
            assert now.get(name) == rec, f"{where}: committed node {name} lost or changed"
        names_by_key = {k: rec["name"] for k, rec in (
            (f"nodes/{iid}/{i:06d}", r) for i, r in (stored.nodes.items() if stored else ()))}
        for key in acked:
            if key.startswith("nodes/"):
                assert key in names_by_key, f"{where}: acknowledged {key} was lost"
        ran = read_log(log).get(gen, [])
        for node, _ in ran:  # nothing committed before this child ran again in it
            assert node not in committed, (
                f"{where}: node {node} re-executed although committed in generation "
                f"{committed_at[node]}")
        for name, rec in now.items():
            if name not in committed:
                committed_at[name] = gen
                if rec["state"] == "succeeded":
                    runs = [a for n, a in ran if n == name]
                    assert len(runs) == 1, f"{where}: {name} committed after runs {runs}"
                    earlier = [a for g in range(gen) for n, a in read_log(log).get(g, [])
                               if n == name]  # attempts count on across crashes
                    assert runs[0] > max(earlier, default=0), f"{where}: {name} {runs}"
        committed = now
        if code == 0:
            break
        gen += 1
    assert stored is not None and stored.state == "succeeded", f"{kind} {scenario}: {stored}"
    assert stored.results == expected["results"]
    assert stored.node_states == expected["node_states"]
    if done is not None:  # the last child ran the end itself (not merely found it finished)
        assert done["results"] == expected["results"]
        assert done["node_states"] == expected["node_states"]
    assert all(node != "Small" for runs in read_log(log).values() for node, _ in runs)
    return kills


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres"])
async def test_sigkill_anywhere_then_resume_loses_nothing_and_reruns_nothing(tmp_path, kind,
                                                                              request):
    pg = request.getfixturevalue("pg_server") if kind == "postgres" else None
    expected = await expected_outcome()
    assert expected["node_states"]["Small"] == "skipped"
    assert expected["node_states"]["Final"] == "succeeded"
    rng = random.Random(f"{kind}-{KILLS}")
    target = kills_per_backend()
    struck: list[str] = []
    scenario = 0
    while len(struck) < target:
        struck += await run_scenario(kind, tmp_path, scenario, rng, expected,
                                     target - len(struck), pg)
        scenario += 1
    assert set(struck) == set(MODES), f"some kill points were never hit: {struck}"
    await asyncio.sleep(0)
