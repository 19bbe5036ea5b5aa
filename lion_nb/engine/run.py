"""InstanceRun: one running instance — join rule, node attempts, retries, completion.

Everything here is indexed by node position in the definition, so the work per
finished node is proportional to its own out-edges (DESIGN.md, "Speed").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from ..errors import (HandlerNotSerializableError, InstanceCancelledError, LionError,
                      NodeFailedError, NodeTimeoutError, ResultNotSerializableError,
                      SecurityError, WorkflowFailedError)
from ..state.machine import CODE, LEGAL, NODE_ORDER, InstanceState, NodeState, NodeStates
from .context import NodeContext, NodeResult, ResultKind
from .observe import EventKind as K
from .observe import ExecEvent
from .outcome import check_output, handler_error
from .join import JoinRule
from .policies import ScheduledTask

if TYPE_CHECKING:
    from ..model.definition import WorkflowDefinition
    from .executor import WorkflowExecutor

__all__ = ["InstanceRun"]

_TERMINAL = frozenset(CODE[s] for s in (NodeState.SUCCEEDED, NodeState.FAILED,
                                         NodeState.SKIPPED, NodeState.UPSTREAM_FAILED,
                                         NodeState.CANCELLED))
_SUCCEEDED = CODE[NodeState.SUCCEEDED]
# Enum member access costs ~100 ns on Python 3.11; the hot path uses these globals.
_K_QUEUED = K.NODE_QUEUED
_K_STARTED = K.NODE_STARTED
_K_SUCCEEDED = K.NODE_SUCCEEDED
_RUNNING = NodeState.RUNNING
_S_SUCCEEDED = NodeState.SUCCEEDED
_QUEUED = NodeState.QUEUED
_I_RUNNING = InstanceState.RUNNING
_CANCEL_NOW = (CODE[NodeState.PENDING], CODE[NodeState.RETRYING])
# The three moves every node makes, checked inline (a method call per move costs
# more than the check); an illegal one falls back to NodeStates.move, which raises.
_NK = len(NODE_ORDER)
_C_QUEUED, _C_RUNNING, _C_SUCCEEDED = (CODE[NodeState.QUEUED], CODE[NodeState.RUNNING],
                                       CODE[NodeState.SUCCEEDED])


class InstanceRun(JoinRule):
    """The live state of one instance; the executor's worker calls ``run_node``."""

    def __init__(self, executor: "WorkflowExecutor", definition: "WorkflowDefinition",
                 instance_id: str, inputs: dict[str, Any], handlers: list[Any],
                 is_async: list[bool], priorities: list[int], deadlines: list[float | None],
                 gate: Callable[..., None] | None,
                 resource_gate: Callable[..., Any] | None) -> None:
        self.executor = executor
        self.scheduler = executor.scheduler
        self.observe = executor.observe
        self.clock = executor.scheduler.clock
        self.definition = definition
        self.instance_id = instance_id
        self.inputs = inputs
        self.handlers = handlers
        self.is_async = is_async
        self.priorities = priorities
        self.deadlines = deadlines
        self.gate = gate
        self.resource_gate = resource_gate
        n = len(definition.nodes)
        self.states: NodeStates = NodeStates((x.name for x in definition.nodes), instance_id)
        self.results: list[Any] = [None] * n
        self.errors: dict[int, BaseException] = {}
        self.attempts = [0] * n
        self.remaining = [len(e) for e in definition.in_edges]
        self.active_in = [0] * n
        self.failed_in = [0] * n
        self.unfinished = n
        self.first_failed: int | None = None
        self.tasks: dict[int, "ScheduledTask"] = {}
        self.state = InstanceState.PENDING
        self.cancel_requested = False
        self.started_at = self.clock.time()
        self.finished_at: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self.store: Any = None  # durable committer (engine.durable), None in memory
        self._conds = [e.condition for e in definition.edges]
        self.nodes = definition.nodes
        self._time = self.clock.time
        self.require_json = executor.config.require_json_results
        no_default_timeout = executor.config.default_timeout is None
        runner = executor.runner
        # Per node: does the runner take it (e.g. to a Dask cluster), or does it run here?
        self.remote = [runner is not None and bool(getattr(runner, "accepts", lambda n: True)(n))
                       for n in definition.nodes]
        self.direct = [is_async[k] and not self.remote[k] and node.timeout is None
                       and no_default_timeout for k, node in enumerate(definition.nodes)]
        self.grants: Any = None  # the instance's GrantSet (remote runners verify it again)
        # Wall-clock times of each node's current attempt: end events carry them, so the
        # history recorder needs one event per attempt, not three.
        self.queued_times: list[float | None] = [None] * n
        self.started_times: list[float | None] = [None] * n
        self.workers: dict[int, str] = {}  # node -> where its last attempt ran, if elsewhere

    # --- inputs for handlers ---------------------------------------------------

    def predecessor_results(self, i: int) -> dict[str, Any]:
        """Outputs of the succeeded predecessors of node ``i`` by name."""
        d = self.definition
        codes = self.states.codes
        out = {}
        for k in d.in_edges[i]:
            s = d.edge_source[k]
            if codes[s] == _SUCCEEDED:
                out[d.nodes[s].name] = self.results[s]
        return out

    # --- queueing and the join rule --------------------------------------------

    def queue(self, i: int) -> None:
        """Hand node ``i`` to the scheduler."""
        node = self.nodes[i]
        codes = self.states.codes
        if LEGAL[codes[i] * _NK + _C_QUEUED]:
            codes[i] = _C_QUEUED
        else:
            self.states.move(i, _QUEUED)
        task = ScheduledTask(self.run_node, i, self.priorities[i], self.deadlines[i],
                             self.definition.id, node.resources, node.name, self.instance_id)
        self.tasks[i] = task
        self.queued_times[i] = now = self._time()
        self.started_times[i] = None
        obs = self.observe
        if obs.wants(_K_QUEUED):
            obs.emit(ExecEvent(_K_QUEUED, now, self.instance_id, node.name,
                               self.attempts[i] + 1))
        self.scheduler.enqueue(task)

    # --- one attempt -------------------------------------------------------------

    async def run_node(self, task: "ScheduledTask") -> None:
        """Run one attempt of node ``task.payload`` inside a scheduler slot."""
        i = task.payload
        if self.state is not _I_RUNNING or task.cancelled:
            return
        node = self.nodes[i]
        if node.requires:  # checked before dispatch: a denied node never runs
            try:
                self.gate(node, self)
            except SecurityError as exc:
                await self._denied(i, node, exc)
                return
        codes = self.states.codes
        if LEGAL[codes[i] * _NK + _C_RUNNING]:
            codes[i] = _C_RUNNING
        else:
            self.states.move(i, _RUNNING)
        attempt = self.attempts[i] = self.attempts[i] + 1
        self.started_times[i] = started = self._time()
        obs = self.observe
        if obs.wants(_K_STARTED):
            obs.emit(ExecEvent(_K_STARTED, started, self.instance_id, node.name, attempt))
        try:
            ctx = NodeContext(self, i, task, attempt)
            if self.direct[i]:  # async handler, no timeout, local: one await, no wrapper
                out = await self.handlers[i](ctx)
            else:
                out = await self._call(i, node, ctx)
        except asyncio.CancelledError:
            if not self.scheduler.absorb_interrupt():
                raise
            self.tasks.pop(i, None)
            self._end_node(i, NodeState.CANCELLED, None)
            if self.unfinished == 0:
                self.finish()
            return
        except LionError as exc:
            await self._failed(i, node, exc, attempt, retry=not _is_final(exc))
            return
        except Exception as exc:
            await self._failed(i, node, exc, attempt, retry=True)
            return
        del self.tasks[i]  # keep nothing per node once it has run
        if type(out) is NodeResult:
            if out.kind is ResultKind.FAILURE:
                await self._failed(i, node, handler_error(node, out.error), attempt, retry=True)
                return
            if out.kind is ResultKind.SKIP:
                self.states.move(i, NodeState.SKIPPED)
                self.unfinished -= 1
                await self._finish_node(i, node, K.NODE_SKIPPED, attempt, None)
                return
            out = out.output
        if out is not None and self.require_json:
            problem = check_output(node, out)
            if problem is not None:
                await self._failed(i, node, problem, attempt, retry=False)
                return
        self.results[i] = out
        codes = self.states.codes
        if LEGAL[codes[i] * _NK + _C_SUCCEEDED]:
            codes[i] = _C_SUCCEEDED
        else:
            self.states.move(i, _S_SUCCEEDED)
        self.unfinished -= 1
        if obs.wants(_K_SUCCEEDED):
            obs.emit(ExecEvent(_K_SUCCEEDED, self._time(), self.instance_id, node.name,
                               attempt, self.attempt_data(i)))
        decided: list[int] = []
        self.propagate(i, decided)
        if self.store is not None:
            await self._commit(i, decided)
        self._advance(decided)

    async def _denied(self, i: int, node: Any, exc: SecurityError) -> None:
        """A node whose capabilities are not covered fails (or is skipped) without running."""
        if self.executor.config.on_denied == "skip":
            self.tasks.pop(i, None)
            self.states.move(i, NodeState.SKIPPED)
            self.unfinished -= 1
            self.errors[i] = exc
            await self._finish_node(i, node, K.NODE_SKIPPED, self.attempts[i], exc)
        else:
            await self._failed(i, node, exc, self.attempts[i], retry=False)

    async def _call(self, i: int, node: Any, ctx: NodeContext) -> Any:
        """Run a handler off the fast path: in a thread, on a runner, or under a timeout."""
        handler = self.handlers[i]
        timeout = node.timeout or self.executor.config.default_timeout
        if self.remote[i]:
            coro = self.executor.runner.run(handler, ctx, node, self.is_async[i])
        elif self.is_async[i]:
            coro = handler(ctx)
        else:
            coro = self.executor.run_in_thread(handler, ctx)
        try:
            if timeout is None:
                return await coro
            try:
                async with asyncio.timeout(timeout) as cm:
                    return await coro
            except TimeoutError as exc:
                if cm.expired():
                    raise NodeTimeoutError(
                        f"node {node.name!r} timed out after {timeout}s (attempt {ctx.attempt})",
                        node=node.name, timeout=timeout) from exc
                raise
        finally:
            if ctx.worker is not None:
                self.workers[i] = ctx.worker

    async def _failed(self, i: int, node: Any, exc: BaseException, attempt: int,
                      retry: bool) -> None:
        """An attempt failed: retry after the policy's backoff, or fail the node."""
        self.tasks.pop(i, None)  # a retry queues a new task
        policy = node.retry
        if retry and attempt < policy.max_attempts and not self.cancel_requested:
            self.states.move(i, NodeState.RETRYING)
            delay = policy.delay(attempt)
            if self.observe.wants(K.NODE_RETRIED):
                self.observe.emit(ExecEvent(K.NODE_RETRIED, self.clock.time(),
                                            self.instance_id, node.name, attempt,
                                            {"error": repr(exc), "delay": delay,
                                             **self.attempt_data(i)}))
            if delay > 0:
                self.executor.spawn(self._retry_after(i, delay))
            else:
                self.queue(i)
            return
        if not isinstance(exc, NodeFailedError):
            wrapped = NodeFailedError(
                f"node {node.name!r} failed after {attempt} attempt(s): {exc!r}",
                node=node.name, instance_id=self.instance_id, attempt=attempt)
            wrapped.__cause__ = exc
            exc = wrapped
        self.states.move(i, NodeState.FAILED)
        self.unfinished -= 1
        self.errors[i] = exc
        if self.first_failed is None:
            self.first_failed = i
        await self._finish_node(i, node, K.NODE_FAILED, attempt, exc)
        if self.executor.config.fail_fast:
            await self.cancel(reason=f"node {node.name!r} failed (fail_fast)")

    async def deadline_failed(self, i: int, error: Exception) -> None:
        """The scheduler dropped node ``i`` for missing its deadline (``deadline_miss="fail"``)."""
        if self.states[i] is _QUEUED:
            await self._failed(i, self.definition.nodes[i], error, self.attempts[i], retry=False)

    async def _retry_after(self, i: int, delay: float) -> None:
        await self.clock.sleep(delay)
        if self.state is _I_RUNNING and self.states[i] is NodeState.RETRYING:
            self.queue(i)

    async def _finish_node(self, i: int, node: Any, kind: K, attempt: int,
                           error: BaseException | None) -> None:
        obs = self.observe
        if obs.wants(kind):
            data = self.attempt_data(i)
            if error is not None:
                data["error"] = repr(error)
            obs.emit(ExecEvent(kind, self.clock.time(), self.instance_id, node.name, attempt,
                               data))
        decided: list[int] = []
        self.propagate(i, decided)
        if self.store is not None:
            await self._commit(i, decided)
        self._advance(decided)

    def attempt_data(self, i: int) -> dict[str, Any]:
        """Event data for the end of node ``i``'s attempt: its times, and where it ran."""
        data = {"queued_at": self.queued_times[i], "started_at": self.started_times[i]}
        if self.workers:
            worker = self.workers.get(i)
            if worker is not None:
                data["worker"] = worker
        return data

    async def _commit(self, i: int, decided: list[int]) -> None:
        """Commit node ``i`` and the nodes its end decided, in one atomic write."""
        await self.store.commit(self, [i] + [t for t in decided if t >= 0])

    def _advance(self, decided: list[int]) -> None:
        """Queue what the join rule released; finish the instance when nothing is left."""
        for t in decided:
            if t < 0 and self.state is _I_RUNNING:
                self.queue(~t)
        if self.unfinished == 0:
            self.finish()

    # --- instance level ------------------------------------------------------------

    def start(self) -> None:
        """Queue the roots (a restored run is started by ``restore`` instead)."""
        self.state = _I_RUNNING
        for i, inc in enumerate(self.definition.in_edges):
            if not inc:
                self.queue(i)
        if self.unfinished == 0:
            self.finish()

    def finish(self) -> None:
        """All nodes are terminal: decide the instance state and wake waiters."""
        if self.state not in (_I_RUNNING, InstanceState.PENDING):
            return
        if self.first_failed is not None:  # fail_fast cancels too, but ends FAILED
            name = self.definition.nodes[self.first_failed].name
            self.state = InstanceState.FAILED
            err = WorkflowFailedError(
                f"instance {self.instance_id} of {self.definition.name!r} failed at node "
                f"{name!r}: {self.errors[self.first_failed]}",
                instance_id=self.instance_id, node=name)
            err.__cause__ = self.errors[self.first_failed]
            self.error = err
        elif self.cancel_requested:
            self.state = InstanceState.CANCELLED
            self.error = InstanceCancelledError(f"instance {self.instance_id} was cancelled",
                                                instance_id=self.instance_id)
        else:
            self.state = InstanceState.SUCCEEDED
        self.finished_at = self.clock.time()
        self.executor.instance_finished(self)

    async def cancel(self, reason: str = "cancelled") -> None:
        """Cancel queued and running nodes; the instance ends CANCELLED (or FAILED)."""
        if self.state is not _I_RUNNING or self.cancel_requested:
            return  # not running, or already being cancelled (interrupt workers once)
        self.cancel_requested = True
        me = asyncio.current_task()
        for i, task in list(self.tasks.items()):  # only queued and running nodes have one
            if self.states[i] is _QUEUED:
                task.cancelled = True
                self._end_node(i, NodeState.CANCELLED, None)
            elif self.states[i] is _RUNNING and task.worker not in (None, me):
                self.scheduler.interrupt(task.worker)
        codes = self.states.codes
        for i in range(len(codes)):
            if codes[i] in _CANCEL_NOW:  # waiting to start, or to retry
                self._end_node(i, NodeState.CANCELLED, None)
        if self.unfinished == 0:
            self.finish()


_FINAL = (SecurityError, ResultNotSerializableError, HandlerNotSerializableError)


def _is_final(exc: LionError) -> bool:
    """Errors that retrying cannot fix (denied capabilities, bad results, unshippable code)."""
    return isinstance(exc, _FINAL)
