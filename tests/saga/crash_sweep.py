"""Crash a saga manager at every commit boundary of its log, then recover and check.

Usage: python crash_sweep.py SCENARIO WORKDIR

For one scenario, a first child runs it to the end and counts the manager's
storage writes. Then, for every write n and for ``before`` and ``after``, a
child runs the scenario on a fresh SQLite log and SIGKILLs itself right
before (or right after) write n; a second child recovers that log with a new
manager, finishes the saga, and checks it. Each check prints one JSON line:
``{"boundary": n, "when": ..., "status": ..., "problems": [...]}``.

Children are forked from this process, which never starts a thread or a
loop itself, so every boundary costs a fork, not an interpreter start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion_nb.patterns import (  # noqa: E402
    SagaDefinition, SagaDefinitionBuilder, SagaManager, SagaManagerConfig, SagaStatus, SagaStep,
    StepStatus,
)
from lion_nb.model import RetryPolicy  # noqa: E402
from lion_nb.errors import SagaStateError  # noqa: E402
from lion_nb.state import SqliteStorage, Storage  # noqa: E402

from saga.helpers import chain  # noqa: E402

NAME = "sweep"
INSTANCE = "x"


def parallel() -> SagaDefinition:
    """A parallel stage whose second sibling fails, then a step that never runs."""
    return (SagaDefinitionBuilder("par", "parallel")
            .add_step(SagaStep("s1", "S1", 1, "svc").with_compensation(1))
            .add_parallel(SagaStep("a", "A", 2, "svc").with_compensation(2),
                          SagaStep("b", "B", 3, "svc").with_compensation(3))
            .add_step(SagaStep("s4", "S4", 4, "svc").with_compensation(4))
            .build())


# name -> (definition, config, forward failures, compensation failures, expected status).
# A failure rule is step -> attempts that fail ("all" or a set), so a service behaves
# the same in the crashed process and in the recovering one.
SCENARIOS: dict[str, tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any], str]] = {
    "forward": (lambda: chain(3), {"step_attempts": 2}, {"s2": {1}}, {}, "completed"),
    "backward": (lambda: chain(4), {"step_attempts": 2, "compensation_attempts": 3},
                 {"s4": "all"}, {"s2": {1}}, "compensated"),
    "stuck": (lambda: chain(3), {"compensation_attempts": 2}, {"s3": "all"}, {"s1": "all"},
              "compensation_failed"),
    "pivot": (lambda: chain(3, pivots=[2]), {}, {"s3": "all"}, {}, "failed"),
    "parallel": (parallel, {}, {"b": "all"}, {}, "compensated"),
    # s2's service asks the manager to abort while the saga runs: rolled back from there.
    "abort": (lambda: chain(3), {}, {}, {}, "compensated"),
}


class CrashingStorage(Storage):
    """A real storage that SIGKILLs its own process right before or after write ``at``."""

    def __init__(self, inner: Storage, at: int, when: str) -> None:
        self.inner = inner
        self.durable = inner.durable
        self.at = at
        self.when = when
        self.writes = 0

    async def put_many(self, items: Sequence[tuple[str, dict[str, Any]]], *,
                       deletes: Iterable[str] = (), fence: Any = None) -> None:
        self.writes += 1
        hit = self.writes == self.at
        if hit and self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        await self.inner.put_many(items, deletes=deletes, fence=fence)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    async def put(self, key: str, record: dict[str, Any]) -> None:
        await self.put_many([(key, record)])

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.inner.get(key)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self.inner.keys(prefix)

    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        await self.inner.acquire_lease(key, owner, ttl, now)

    async def close(self) -> None:
        await self.inner.close()


def build(scenario: str, storage: Storage, calls: Path, process: str
          ) -> tuple[SagaManager, SagaDefinition, Any]:
    """The scenario's manager, definition and service (which logs each call to ``calls``)."""
    make, config, fails, comp_fails, _ = SCENARIOS[scenario]
    manager = SagaManager(None, SagaManagerConfig(name=NAME, compensation_backoff=RetryPolicy(),
                                                  **config), storage=storage)
    tasks: set[Any] = set()
    fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def abort() -> None:
        try:
            await manager.abort(INSTANCE, "customer cancelled")
        except SagaStateError:    # already aborted (this step ran again after a crash)
            pass

    async def service(cmd: Any) -> Any:
        # One write(2) per call: it survives the SIGKILL that may follow at once.
        os.write(fd, f"{process} {cmd.kind} {cmd.step_id} {cmd.attempt}\n".encode())
        if scenario == "abort" and cmd.kind == "step" and cmd.step_id == "s2":
            # Awaited, not spawned: a spawned abort races the saga's next step, and when
            # s3 wins the abort finds the saga completed (a race of this harness, not a
            # crash window); awaited, its commit lands before s2's outcome every time.
            await abort()
        rule = (comp_fails if cmd.compensating else fails).get(cmd.step_id)
        if rule == "all" or (rule and cmd.attempt in rule):
            raise RuntimeError(f"{cmd.kind} {cmd.step_id} attempt {cmd.attempt} fails")
        return {"did": cmd.step_id}

    return manager, make(), service


