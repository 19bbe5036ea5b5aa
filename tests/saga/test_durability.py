"""The saga log: resume after a crash forward or backward, never re-running what committed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lion_nb.patterns import Event, SagaStatus, StepStatus
from lion_nb.state import MemoryStorage

from saga.helpers import Services, chain, make_manager, settle
from saga.sigkill_child import STEPS, build, handler_for

CHILD = Path(__file__).parent / "sigkill_child.py"


async def test_resume_forward_after_a_crash_skips_committed_steps():
    storage = MemoryStorage()
    m1, b1, _ = make_manager(storage=storage)
    await m1.register_definition(chain(4))
    await m1.register_service("svc", Services(hang=["s3"]))
    inst = await m1.create_instance("chain", {"order": 7})
    await m1.start_instance(inst.id)
    await settle()
    assert inst.steps["s3"].status is StepStatus.RUNNING
    await m1.close()                       # the "crash": nothing more is written
    await b1.close()

    m2, b2, _ = make_manager(storage=storage)
    await m2.register_definition(chain(4))
    services = Services()
    await m2.register_service("svc", services)
    [again] = await m2.recover()
    assert again.id == inst.id and again.status is SagaStatus.RUNNING
    assert again.data == {"order": 7}
    await m2.wait(inst.id)
    assert again.status is SagaStatus.COMPLETED
    assert services.steps("step") == ["s3", "s4"]          # s1, s2 committed: not again
    assert services.commands[0].attempt == 1              # the same attempt, same command id
    assert services.commands[0].command_id == f"{inst.id}.f.s3.1"
    assert dict(services.commands[0].results) == {
        "s1": {"done": "s1", "seen": []}, "s2": {"done": "s2", "seen": ["s1"]}}
    assert await m2.recover() == []                       # nothing left to resume
    await m2.close()
    await b2.close()


async def test_resume_backward_after_a_crash_mid_compensation():
    storage = MemoryStorage()
    m1, b1, _ = make_manager(storage=storage)
    await m1.register_definition(chain(4))
    gate = asyncio.Event()
    first = Services(fail_steps=["s4"])

    async def stuck_on_s2(cmd):
        if cmd.kind == "compensate" and cmd.step_id == "s2":
            await gate.wait()
        return await first(cmd)

    await m1.register_service("svc", stuck_on_s2)
    inst = await m1.create_instance("chain")
    await m1.start_instance(inst.id)
    await settle()
    assert first.steps("compensate") == ["s3"]
    assert inst.steps["s2"].status is StepStatus.COMPENSATING
    await m1.close()
    await b1.close()

    m2, b2, _ = make_manager(storage=storage)
    await m2.register_definition(chain(4))
    services = Services()
    await m2.register_service("svc", services)
    [again] = await m2.recover()
    assert again.status is SagaStatus.COMPENSATING
    await m2.wait(inst.id)
    assert again.status is SagaStatus.COMPENSATED
    assert services.steps("step") == []                   # never forward again
    assert services.steps("compensate") == ["s2", "s1"]   # s3's undo committed: not again
    assert again.compensation_path == ["s3", "s2", "s1"]
    assert "'s4'" in again.error
    await m2.close()
    await b2.close()


async def test_a_saga_needing_attention_is_loaded_and_waits_for_the_operator():
    storage = MemoryStorage()
    m1, b1, _ = make_manager(storage=storage, compensation_attempts=2)
    await m1.register_definition(chain(2))
    await m1.register_service("svc", Services(fail_steps=["s2"], comp_failures={"s1": -1}))
    inst = await m1.run("chain")
    assert inst.status is SagaStatus.COMPENSATION_FAILED
    await m1.close()
    m2, _, _ = make_manager(storage=storage, broker=b1)
    await m2.register_definition(chain(2))
    services = Services()
    await m2.register_service("svc", services)
    [again] = await m2.recover()
    await settle()
    assert again.status is SagaStatus.COMPENSATION_FAILED and services.calls == []
    assert again.failed_step == "s1" and again.steps["s1"].comp_attempts == 2
    await m2.retry(again.id)
    await m2.wait(again.id)
    assert again.status is SagaStatus.COMPENSATED and services.steps("compensate") == ["s1"]
    await m2.close()
    await b1.close()


async def test_a_changed_definition_does_not_change_a_running_instance():
    storage = MemoryStorage()
    m1, b1, _ = make_manager(storage=storage)
    await m1.register_definition(chain(3))
    await m1.register_service("svc", Services(hang=["s2"]))
    inst = await m1.create_instance("chain")
    await m1.start_instance(inst.id)
    await settle()
    await m1.close()
    m2, _, _ = make_manager(storage=storage, broker=b1)
    await m2.register_definition(chain(5))                # same id, more steps
    services = Services()
    await m2.register_service("svc", services)
    [again] = await m2.recover()
    await m2.wait(again.id)
    assert services.steps("step") == ["s2", "s3"]         # the version it started with
    await m2.close()
    await b1.close()


async def test_duplicate_replies_are_applied_once():
    manager, broker, _ = make_manager()
    await manager.register_definition(chain(2))
    rx, ack = await broker.subscribe("saga.command.svc", "twice")
    key = manager.key.for_service("svc")
    calls = []

    async def serve_twice():
        async for d in rx:
            cmd = key.open_command(d.payload)
            calls.append(cmd["step_id"])
            reply = key.seal_reply(cmd, ok=True, result={"n": len(calls)})
            # At-least-once on the service side: the same reply published twice.
            await broker.publish(Event(cmd["reply_to"], reply))
            await broker.publish(Event(cmd["reply_to"], dict(reply)))
            await ack.success(d)

    server = asyncio.ensure_future(serve_twice())
    inst = await manager.run("chain")
    await settle()
    assert inst.status is SagaStatus.COMPLETED
    assert calls == ["s1", "s2"]
    assert inst.results == {"s1": {"n": 1}, "s2": {"n": 2}}
    assert manager.statistics().duplicate_replies == 2
    assert manager.statistics().steps_succeeded == 2
    assert [r["event"] for r in manager.history()
            if r["step_id"] == "s1"] == ["started", "succeeded"]
    server.cancel()
    await manager.close()
    await broker.close()


async def test_a_stale_failure_reply_does_not_fail_the_retry():
    manager, broker, clock = make_manager(step_attempts=2, step_timeout=5)
    await manager.register_definition(chain(1))
    rx, ack = await broker.subscribe("saga.command.svc", "slow")
    first = await manager.create_instance("chain")
    await manager.start_instance(first.id)
    await settle()
    key = manager.key.for_service("svc")
    delivery = rx.recv_nowait()
    await ack.success(delivery)
    attempt1 = key.open_command(delivery.payload)
    await clock.advance(5)                     # attempt 1 times out, attempt 2 is sent
    attempt2 = key.open_command(rx.recv_nowait().payload)
    assert attempt2["attempt"] == 2
    reply_to = attempt1["reply_to"]
    await broker.publish(Event(reply_to, key.seal_reply(attempt1, ok=False, error="too late")))
    await settle()
    assert first.status is SagaStatus.RUNNING  # the stale failure was ignored
    await broker.publish(Event(reply_to, key.seal_reply(attempt2, ok=True, result="fine")))
    await manager.wait(first.id)
    assert first.status is SagaStatus.COMPLETED and first.results == {"s1": "fine"}
    await manager.close()
    await broker.close()


def _run_child(db: Path, mode: str, dispatch: str, n: int, kill_after: int) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, str(CHILD), str(db), mode, dispatch, str(n)],
                             stdout=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    watched = "step" if mode == "forward" else "compensate"
    try:
        assert child.stdout is not None
        seen = 0
        for line in child.stdout:
            lines.append(line.strip())
            seen += line.startswith(watched)
            if seen == kill_after:
                child.send_signal(signal.SIGKILL)
            if line.startswith("finished"):
                break
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not any(line.startswith("finished") for line in lines), "killed too late"
    return lines


async def _resume(db: Path, mode: str, dispatch: str) -> tuple[list, list, list, set]:
    manager, broker = build(str(db), dispatch)
    await manager.register_definition(chain(STEPS))
    calls: list[tuple[str, str, str]] = []
    await manager.register_service("svc", handler_for(
        mode, lambda cmd: calls.append((cmd.kind, cmd.instance_id, cmd.step_id))),
        via_broker=dispatch == "broker")
    before = await broker.replay("saga.command.>") if dispatch == "broker" else []
    start = max((e.offset for e in before), default=-1) + 1
    loaded = await manager.recover()
    # recover() has not yielded since loading: this is exactly what the log committed.
    committed = {(("step" if st.status is StepStatus.SUCCEEDED else "compensate"), i.id, sid)
                 for i in loaded for sid, st in i.steps.items()
                 if st.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATED)}
    committed |= {("step", i.id, sid) for i in loaded for sid, st in i.steps.items()
                  if st.status is StepStatus.COMPENSATED}
    for inst in loaded:   # start_instance never returned for these: start them now
        if inst.status is SagaStatus.CREATED:
            await manager.start_instance(inst.id)
    finals = [await manager.wait(i.id, timeout=60) for i in loaded]
    if dispatch == "broker":
        # What the resumed manager dispatched. The service may also see commands the
        # broker redelivers because the killed service never acked them: that is the
        # broker's at-least-once towards services (they de-duplicate on command_id),
        # not the saga re-running a step.
        key = manager.key.for_service("svc")
        dispatched = [(c["kind"], c["instance_id"], c["step_id"]) for c in (
            key.open_command(e.payload)
            for e in await broker.replay("saga.command.>", from_offset=start))]
    else:
        dispatched = list(calls)
    await manager.close()
    await broker.close()
    await manager.storage.close()
    return calls, dispatched, finals, committed


@pytest.mark.parametrize("dispatch", ["local", "broker"])
@pytest.mark.parametrize("mode", ["forward", "compensate"])
def test_sigkill_of_the_saga_manager_then_resume_runs_nothing_committed_twice(
        tmp_path, mode, dispatch):
    n = 12
    db = tmp_path / "sagas.db"
    before = _run_child(db, mode, dispatch, n, kill_after=n + 6)
    ran_before = [tuple(line.split()) for line in before if line.split()[0] in
                  ("step", "compensate")]
    calls, dispatched, finals, committed = asyncio.run(_resume(db, mode, dispatch))
    assert finals, "the kill left nothing to resume"
    assert committed, "the kill came before anything committed"
    assert not committed & set(dispatched)             # nothing committed is sent again
    want = SagaStatus.COMPLETED if mode == "forward" else SagaStatus.COMPENSATED

    async def final_states():
        manager, broker = build(str(db), dispatch)
        storage = manager.storage
        out = {}
        for key in await storage.keys("saga/crashy/inst/"):
            out[key.rsplit("/", 1)[1]] = (await storage.get(key))["status"]
        await broker.close()
        await storage.close()
        return out

    states = asyncio.run(final_states())
    assert len(states) == n and set(states.values()) == {want.value}
    everything = ran_before + calls
    for i in range(n):
        inst = f"i{i:03d}"
        steps = [s for k, x, s in everything if k == "step" and x == inst]
        undos = [s for k, x, s in everything if k == "compensate" and x == inst]
        # Every step ran, in order (an attempt cut by the kill may show up twice in a row).
        assert list(dict.fromkeys(steps)) == [f"s{j}" for j in range(1, STEPS + 1)]
        if mode == "compensate":
            assert list(dict.fromkeys(undos)) == [f"s{j}" for j in range(STEPS - 1, 0, -1)]
        else:
            assert undos == []
