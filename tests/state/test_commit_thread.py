"""Where a durable node commit runs: on the loop's thread when nothing else could run
meanwhile (issue 21: the hand-off to the storage thread cost more than the fsync on a
loaded machine), on the storage's thread when other nodes are in flight, so they group."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import FileStorage, SqliteStorage, StateMachineManager

#: The steps each backend reports once inside every write (transaction, record or batch).
STEPS = {"sqlite": {"before_commit"}, "file": {"record_replaced", "journal_committed"}}


def chain(n: int):
    b = WorkflowBuilder("chain")
    nodes = [Node(f"n{i}", handler="work") for i in range(n)]
    b.add_nodes(*nodes)
    for a, z in zip(nodes, nodes[1:]):
        b.connect(a, z)
    return b.build()


def fan(n: int):
    b = WorkflowBuilder("fan")
    root = Node("root", handler="work")
    b.add_nodes(root, *[Node(f"leaf{i}", handler="work") for i in range(n)])
    for i in range(n):
        b.connect("root", f"leaf{i}")
    return b.build()


@pytest.fixture(params=["sqlite", "file"])
async def commits(request, tmp_path):
    """(executor, threads): whether each node commit ran on the loop's thread."""
    kind = request.param
    storage = (SqliteStorage(tmp_path / "s.db") if kind == "sqlite"
               else FileStorage(tmp_path / "files"))
    on_loop: list[bool] = []

    def hook(step: str) -> None:
        if step in STEPS[kind]:
            on_loop.append(threading.current_thread() is threading.main_thread())

    storage.step_hook = hook
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage),
                                config=ExecutorConfig())

    async def work(ctx):
        await asyncio.sleep(0.005)  # long enough for siblings to overlap
        return {"node": ctx.node_name}

    executor.add_handler("work", work)
    try:
        async with executor:
            yield executor, on_loop
    finally:
        await storage.close()


async def test_a_lone_chain_commits_each_node_on_the_loops_thread(commits):
    executor, on_loop = commits
    result = await executor.run(chain(12))
    assert result.succeeded and result.results["n11"] == {"node": "n11"}
    # Every node commit (12, plus the first node's start record) skipped the hand-off;
    # the header and final writes go through the storage thread as before.
    assert on_loop.count(True) >= 13


async def test_concurrent_nodes_hand_their_commits_to_the_storage_thread(commits):
    executor, on_loop = commits
    result = await executor.run(fan(16))
    assert result.succeeded and len(result.results) == 17
    # The root ran alone (its start record and its commit); the leaves' commits, grouped
    # while one is written, never block the loop: other leaves are still running.
    assert on_loop.count(True) == 2 and on_loop[-1] is False, on_loop