async def crash_run(scenario: str, db: Path, calls: Path, at: int, when: str) -> int:
    storage = CrashingStorage(SqliteStorage(db), at, when)
    manager, definition, service = build(scenario, storage, calls, "crash")
    await manager.register_definition(definition)
    await manager.register_service("svc", service)
    await manager.create_instance(definition.id, {"n": 1}, instance_id=INSTANCE)
    await manager.start_instance(INSTANCE)
    await manager.wait(INSTANCE, timeout=60)
    await manager.close()
    await storage.close()
    return storage.writes


async def recover_and_check(scenario: str, db: Path, calls: Path) -> dict[str, Any]:
    _, config, _, _, expected = SCENARIOS[scenario]
    storage = SqliteStorage(db)
    manager, definition, service = build(scenario, storage, calls, "recover")
    await manager.register_definition(definition)
    await manager.register_service("svc", service)
    loaded = await manager.recover()
    problems: list[str] = []
    # recover() has not yielded since loading: this is exactly what the log committed.
    done: set[tuple[str, str]] = set()
    for inst in loaded:
        for sid, st in inst.steps.items():
            if st.status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.COMPENSATED,
                             StepStatus.COMPENSATION_FAILED):
                done.add(("step", sid))
            if st.status in (StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED):
                done.add(("compensate", sid))
    header = await storage.get(f"saga/{NAME}/inst/{INSTANCE}")
    if scenario == "abort" and loaded and loaded[0].abort_reason is None and \
            loaded[0].status is SagaStatus.RUNNING and \
            loaded[0].steps["s2"].status is StepStatus.SUCCEEDED:
        # The crash came after s2 committed but before the abort did: abort() never
        # returned, so nothing asked for the roll-back any more; the saga goes forward.
        expected = "completed"
    if header is None:     # the crash came before the instance was created: create it now
        await manager.create_instance(definition.id, {"n": 1}, instance_id=INSTANCE)
        await manager.start_instance(INSTANCE)
        inst = await manager.wait(INSTANCE, timeout=60)
        status = inst.status.value
    elif loaded:
        [inst] = loaded
        if inst.status is SagaStatus.CREATED:      # start_instance never returned
            await manager.start_instance(INSTANCE)
        inst = await manager.wait(INSTANCE, timeout=60)
        status = inst.status.value
    else:                  # already final in the log: nothing to recover
        status = header["status"]
        inst = None
    if status != expected:
        problems.append(f"ended {status}, expected {expected}")
    lines = [line.split() for line in calls.read_text().splitlines()]
    for process, kind, sid, attempt in lines:
        if process == "recover" and (kind, sid) in done:
            problems.append(f"{kind} {sid} ran again after its outcome was committed")
        limit = (config.get("compensation_attempts", 5) if kind == "compensate"
                 else config.get("step_attempts", 1))
        if int(attempt) > limit:
            problems.append(f"{kind} {sid} attempt {attempt} is beyond {limit} attempts")
    if inst is not None:
        ran = {sid for _, kind, sid, _ in lines if kind == "step"}
        if inst.status is SagaStatus.COMPENSATED:   # never claim undone what was not
            for sid in ran:
                if inst.steps[sid].status not in (StepStatus.COMPENSATED, StepStatus.FAILED):
                    problems.append(f"compensated, but step {sid} is "
                                    f"{inst.steps[sid].status.value}")
        if inst.status is SagaStatus.COMPENSATION_FAILED and \
                inst.steps[inst.failed_step].status is not StepStatus.COMPENSATION_FAILED:
            problems.append("compensation_failed names a step that is not stuck")
    await manager.close()
    await storage.close()
    return {"status": status, "problems": problems}


def in_child(work: Any) -> int:
    """Run ``work()`` in a forked child; its exit status as ``os.waitstatus_to_exitcode``."""
    pid = os.fork()
    if pid == 0:   # the child: never return into the caller's stack
        code = 1
        try:
            work()
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main(scenario: str, workdir: Path) -> None:
    count_file = workdir / "writes"

    def count() -> None:
        n = asyncio.run(crash_run(scenario, workdir / "count.db", workdir / "count.calls",
                                  0, "never"))
        count_file.write_text(str(n))

    assert in_child(count) == 0, "the scenario failed without a crash"
    writes = int(count_file.read_text())
    for at in range(1, writes + 1):
        for when in ("before", "after"):
            db, calls = workdir / f"{at}-{when}.db", workdir / f"{at}-{when}.calls"
            code = in_child(lambda: asyncio.run(crash_run(scenario, db, calls, at, when)))
            result_file = workdir / f"{at}-{when}.json"

            def check() -> None:
                result = asyncio.run(recover_and_check(scenario, db, calls))
                result_file.write_text(json.dumps(result))

            check_code = in_child(check)
            result = json.loads(result_file.read_text()) if check_code == 0 else {
                "status": None, "problems": [f"recovery child exited {check_code}"]}
            if code != -signal.SIGKILL:
                result["problems"].append(f"crash child exited {code}, not by SIGKILL")
            print(json.dumps({"boundary": at, "when": when, "writes": writes, **result}),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
