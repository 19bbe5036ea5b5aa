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
_MLFQ_ENTRIES = ("top", "priority")
_PREEMPTIONS = ("slice", "urgent")


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Scheduler settings; invalid values raise SchedulerConfigError naming the field.

    ``deadline_miss``: what happens to a task dispatched after its deadline —
    "record" (run it, count the miss), "fail" (the node fails with
    DeadlineMissedError) or "demote" (it loses its deadline and waits behind
    tasks that can still make theirs). ``past_deadline``: a task submitted with
    a deadline already past is a "miss" (handled as above) or "reject"ed.
    ``mlfq_entry``: new MLFQ tasks enter the "top" level (the textbook rule) or
    by "priority" (HIGH/CRITICAL top, NORMAL level 1, LOW bottom).
    ``preemption``: at ``ctx.yield_now()`` a task gives its slot to a waiting one
    once its time "slice" is used up, or at once to a strictly more "urgent" one.
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
    mlfq_entry: str = "top"
    preemption: str = "slice"

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
        for name, allowed in (("deadline_miss", _MISS_ACTIONS),
                              ("past_deadline", _PAST_ACTIONS),
                              ("mlfq_entry", _MLFQ_ENTRIES), ("preemption", _PREEMPTIONS)):
            if getattr(self, name) not in allowed:
                raise SchedulerConfigError(f"{name} must be one of {allowed}, not "
                                           f"{getattr(self, name)!r}", field=name)
