"""Scheduler statistics: a frozen snapshot, and the cheap counters behind it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

__all__ = ["SchedulerStatistics", "StatsKeeper"]


@dataclass(frozen=True)
class SchedulerStatistics:
    """What the scheduler is doing, at one moment."""

    policy: str
    queued: int
    queued_by_class: dict[str, int]
    running: int
    max_concurrent: int
    dispatched: int
    completed: int
    deadline_misses: int
    wait_p50: float
    wait_p95: float
    throughput: float


class StatsKeeper:
    """Counters updated on the hot path; percentiles come from the last 4096 waits."""

    __slots__ = ("_now", "_started", "waits", "dispatched_count", "completed",
                 "deadline_misses")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._started = now()
        self.waits: deque[float] = deque(maxlen=4096)
        self.dispatched_count = 0
        self.completed = 0
        self.deadline_misses = 0

    def snapshot(self, policy: str, depths: dict[str, int], queued: int, running: int,
                 max_concurrent: int) -> SchedulerStatistics:
        """Freeze the counters."""
        waits = sorted(self.waits)

        def pct(p: float) -> float:
            return waits[min(len(waits) - 1, int(p * len(waits)))] if waits else 0.0

        elapsed = self._now() - self._started
        return SchedulerStatistics(
            policy=policy, queued=queued, queued_by_class=dict(depths), running=running,
            max_concurrent=max_concurrent, dispatched=self.dispatched_count,
            completed=self.completed, deadline_misses=self.deadline_misses,
            wait_p50=pct(0.5), wait_p95=pct(0.95),
            throughput=self.completed / elapsed if elapsed > 0 else 0.0)
