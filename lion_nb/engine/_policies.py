"""Ready queues, one per scheduling policy, behind one interface.

Each queue orders :class:`ScheduledTask` objects; the scheduler owns slots,
limits and clocks. ``seq`` (submission order) breaks every tie, so each policy
is FIFO within its own classes and re-ordering after a policy change is stable.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any, Callable

from ..model import Priority

__all__ = ["ScheduledTask", "FifoQueue", "PriorityQueue", "EdfQueue", "MlfqQueue"]


class ScheduledTask:
    """One unit of work in the scheduler (a node attempt, or a submitted job)."""

    __slots__ = ("seq", "priority", "deadline", "level", "group", "resources", "runner",
                 "payload", "enqueued_at", "slice_start", "resume", "cancelled", "name",
                 "instance_id", "missed", "worker")

    def __init__(self, runner: Callable[["ScheduledTask"], Any], payload: Any = None,
                 priority: int = Priority.NORMAL, deadline: float | None = None,
                 group: Any = None, resources: tuple[str, ...] = (), name: str = "",
                 instance_id: str | None = None) -> None:
        self.seq = 0
        self.runner = runner
        self.payload = payload
        self.priority = priority
        self.deadline = deadline
        self.level = 0
        self.group = group
        self.resources = resources
        self.name = name
        self.instance_id = instance_id
        self.enqueued_at = 0.0
        self.slice_start = 0.0
        self.resume: Any = None
        self.cancelled = False
        self.missed = False
        self.worker: Any = None  # the asyncio Task running it (to interrupt it)

    def __repr__(self) -> str:
        return f"ScheduledTask({self.name!r}, seq={self.seq}, priority={self.priority})"


class FifoQueue(deque):
    """First come, first served; a yielding task goes to the back (round robin).

    The queues subclass the builtin containers so ``len()`` and truth tests, asked
    at every dispatch, run in C.
    """

    name = "fifo"
    push = deque.append
    pop = deque.popleft

    def drain(self) -> list[ScheduledTask]:
        """Remove and return everything queued."""
        items = list(self)
        self.clear()
        return items

    def depths(self) -> dict[str, int]:
        """Queued tasks per class."""
        return {"fifo": len(self)}

    def more_urgent_waiting(self, task: ScheduledTask, strict: bool = False) -> bool:
        """Whether a queued task should take ``task``'s slot at a yield point.

        ``strict``: only a more urgent one, which under FIFO none is.
        """
        return bool(self) and not strict


class _HeapQueue(list):
    """A heap of ``(key, seq, task)`` entries; subclasses choose the key in ``push``."""

    def pop(self) -> ScheduledTask:  # type: ignore[override]
        """The task with the smallest key (oldest first among equals)."""
        return heapq.heappop(self)[2]

    def drain(self) -> list[ScheduledTask]:
        """Remove and return everything queued."""
        items = [e[2] for e in self]
        self.clear()
        return items


class PriorityQueue(_HeapQueue):
    """Highest Priority first, FIFO within a level."""

    name = "priority"

    def push(self, task: ScheduledTask) -> None:
        """Queue a task."""
        heapq.heappush(self, (-task.priority, task.seq, task))

    def depths(self) -> dict[str, int]:
        """Queued tasks per priority level (counted on demand: views ask a few times a second)."""
        counts = [0] * len(Priority)
        for entry in self:
            counts[-entry[0]] += 1
        return {p.name.lower(): counts[p] for p in reversed(Priority)}

    def more_urgent_waiting(self, task: ScheduledTask, strict: bool = False) -> bool:
        """A queued task of at least the same priority (round robin), or higher if ``strict``."""
        return bool(self) and (-self[0][0] > task.priority if strict
                               else -self[0][0] >= task.priority)


class EdfQueue(_HeapQueue):
    """Earliest absolute deadline first; tasks without a deadline last, FIFO."""

    name = "edf"

    def push(self, task: ScheduledTask) -> None:
        """Queue a task."""
        d = task.deadline
        heapq.heappush(self, (math.inf if d is None else d, task.seq, task))

    def depths(self) -> dict[str, int]:
        """Queued tasks with and without a deadline (counted on demand)."""
        without = sum(1 for e in self if e[0] == math.inf)
        return {"deadline": len(self) - without, "no_deadline": without}

    def more_urgent_waiting(self, task: ScheduledTask, strict: bool = False) -> bool:
        """A queued task whose deadline is earlier than ``task``'s (strict or not)."""
        mine = math.inf if task.deadline is None else task.deadline
        return bool(self) and self[0][0] < mine


class MlfqQueue:
    """Multi-level feedback queue.

    New tasks enter at level 0 (the textbook rule), or by priority with
    ``by_priority`` (HIGH/CRITICAL at level 0, LOW at the bottom); a task that
    uses up its quantum at a yield point is demoted one level; every
    ``boost_interval`` seconds all queued tasks are lifted to level 0 in
    submission order, so nothing starves under a stream of urgent work.
    """

    name = "mlfq"

    def __init__(self, levels: int, base_quantum: float, boost_interval: float,
                 clock_fn: Callable[[], float], by_priority: bool = False) -> None:
        self.levels = levels
        self.by_priority = by_priority
        self.base_quantum = base_quantum
        self.boost_interval = boost_interval
        self._now = clock_fn
        self._q: list[deque[ScheduledTask]] = [deque() for _ in range(levels)]
        self._n = 0
        self._last_boost = clock_fn()
        self.boosts = 0

    def entry_level(self, priority: int) -> int:
        """Level a new task starts at."""
        if not self.by_priority or priority >= Priority.HIGH:
            return 0
        if priority == Priority.NORMAL:
            return min(1, self.levels - 1)
        return self.levels - 1

    def quantum(self, level: int) -> float:
        """Time slice at a level: doubles per level down."""
        return self.base_quantum * (2 ** level)

    def push(self, task: ScheduledTask) -> None:
        """Queue a task at its level (new tasks get their entry level)."""
        if task.resume is None and task.slice_start == 0.0:
            task.level = self.entry_level(task.priority)
        self._q[task.level].append(task)
        self._n += 1

    def demote(self, task: ScheduledTask) -> None:
        """Move a task that used up its quantum one level down."""
        task.level = min(task.level + 1, self.levels - 1)

    def _maybe_boost(self) -> None:
        now = self._now()
        if now - self._last_boost < self.boost_interval:
            return
        self._last_boost = now
        if self._n == len(self._q[0]):
            return
        everything = sorted((t for q in self._q for t in q), key=lambda t: t.seq)
        for q in self._q:
            q.clear()
        for t in everything:
            t.level = 0
        self._q[0].extend(everything)
        self.boosts += 1

    def pop(self) -> ScheduledTask:
        """The oldest task of the highest non-empty level."""
        self._maybe_boost()
        for q in self._q:
            if q:
                self._n -= 1
                return q.popleft()
        raise IndexError("pop from an empty MLFQ")

    def __len__(self) -> int:
        return self._n

    def drain(self) -> list[ScheduledTask]:
        """Remove and return everything queued."""
        items = [t for q in self._q for t in q]
        for q in self._q:
            q.clear()
        self._n = 0
        return items

    def depths(self) -> dict[str, int]:
        """Queued tasks per level."""
        return {f"level{i}": len(q) for i, q in enumerate(self._q)}

    def more_urgent_waiting(self, task: ScheduledTask, strict: bool = False) -> bool:
        """A queued task at the same or a higher level (only higher if ``strict``)."""
        return any(self._q[i] for i in range(task.level + (0 if strict else 1)))
