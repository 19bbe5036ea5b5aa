"""Helpers shared by the saga tests: definitions, recording services, managers on a FakeClock."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from lion_nb.clock import FakeClock
from lion_nb.model import RetryPolicy
from lion_nb.patterns import (
    EventBroker, EventBrokerConfig, SagaDefinition, SagaDefinitionBuilder,
    SagaManager, SagaManagerConfig, SagaStep,
)

__all__ = ["chain", "Services", "make_manager", "settle"]


def chain(n: int, saga_id: str = "chain", *, pivots: Iterable[int] = (),
          service: str = "svc") -> SagaDefinition:
    """A saga of steps s1..sn, each compensable (except the 1-based ``pivots``)."""
    builder = SagaDefinitionBuilder(saga_id, f"{n}-step chain")
    pivot = set(pivots)
    for i in range(1, n + 1):
        step = SagaStep(f"s{i}", f"Step {i}", {"do": i}, service)
        if i not in pivot:
            step.with_compensation({"undo": i})
        builder.add_step(step)
    return builder.build()


class Services:
    """A handler that records every call and fails or hangs where told to.

    ``fail_steps``: step ids whose forward attempts raise; ``comp_failures``:
    step id -> how many compensation attempts raise first (-1: forever);
    ``hang``: step ids whose forward attempt never returns.
    """

    def __init__(self, *, fail_steps: Iterable[str] = (), comp_failures: dict | None = None,
                 hang: Iterable[str] = (), fail_times: dict | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []     # (kind, instance, step)
        self.commands: list[Any] = []
        self.fail_steps = set(fail_steps)
        self.fail_times = dict(fail_times or {})        # step -> forward failures before ok
        self.comp_failures = dict(comp_failures or {})
        self.hang = set(hang)

    async def __call__(self, cmd: Any) -> Any:
        self.calls.append((cmd.kind, cmd.instance_id, cmd.step_id))
        self.commands.append(cmd)
        await asyncio.sleep(0)
        if cmd.kind == "step":
            if cmd.step_id in self.hang:
                await asyncio.Event().wait()
            if cmd.step_id in self.fail_steps:
                raise RuntimeError(f"{cmd.step_id} broke")
            if self.fail_times.get(cmd.step_id, 0) > 0:
                self.fail_times[cmd.step_id] -= 1
                raise RuntimeError(f"{cmd.step_id} flaked")
            return {"done": cmd.step_id, "seen": sorted(cmd.results)}
        left = self.comp_failures.get(cmd.step_id, 0)
        if left:
            if left > 0:
                self.comp_failures[cmd.step_id] = left - 1
            raise RuntimeError(f"undo {cmd.step_id} broke")
        return {"undone": cmd.step_id, "had": cmd.result}

    def steps(self, kind: str, instance: str | None = None) -> list[str]:
        """Step ids called with ``kind`` ("step" / "compensate"), in call order."""
        return [s for k, i, s in self.calls if k == kind and (instance is None or i == instance)]


def make_manager(*, clock: FakeClock | None = None, broker: EventBroker | None = None,
                 storage: Any = None, observe: Any = None,
                 **config: Any) -> tuple[SagaManager, EventBroker, FakeClock]:
    """A manager (and broker) on a FakeClock, with zero compensation backoff by default."""
    clock = clock or FakeClock()
    broker = broker or EventBroker(EventBrokerConfig(), clock=clock)
    config.setdefault("compensation_backoff", RetryPolicy())
    manager = SagaManager(broker, SagaManagerConfig(**config), storage=storage, clock=clock,
                          observe=observe)
    return manager, broker, clock


async def settle(rounds: int = 50) -> None:
    """Let every ready task run until things go quiet."""
    for _ in range(rounds):
        await asyncio.sleep(0)
