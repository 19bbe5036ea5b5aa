"""Issue 21: a durable commit encodes a node's result once (the result check's bytes are
spliced into the record), and what it stores is still exactly the canonical record."""

from __future__ import annotations

import json
import sqlite3

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor, read_instance
from lion_nb.errors import ResultNotSerializableError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import (FileStorage, InstanceState, NodeState, SqliteStorage,
                           StateMachineManager, canonical_json)

# Names and results that would trip a splice that searched the bytes carelessly.
TRICKY = {
    'a "output":null b': {"z": 1, "a": [1, 2.5, None], "output": None},
    "output": '"output":null,"seq":1',
    "ünï\\cödé": {"k\u2028": "\U0001f600", "n": {"b": {}, "a": []}},
    "plain": [None, True, False, 0, -1, 1e300, "x"],
    "none": None,
    "empty": {},
}


def chain(names):
    b = WorkflowBuilder("tricky")
    nodes = [Node(n, handler=f"h{i}") for i, n in enumerate(names)]
    b.add_nodes(*nodes)
    for first, second in zip(nodes, nodes[1:]):
        b.connect(first, second)
    return b.build()


async def run_on(storage, handlers, definition, **config):
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(**config))
    for name, fn in handlers.items():
        ex.add_handler(name, fn)
    await ex.start()
    try:
        return await ex.run(definition)
    finally:
        await ex.stop()


@pytest.mark.parametrize("crash_tracking", [True, False])
async def test_stored_node_records_are_exactly_canonical_and_hold_the_results(tmp_path,
                                                                           crash_tracking):
    storage = SqliteStorage(tmp_path / "s.db")
    names = list(TRICKY)
    handlers = {f"h{i}": (lambda value: lambda ctx: value)(TRICKY[n])
                for i, n in enumerate(names)}
    result = await run_on(storage, handlers, chain(names),
                          max_node_crashes=3 if crash_tracking else None)
    assert result.succeeded, result.error
    stored = await read_instance(storage, result.instance_id)
    assert stored is not None
    assert stored.results == {n: json.loads(json.dumps(v)) for n, v in TRICKY.items()}
    await storage.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rows = conn.execute("SELECT key, body FROM lion_records WHERE key LIKE 'nodes/%'")
        bodies = {key: bytes(body) for key, body in rows}
    assert len(bodies) == len(names)
    for key, raw in bodies.items():
        body = raw[raw.index(b'"body":') + 7:-1]
        doc = json.loads(body)
        assert doc["key"] == key
        assert body == canonical_json(doc)  # byte for byte: the checksum covers these


@pytest.mark.parametrize("kind", ["sqlite", "files"])
@pytest.mark.parametrize("value", [{1: "a", "b": 2}, "lone \ud800 surrogate"])
async def test_a_result_no_record_can_hold_fails_its_node_not_the_commit(tmp_path, kind, value):
    # Keys of mixed types cannot be sorted into a canonical record; a lone surrogate has no
    # UTF-8. A run without durable storage keeps such results in memory, as before.
    storage = {"sqlite": lambda: SqliteStorage(tmp_path / "s.db"),
               "files": lambda: FileStorage(tmp_path / "f")}[kind]()
    result = await run_on(storage, {"h0": lambda ctx: value}, chain(["bad"]))
    # Before: the result check passed, then the commit failed: the instance was cancelled.
    assert result.state is InstanceState.FAILED, result.error
    assert result.node_states["bad"] is NodeState.FAILED
    cause = result.exceptions["bad"].__cause__
    assert isinstance(cause, ResultNotSerializableError) and cause.node == "bad"
    await storage.close()


async def test_a_cyclic_result_fails_its_node_in_memory_too():
    cyclic: list = []
    cyclic.append(cyclic)
    ex = WorkflowExecutor()
    ex.add_handler("h0", lambda ctx: cyclic)
    await ex.start()
    try:
        result = await ex.run(chain(["loop"]))
    finally:
        await ex.stop()
    cause = result.exceptions["loop"].__cause__
    assert isinstance(cause, ResultNotSerializableError) and cause.node == "loop"
