"""Scheduler settings and policy names, validated on construction."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import SchedulerConfigError

__all__ = ["SchedulingPolicy", "SchedulerConfig"]


class SchedulingPolicy(enum.StrEnum):
    """Which ready task runs next."""

    FIFO = "fifo"
    PRIORITY = "priority"
    MLFQ = "mlfq"
    EDF = "edf"


_MISS_ACTIONS = ("record", "fail", "demote")
_PAST_ACTIONS = ("miss", "reject")


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler settings; invalid values raise SchedulerConfigError naming the field.

    ``deadline_miss``: what happens to a task dispatched after its deadline —
    "record" (run it, count the miss), "fail" (the node fails with
    DeadlineMissedError) or "demote" (it loses its deadline and waits behind
    tasks that can still make theirs). ``past_deadline``: a task submitted with
    a deadline already past is a "miss" (handled as above) or "reject"ed.
    """

    max_queued_tasks: int = 100_000
    max_concurrent_tasks: int = 64
    policy: SchedulingPolicy = SchedulingPolicy.FIFO
    time_slice: float = 0.01
    mlfq_levels: int = 3
    mlfq_boost_interval: float = 1.0
    deadline_miss: str = "record"
    past_deadline: str = "miss"
    max_per_group: int | None = None
    resource_limits: Mapping[str, int] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "policy", SchedulingPolicy(self.policy))
        except ValueError:
            raise SchedulerConfigError(
                f"unknown scheduling policy {self.policy!r}; choose one of "
                f"{[p.value for p in SchedulingPolicy]}", field="policy") from None
        for name in ("max_queued_tasks", "max_concurrent_tasks", "mlfq_levels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SchedulerConfigError(f"{name} must be a positive int, not {value!r}",
                                           field=name)
        for name in ("time_slice", "mlfq_boost_interval"):
            if not getattr(self, name) > 0:
                raise SchedulerConfigError(f"{name} must be > 0 seconds", field=name)
        if self.max_per_group is not None and self.max_per_group <= 0:
            raise SchedulerConfigError("max_per_group must be positive", field="max_per_group")
        for pool, limit in self.resource_limits.items():
            if not isinstance(limit, int) or limit <= 0:
                raise SchedulerConfigError(f"resource pool {pool!r} limit must be a positive "
                                           f"int, not {limit!r}", field="resource_limits")
        if self.deadline_miss not in _MISS_ACTIONS:
            raise SchedulerConfigError(f"deadline_miss must be one of {_MISS_ACTIONS}",
                                       field="deadline_miss")
        if self.past_deadline not in _PAST_ACTIONS:
            raise SchedulerConfigError(f"past_deadline must be one of {_PAST_ACTIONS}",
                                       field="past_deadline")
