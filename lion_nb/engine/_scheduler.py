"""WorkflowScheduler: policies, backpressure, concurrency limits, cooperative preemption.

The scheduler owns the run slots. Work enters as :class:`ScheduledTask`; worker
coroutines take the most urgent runnable task whenever a slot is free, so a
node that finishes without waiting costs no Task and no Future of its own::

    scheduler = WorkflowScheduler(SchedulerConfig(max_queued_tasks=1000,
                                                  max_concurrent_tasks=50,
                                                  policy=SchedulingPolicy.EDF))
    await scheduler.change_policy(SchedulingPolicy.PRIORITY)
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

from ..errors import (DeadlineMissedError, QueueFullError, SchedulerClosedError,
                      SchedulerConfigError)
from ..model import Priority
from ._observe import EventKind, ExecEvent, ObserveStream
from ._policies import EdfQueue, FifoQueue, MlfqQueue, PriorityQueue, ScheduledTask
from ._scheduler_config import SchedulerConfig, SchedulingPolicy
from ._scheduler_stats import SchedulerStatistics, StatsKeeper

_QUEUE_DEPTH = EventKind.QUEUE_DEPTH  # enum attribute access is slow on 3.11
_PRIORITIES: dict[Any, Priority] = {p.value: p for p in Priority}
_FIFO = SchedulingPolicy.FIFO

__all__ = ["Priority", "ScheduledTask", "SchedulerConfig", "SchedulerStatistics",
           "SchedulingPolicy", "WorkflowScheduler"]


class WorkflowScheduler:
    """Queues ready work by policy and runs it in at most ``max_concurrent_tasks`` slots."""

    def __init__(self, config: SchedulerConfig | None = None, *,
                 observe: ObserveStream | None = None) -> None:
        self.config = config = config or SchedulerConfig()
        self.observe = observe if observe is not None else ObserveStream()
        self.clock = config.clock
        self._now = config.clock.monotonic
        self.policy = config.policy
        self._queue = self._make_queue(config.policy)
        self._overflow: deque[Any] = deque()  # tasks and plain calls
        self._seq = 0
        self.running = 0
        self._suspended = 0
        self._workers = 0
        self._idle: deque[asyncio.Future[None]] = deque()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._blocked: dict[Any, deque[ScheduledTask]] = {}
        self._group_running: dict[Any, int] = {}
        self._pool_running: dict[str, int] = {}
        self._kick_pending = False
        self._waking = 0
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = StatsKeeper(self._now)
        self.on_deadline_failed: Callable[[ScheduledTask, Exception], None] | None = None
        # The config is frozen: its limits are read per dispatch, so keep them at hand.
        self._max_queued = config.max_queued_tasks
        self._max_running = config.max_concurrent_tasks
        self._per_group = config.max_per_group
        self._stamp = 0.0  # monotonic time of the last dispatch of a plain call

    # --- queue construction ----------------------------------------------------

    def _make_queue(self, policy: SchedulingPolicy) -> Any:
        if policy is SchedulingPolicy.FIFO:
            return FifoQueue()
        if policy is SchedulingPolicy.PRIORITY:
            return PriorityQueue()
        if policy is SchedulingPolicy.EDF:
            return EdfQueue()
        return MlfqQueue(self.config.mlfq_levels, self.config.time_slice,
                         self.config.mlfq_boost_interval, self._now,
                         by_priority=self.config.mlfq_entry == "priority")

    @property
    def queued(self) -> int:
        """Tasks waiting for a slot (including internal overflow and blocked ones)."""
        queued = len(self._queue) + len(self._overflow)
        if self._blocked:  # rare: asked on every submit, so no generator without need
            queued += sum(len(b) for b in self._blocked.values())
        return queued

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    # --- submission ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerClosedError("the scheduler is closed")

    def enqueue(self, task: ScheduledTask, now: float | None = None) -> None:
        """Queue a task from inside the engine: never waits, never refuses.

        Past ``max_queued_tasks`` the task waits in an overflow list that feeds
        the queue as it drains, so the engine cannot deadlock on its own
        backpressure; outside submitters (``submit``) wait instead. ``now``: the
        caller's monotonic stamp, if it has one (no clock read then).
        """
        if self._closed:
            self._check_open()
        self._seq = task.seq = self._seq + 1
        task.enqueued_at = self._now() if now is None else now
        if len(self._queue) >= self._max_queued:
            self._overflow.append(task)
        else:
            self._queue.push(task)
        if not self._kick_pending or _QUEUE_DEPTH in self.observe.wanted:
            self._queued()

    def _queued(self) -> None:
        """After a push: tell the observe stream, and wake workers once per loop turn."""
        if _QUEUE_DEPTH in self.observe.wanted:
            self._emit_depth()
        if not self._kick_pending:
            self._kick_pending = True
            self._get_loop().call_soon(self._kick)

    def enqueue_call(self, runner: Callable[[Any, float, Any], Awaitable[Any]], payload: Any,
                     now: float) -> None:
        """Queue ``runner(payload, dispatched_at, worker)`` under FIFO: no ScheduledTask.

        For work with normal priority, no deadline, group or resource pool under
        the FIFO policy: it needs no task object, so none is made (a node of a
        large graph makes one object less). ``dispatched_at`` is the monotonic time it
        got its slot, ``worker`` the asyncio Task running it (to ``interrupt``).
        A policy change turns the queued ones into ScheduledTasks.
        """
        if self._closed or self.policy is not _FIFO:
            self._check_open()
            raise SchedulerConfigError("enqueue_call takes work under the FIFO policy only",
                                       field="policy")
        self._seq = seq = self._seq + 1
        queue = self._queue
        if len(queue) >= self._max_queued:
            self._overflow.append((seq, runner, payload, now))
        else:
            queue.append((seq, runner, payload, now))  # a FifoQueue (a deque): append is push
        if not self._kick_pending or _QUEUE_DEPTH in self.observe.wanted:
            self._queued()

    def _make_job(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                  priority: int, deadline: float | None, resources: tuple[str, ...],
                  group: Any, name: str) -> tuple[ScheduledTask, asyncio.Future[Any]]:
        self._check_open()
        try:
            prio = _PRIORITIES.get(priority)  # a lookup: Priority(...) costs a call per job
        except TypeError:  # unhashable
            prio = None
        if prio is None:
            raise SchedulerConfigError(f"unknown priority {priority!r}", field="priority")
        future: asyncio.Future[Any] = self._get_loop().create_future()

        async def run(task: ScheduledTask) -> None:
            try:
                result = await fn(*args)
            except BaseException as exc:  # the caller's future carries it
                if not future.done():
                    future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                if not future.done():
                    future.set_result(result)

        absolute = None if deadline is None else self._now() + deadline
        task = ScheduledTask(run, future, priority=prio, deadline=absolute, group=group,
                             resources=tuple(resources), name=name or getattr(fn, "__name__", ""))
        if deadline is not None and deadline < 0:
            self.stats.deadline_misses += 1
            if self.config.past_deadline == "reject":
                raise DeadlineMissedError(f"task {task.name!r} submitted with a deadline "
                                          f"{-deadline:.3f}s in the past", task=task.name)
        return task, future

    async def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                     priority: int = Priority.NORMAL, deadline: float | None = None,
                     resources: tuple[str, ...] = (), group: Any = None,
                     name: str = "") -> asyncio.Future[Any]:
        """Queue ``fn(*args)``, waiting while the queue is full; returns its result future.

        ``deadline`` is seconds from now (EDF orders by it).
        """
        task, future = self._make_job(fn, args, priority, deadline, resources, group, name)
        while self.queued >= self.config.max_queued_tasks:
            waiter = self._get_loop().create_future()
            self._space_waiters.append(waiter)
            await waiter
            self._check_open()
        self.enqueue(task)
        return future

    def submit_nowait(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                      priority: int = Priority.NORMAL, deadline: float | None = None,
                      resources: tuple[str, ...] = (), group: Any = None,
                      name: str = "") -> asyncio.Future[Any]:
        """Like ``submit`` but raises QueueFullError instead of waiting."""
        if self.queued >= self.config.max_queued_tasks:
            self._check_open()
            raise QueueFullError(
                f"scheduler queue is full ({self.config.max_queued_tasks} tasks)",
                capacity=self.config.max_queued_tasks)
        task, future = self._make_job(fn, args, priority, deadline, resources, group, name)
        self.enqueue(task)
        return future

    # --- dispatch --------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _kick(self) -> None:
        """Wake idle workers (or start new ones) for the queued work."""
        self._kick_pending = False
        if self._closed:
            return
        want = min(len(self._queue), self.config.max_concurrent_tasks - self.running)
        want -= self._waking  # woken workers that have not run yet will take some
        while want > 0 and self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)
                self._waking += 1
                want -= 1
        limit = self.config.max_concurrent_tasks + self._suspended
        while want > 0 and self._workers < limit:
            self._workers += 1
            t = self._get_loop().create_task(self._worker())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            want -= 1

    def _take(self) -> Any:
        """Pop the next runnable task (or plain call) and give it a slot, or None."""
        queue = self._queue
        per_group = self._per_group
        while queue and self.running < self._max_running:
            task = queue.pop()
            if self._overflow:
                queue.push(self._overflow.popleft())
            if self._space_waiters:
                self._wake_space()
            if type(task) is tuple:  # a plain call (enqueue_call): only the slot to take
                self._stamp = now = self._now()
                self.running += 1
                stats = self.stats
                stats.dispatched_count += 1
                stats.waits.append(now - task[3])
                if _QUEUE_DEPTH in self.observe.wanted:
                    self._emit_depth()
                return task
            if task.cancelled:
                continue
            if task.resume is not None:
                fut, task.resume = task.resume, None
                self.running += 1
                self._suspended -= 1
                task.slice_start = self._now()
                fut.set_result(None)
                continue
            if per_group is not None and task.group is not None:
                if self._group_running.get(task.group, 0) >= per_group:
                    self._blocked.setdefault(("group", task.group), deque()).append(task)
                    continue
            if task.resources and not self._pools_free(task):
                continue
            now = self._now()
            if task.deadline is not None and now > task.deadline and not task.missed:
                if not self._deadline_missed(task, now):
                    continue
            self.running += 1
            if per_group is not None and task.group is not None:
                self._group_running[task.group] = self._group_running.get(task.group, 0) + 1
            for pool in task.resources:
                self._pool_running[pool] = self._pool_running.get(pool, 0) + 1
            task.slice_start = now
            stats = self.stats
            stats.dispatched_count += 1
            stats.waits.append(now - task.enqueued_at)
            if _QUEUE_DEPTH in self.observe.wanted:
                self._emit_depth()
            return task
        return None

    def _pools_free(self, task: ScheduledTask) -> bool:
        limits = self.config.resource_limits
        for pool in task.resources:
            limit = limits.get(pool)
            if limit is not None and self._pool_running.get(pool, 0) >= limit:
                self._blocked.setdefault(("pool", pool), deque()).append(task)
                return False
        return True

    def _deadline_missed(self, task: ScheduledTask, now: float) -> bool:
        """Apply the configured miss action; True if the task should still run now."""
        late = now - (task.deadline or now)
        task.missed = True
        self.stats.deadline_misses += 1
        if EventKind.DEADLINE_MISSED in self.observe.wanted:
            self.observe.emit(ExecEvent(EventKind.DEADLINE_MISSED, self.clock.time(),
                                        task.instance_id, task.name, 0,
                                        {"late_by": late,
                                         "action": self.config.deadline_miss}))
        action = self.config.deadline_miss
        if action == "fail":
            error = DeadlineMissedError(
                f"task {task.name!r} missed its deadline by {late:.3f}s",
                task=task.name)
            if isinstance(task.payload, asyncio.Future):  # a submitted job
                if not task.payload.done():
                    task.payload.set_exception(error)
            elif self.on_deadline_failed is not None:
                self.on_deadline_failed(task, error)
            return False
        if action == "demote":
            task.deadline = None
            self._queue.push(task)
            return False
        return True

    def _release(self, task: ScheduledTask) -> None:
        self.running -= 1
        self.stats.completed += 1
        if self._group_running and task.group in self._group_running:
            self._group_running[task.group] -= 1
            self._unblock(("group", task.group))
        for pool in task.resources:
            self._pool_running[pool] -= 1
            self._unblock(("pool", pool))
        if task.deadline is not None and not task.missed and self._now() > task.deadline:
            task.missed = True
            self.stats.deadline_misses += 1

    def _unblock(self, key: Any) -> None:
        blocked = self._blocked.get(key)
        if blocked:
            self._queue.push(blocked.popleft())
            if not blocked:
                del self._blocked[key]

    def _wake_space(self) -> None:
        while self._space_waiters and self.queued < self.config.max_queued_tasks:
            fut = self._space_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    async def _worker(self) -> None:
        loop = self._get_loop()
        me = asyncio.current_task()
        since_yield = 0
        try:
            while not self._closed:
                try:
                    task = self._take()
                    if task is None:
                        fut = loop.create_future()
                        self._idle.append(fut)
                        try:
                            await fut
                        finally:
                            if fut.done() and not fut.cancelled():
                                self._waking -= 1
                        since_yield = 0
                        continue
                    if type(task) is tuple:
                        try:
                            await task[1](task[2], self._stamp, me)
                        finally:
                            self.running -= 1
                            self.stats.completed += 1
                    else:
                        task.worker = me
                        try:
                            await task.runner(task)
                        finally:
                            if (task.resources or task.deadline is not None
                                    or self._group_running):
                                self._release(task)
                            else:  # _release with nothing to release but the slot
                                self.running -= 1
                                self.stats.completed += 1
                    since_yield += 1
                    if since_yield >= 32:  # let other tasks (and views) run on a busy loop
                        since_yield = 0
                        await asyncio.sleep(0)
                except asyncio.CancelledError:
                    # interrupt() cancels the worker running a node; if that
                    # arrives after the node finished, the worker lives on.
                    # Any other cancellation (shutdown) ends the worker.
                    if not self.absorb_interrupt():
                        raise
        finally:
            self._workers -= 1

    # --- cooperative preemption and node interrupts ------------------------------
    #
    # A handler's ``await ctx.yield_now()`` lands in ``yield_point``: when its time
    # slice is used up and a more urgent task waits, the task gives its slot back,
    # re-queues itself and sleeps until a worker dispatches it again.

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
        """Give ``task``'s slot to a waiter if its time slice is used up (or, with
        ``preemption="urgent"``, to a strictly more urgent waiter at once).

        Returns True if the task was preempted (and has since been resumed).
        Without a waiter, or with a free slot, this costs a comparison or two.
        """
        if not self._queue or self.running < self.config.max_concurrent_tasks:
            return False
        now = self._now()
        if now - task.slice_start < self._quantum(task):
            if not (self.config.preemption == "urgent"
                    and self._queue.more_urgent_waiting(task, strict=True)):
                return False
        else:
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
        if EventKind.NODE_YIELDED in self.observe.wanted:
            self.observe.emit(ExecEvent(EventKind.NODE_YIELDED, self.clock.time(),
                                        task.instance_id, task.name, 0, {"level": task.level}))
        self._kick()
        await resume
        return True

    # --- policy, statistics, shutdown --------------------------------------------

    async def change_policy(self, policy: SchedulingPolicy | str) -> None:
        """Switch policy now: everything queued is re-ordered under the new one."""
        self._check_open()
        try:
            new = SchedulingPolicy(policy)
        except ValueError:
            raise SchedulerConfigError(f"unknown scheduling policy {policy!r}",
                                       field="policy") from None
        old, items = self.policy, [_as_task(e) for e in self._queue.drain()]
        self._overflow = deque(map(_as_task, self._overflow))
        self._queue = self._make_queue(new)
        self.policy = new
        for task in sorted(items, key=lambda t: t.seq):
            self._queue.push(task)
        if EventKind.POLICY_CHANGED in self.observe.wanted:
            self.observe.emit(ExecEvent(EventKind.POLICY_CHANGED, self.clock.time(), None,
                                        None, 0, {"from": old.value, "to": new.value,
                                                  "requeued": len(items)}))

    def depths(self) -> dict[str, int]:
        """Queued tasks per policy class (level, priority or deadline class)."""
        return self._queue.depths()

    def _emit_depth(self) -> None:
        """Tell the observe stream how deep the queue is (callers check ``wants`` first)."""
        self.observe.emit(ExecEvent(_QUEUE_DEPTH, self.clock.time(), None, None, 0,
                                    {"queued": self.queued, "running": self.running}))

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of queue depths, slots, waits, throughput and misses."""
        return self.stats.snapshot(self.policy.value, self.depths(), self.queued, self.running,
                                   self.config.max_concurrent_tasks)

    async def close(self) -> None:
        """Stop the workers; queued tasks are dropped and further submits refused."""
        if self._closed:
            return
        self._closed = True
        for fut in list(self._idle) + list(self._space_waiters):
            if not fut.done():
                fut.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _as_task(entry: Any) -> ScheduledTask:
    """A queued entry as a ScheduledTask (a plain call becomes one, with normal priority)."""
    if type(entry) is not tuple:
        return entry
    seq, runner, payload, queued = entry
    task = ScheduledTask(lambda t: runner(payload, t.slice_start, t.worker), payload)
    task.seq, task.enqueued_at = seq, queued
    return task
