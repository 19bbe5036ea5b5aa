"""Cooperative preemption and node interrupts, as a mixin of WorkflowScheduler.

A handler's ``await ctx.yield_now()`` lands in ``yield_point``: when its time
slice is used up and a more urgent task waits, the task gives its slot back,
re-queues itself and sleeps until a worker dispatches it again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .observe import EventKind, ExecEvent
from .policies import MlfqQueue, ScheduledTask

__all__ = ["Preemption"]


class Preemption:
    """Slot hand-over at yield points; WorkflowScheduler provides the state used here."""

    _queue: Any
    _interrupted: set[asyncio.Task[Any]]
    config: Any
    running: int
    _suspended: int
    _seq: int
    observe: Any
    clock: Any

    def interrupt(self, worker: "asyncio.Task[Any]") -> None:
        """Cancel the node running on ``worker`` without ending the worker itself."""
        self._interrupted.add(worker)
        worker.cancel()

    def absorb_interrupt(self) -> bool:
        """In a worker: True (and the cancellation undone) if it came from ``interrupt``."""
        current = asyncio.current_task()
        if current is None or current not in self._interrupted:
            return False
        self._interrupted.discard(current)
        current.uncancel()
        return True

    def _quantum(self, task: ScheduledTask) -> float:
        if isinstance(self._queue, MlfqQueue):
            return self._queue.quantum(task.level)
        return self.config.time_slice

    async def yield_point(self, task: ScheduledTask) -> bool:
        """Give ``task``'s slot to a more urgent waiter if its time slice is used up.

        Returns True if the task was preempted (and has since been resumed).
        Without a waiter, or with a free slot, this costs a comparison or two.
        """
        if not self._queue or self.running < self.config.max_concurrent_tasks:
            return False
        now = self._now()
        if now - task.slice_start < self._quantum(task):
            return False
        if isinstance(self._queue, MlfqQueue):
            self._queue.demote(task)
        if not self._queue.more_urgent_waiting(task):
            task.slice_start = now
            return False
        task.resume = self._get_loop().create_future()
        resume = task.resume
        self.running -= 1
        self._suspended += 1
        self._seq += 1
        task.seq = self._seq
        task.enqueued_at = now
        self._queue.push(task)
        if self.observe.wants(EventKind.NODE_YIELDED):
            self.observe.emit(ExecEvent(EventKind.NODE_YIELDED, self.clock.time(),
                                        task.instance_id, task.name, 0, {"level": task.level}))
        self._kick()
        await resume
        return True
