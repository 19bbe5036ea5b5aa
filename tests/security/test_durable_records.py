"""Keyed MACs on durable records: resume refuses what the authority did not write (issue 15)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.errors import CheckpointCorruptError
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.security import Authority
from lion_nb.state import NodeState, SqliteStorage, StateMachineManager, canonical_json

AUTHORITY = Authority.generate()


def _executor(storage, release: asyncio.Event) -> WorkflowExecutor:
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(authority=AUTHORITY))

    async def load(ctx):
        return 10

    async def pay(ctx):
        await release.wait()
        return ctx.results["Load"] * ctx.attempt

    ex.add_handler("load", load)
    ex.add_handler("pay", pay)
    return ex


@pytest.fixture
async def stopped_mid_attempt(tmp_path):
    """An instance stopped while Pay's first attempt ran: its attempt record is stored."""
    load, pay = Node("Load", handler="load"), Node("Pay", handler="pay")
    definition = WorkflowBuilder("pay").add_nodes(load, pay).connect(load, pay).build()
    storage = SqliteStorage(tmp_path / "db.sqlite")
    release = asyncio.Event()
    try:
        first = _executor(storage, release)
        async with first:
            iid = await first.execute_workflow(definition)
            while first.snapshot(iid).node_states["Pay"] is not NodeState.RUNNING:
                await asyncio.sleep(0.01)
        # Pay's attempt is recorded in its own start record, or carried by the record
        # that released it (Load's end): whichever holds it is the one to forge.
        records = {k: await storage.get(k) for k in await storage.keys(f"nodes/{iid}/")}
        key = next(k for k, r in records.items()
                   if (r["name"], r["state"]) == ("Pay", "running")
                   or "Pay" in (r.get("starts") or {}))
        record = records[key]
        assert "mac" in record
        release.set()
        yield storage, iid, key, record, release
    finally:
        await storage.close()


def _with_attempt(record, attempts=None, crashes=None):
    """``record`` with Pay's stored attempt count (or crash count) changed."""
    if record["name"] == "Pay":
        return dict(record, **{k: v for k, v in (("attempts", attempts),
                                                 ("crashes", crashes)) if v is not None})
    was = record["starts"]["Pay"]
    now = [was[0] if attempts is None else attempts, was[1] if crashes is None else crashes]
    return dict(record, starts={**record["starts"], "Pay": now})


async def _resume_refused(storage, iid, release) -> CheckpointCorruptError:
    ex = _executor(storage, release)
    async with ex:
        with pytest.raises(CheckpointCorruptError, match="keyed MAC") as info:
            await ex.resume(iid)
    return info.value


async def _resumes(storage, iid, release) -> None:
    ex = _executor(storage, release)
    async with ex:
        await ex.resume(iid)
        result = await ex.wait(iid)
    # The genuine record counted the first attempt: the resumed one is the second.
    assert result.succeeded and result.results["Pay"] == 20 and result.attempts["Pay"] == 2


@pytest.mark.parametrize("change", [{"attempts": 0}, {"crashes": -5}, {"attempts": 99}])
async def test_an_altered_attempt_count_is_refused(stopped_mid_attempt, change):
    storage, iid, key, record, release = stopped_mid_attempt
    await storage.put(key, _with_attempt(record, **change))
    error = await _resume_refused(storage, iid, release)
    assert error.key == key
    await storage.put(key, record)  # the genuine record resumes fine
    await _resumes(storage, iid, release)


async def test_an_attempt_record_without_its_mac_is_refused(stopped_mid_attempt):
    storage, iid, key, record, release = stopped_mid_attempt
    await storage.put(key, {k: v for k, v in record.items() if k != "mac"})
    assert (await _resume_refused(storage, iid, release)).key == key


async def test_an_attempt_record_signed_with_a_foreign_key_is_refused(stopped_mid_attempt):
    storage, iid, key, record, release = stopped_mid_attempt
    body = {k: v for k, v in _with_attempt(record, crashes=0).items() if k != "mac"}
    foreign = Authority.generate().sign(canonical_json([key, body]),
                                        purpose="lion-durable-record")
    await storage.put(key, dict(body, mac=base64.b64encode(foreign).decode("ascii")))
    assert (await _resume_refused(storage, iid, release)).key == key


@pytest.mark.parametrize("field, value", [("h", "not a number"), ("seq", 10**6),
                                          ("manifest", [[0, "x"]]), ("state", "nonsense"),
                                          ("starts", {"Pay": ["x", None]})])
async def test_a_forged_attempt_record_is_refused_before_its_fields_are_used(
        stopped_mid_attempt, field, value):
    # Fields the resume reads to check the commit sequence are attacker text too: the
    # refusal names the record and its MAC, never a ValueError from parsing it.
    storage, iid, key, record, release = stopped_mid_attempt
    await storage.put(key, dict(record, **{field: value}))
    assert (await _resume_refused(storage, iid, release)).key == key
