"""InstanceRun: one running instance — node attempts, retries, the join rule's decisions.

Everything here is indexed by node position in the definition, so the work per
finished node is proportional to its own out-edges (DESIGN.md, "Speed").
The run knows its executor only through a :class:`RunEnv`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, NamedTuple, Sequence

from ..errors import (ConditionError, HandlerNotSerializableError, InstanceCancelledError,
                      LionError, NodeFailedError, NodeTimeoutError, PoisonNodeError,
                      ResultNotSerializableError, SecurityError, WorkflowFailedError)
from ..model import Priority
from ..state import InstanceState, NodeState, NodeStates, check_instance_transition
from ..state._machine import CODE, LEGAL, NODE_ORDER
from ._cache_session import RUN as _RUN
from ._cache_report import ReusedReport
from ._cache_session import CacheSession
from ._env import RunEnv
from ._join import JoinRule
from ._outcome import check_output, encoded_output, handler_error
from ._policies import ScheduledTask
from ._scheduler_config import SchedulingPolicy
from ._result import InstanceResult, NodeColumn
from ._context import NodeContext, NodeResult, ResultKind
from ._durable import node_record, start_record
from ._observe import EventKind as K
from ._observe import ExecEvent

if TYPE_CHECKING:
    from ..model import WorkflowDefinition
    from ._store import InstanceStore

__all__ = ["InstanceRun", "RunProgress"]

_log = logging.getLogger("lion_nb.observe")
_SUCCEEDED = CODE[NodeState.SUCCEEDED]
_NAN = math.nan
_FIFO = SchedulingPolicy.FIFO
_NORMAL = int(Priority.NORMAL)
_TIMEOUT_OF = attrgetter("timeout")
_RESOURCES_OF = attrgetter("resources")
# Enum member access costs ~100 ns on Python 3.11; the hot path uses these globals.
_K_QUEUED = K.NODE_QUEUED
_K_STARTED = K.NODE_STARTED
_K_SUCCEEDED = K.NODE_SUCCEEDED
_RUNNING = NodeState.RUNNING
_S_SUCCEEDED = NodeState.SUCCEEDED
_QUEUED = NodeState.QUEUED
_I_RUNNING = InstanceState.RUNNING
_PENDING_CODE = CODE[NodeState.PENDING]
_SKIPPED_CODE = CODE[NodeState.SKIPPED]
_CANCEL_NOW = (CODE[NodeState.PENDING], CODE[NodeState.RETRYING])
# The three moves every node makes, checked inline (a method call per move costs
# more than the check); an illegal one falls back to NodeStates.move, which raises.
_NK = len(NODE_ORDER)
_C_QUEUED, _C_RUNNING, _C_SUCCEEDED = (CODE[NodeState.QUEUED], CODE[NodeState.RUNNING],
                                       CODE[NodeState.SUCCEEDED])
_END_KIND = {NodeState.SKIPPED: K.NODE_SKIPPED, NodeState.UPSTREAM_FAILED: K.NODE_UPSTREAM_FAILED,
             NodeState.CANCELLED: K.NODE_CANCELLED, NodeState.FAILED: K.NODE_FAILED}


class RunProgress(NamedTuple):
    """What moves during a run, copied at C speed (no Python work per node): views poll it."""

    definition: "WorkflowDefinition"
    state: InstanceState
    #: Per node, in definition order: its state as an index into ``tuple(NodeState)``.
    codes: bytes
    attempts: list[int]
    #: Node index -> the exception that failed it (or skipped it: a denial under "skip").
    errors: dict[int, BaseException]


class InstanceRun:
    """The live state of one instance; the scheduler's workers call ``run_node``."""

    def __init__(self, env: RunEnv, definition: "WorkflowDefinition", instance_id: str,
                 inputs: Mapping[str, Any], handlers: list[Any], is_async: list[bool],
                 priorities: list[int], deadlines: list[float | None],
                 gate: Callable[..., None], resource_gate: Callable[..., Any],
                 grants: Any = None) -> None:
        self.env = env
        self.scheduler = env.scheduler
        self.observe = env.observe
        self.clock = env.clock
        self.definition = definition
        self.instance_id = instance_id
        self.inputs = inputs
        self.handlers = handlers
        self.is_async = is_async
        self.priorities = priorities
        self.deadlines = deadlines
        self.gate = gate
        self.resource_gate = resource_gate
        self.grants = grants  # the instance's GrantSet (remote runners verify it again)
        n = len(definition.nodes)
        self.join = JoinRule(definition)
        self.states: NodeStates = NodeStates(definition.by_name, instance_id)  # names, in order
        self.results: list[Any] = [None] * n
        self.errors: dict[int, BaseException] = {}
        self.attempts = [0] * n
        self.unfinished = n
        self.first_failed: int | None = None
        self.tasks: dict[int, ScheduledTask] = {}  # queued and running nodes that have one
        # Per node: the monotonic time its current attempt was queued (NaN: not queued),
        # and the worker Task its last attempt ran on (to interrupt it on cancel).
        # A list, not an array('d'): an array store parses its float (~200 instructions),
        # and the stamps stored are floats the scheduler already made (shared by a batch).
        self.queued_at: list[float] = [_NAN] * n
        self.running_on: list[Any] = [None] * n
        # Per node: may it be queued as a plain FIFO call (normal priority, no deadline,
        # no resource pool, no per-group limit)? One byte read per queueing, not four.
        ungrouped = env.scheduler.config.max_per_group is None
        if ungrouped and priorities.count(_NORMAL) == n and deadlines.count(None) == n and not any(
                map(_RESOURCES_OF, definition.nodes)):
            self.plain = bytearray(b"\x01") * n  # the usual graph: counted in C, no loop
        else:
            self.plain = bytearray(
                ungrouped and p == _NORMAL and d is None and not node.resources
                for p, d, node in zip(priorities, deadlines, definition.nodes))
        # run_node bound once, not once per node; a cycle (run -> method -> run) that
        # _finished breaks, so a finished run is freed without the cyclic collector.
        self._runner: Callable[..., Coroutine[Any, Any, None]] | None = self.run_node
        self.state = InstanceState.PENDING
        self.cancel_requested = False
        #: Set once every node is terminal and the final state is being decided/stored.
        self.finishing = False
        self.started_at = now = self.clock.time()
        # Wall-clock stamps are the scheduler's monotonic stamps plus this offset: a node's
        # queue and start times cost no clock read of their own (read once, per run).
        self._offset = now - self.clock.monotonic()
        self.finished_at: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self.store: InstanceStore | None = None  # durable committer, None in memory
        self.nodes = definition.nodes
        self._mono = self.clock.monotonic
        config = env.config
        self.require_json = config.require_json_results
        no_default_timeout = config.default_timeout is None
        runner = env.runner
        # Per node: does the runner take it (e.g. to a Dask cluster), or does it run here?
        n_nodes = len(definition.nodes)
        if runner is None:
            self.remote = [False] * n_nodes
        else:
            self.remote = [bool(getattr(runner, "accepts", lambda n: True)(n))
                           for n in definition.nodes]
        if no_default_timeout and runner is None:  # without a call per node
            self.direct = [a and t is None for a, t in
                           zip(is_async, map(_TIMEOUT_OF, definition.nodes))]
        else:
            self.direct = [is_async[k] and not self.remote[k] and node.timeout is None
                           and no_default_timeout for k, node in enumerate(definition.nodes)]
        # (queued_at, started_at) of an attempt that ended other than by success, until its
        # end is reported: end reports carry them, so history needs one report per attempt.
        self.times: dict[int, tuple[float | None, float | None]] = {}
        self.workers: dict[int, str] = {}  # node -> where its last attempt ran, if elsewhere
        # Cache decisions (None: no cache and no re-run request). Reused nodes are settled
        # in a loop over ``_ready``, not by recursion: a chain may be 100k nodes long.
        self.cache: CacheSession | None = None
        self._ready: list[int] = []
        self._draining = False
        self._report: ReusedReport | None = None  # reused nodes' events, one per batch
        # Durable runs only: how often a node's process died under it (from storage), and
        # the attempt whose start record a commit already wrote (no second write then).
        self.crashes: dict[int, int] = {}
        self.announced: dict[int, int] = {}
        self.max_crashes = config.max_node_crashes
        self.restored: list[int] = []  # nodes read back from storage by ``restore``

    # --- what handlers and callers read --------------------------------------------

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

    def node_inputs(self, i: int) -> Mapping[str, Any]:
        """``ctx.inputs`` of node ``i``: under a cache, a view that notes what it reads."""
        return self.inputs if self.cache is None else self.cache.inputs_for(i)

    async def publish(self, node: str, topic: str, payload: Any) -> None:
        """``ctx.publish``: the executor's sink, with headers naming this instance and node."""
        await self.env.publish(topic, payload, {"lion.instance_id": self.instance_id,
                                                "lion.node": node,
                                                "lion.workflow": self.definition.name})

    def progress(self) -> RunProgress:
        """The run as it is now, cheaply (a live view reads it once per tick)."""
        return RunProgress(self.definition, self.state, bytes(self.states.codes),
                           self.attempts.copy(), self.errors.copy())

    def snapshot(self) -> InstanceResult:
        """The instance as it is now (a finished one's node tables are read, not copied)."""
        d = self.definition
        states = self.states
        codes, results, attempts = states.codes, self.results, self.attempts
        exceptions: dict[str, BaseException] = {}
        skipped: dict[str, str] = {}  # a node denied under on_denied="skip" is a skip
        for i, e in self.errors.items():
            if codes[i] == _SKIPPED_CODE:
                skipped[d.nodes[i].name] = str(e)
            else:
                exceptions[d.nodes[i].name] = e
        if self.done.done():  # nothing moves any more
            names = states.names
            node_states: Mapping[str, NodeState] = NodeColumn(
                names, d.by_name, lambda i: NODE_ORDER[codes[i]])
            attempt_map: Mapping[str, int] = NodeColumn(names, d.by_name, attempts.__getitem__)
            result_map: Mapping[str, Any] = NodeColumn(names, d.by_name, results.__getitem__,
                                                       lambda i: codes[i] == _SUCCEEDED)
        else:
            node_states = states.as_dict()
            attempt_map = {n.name: attempts[i] for i, n in enumerate(d.nodes)}
            result_map = {d.nodes[i].name: results[i] for i, c in enumerate(codes)
                          if c == _SUCCEEDED}
        return InstanceResult(
            instance_id=self.instance_id, definition=d, state=self.state,
            node_states=node_states, attempts=attempt_map,  # type: ignore[arg-type]
            results=result_map,  # type: ignore[arg-type]
            exceptions=exceptions, skip_reasons=skipped, error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            restored=frozenset(d.nodes[i].name for i in self.restored),
            reasons={} if self.cache is None else self.cache.reasons())

    # --- queueing -------------------------------------------------------------------

    def queue(self, i: int) -> None:
        """Hand node ``i`` to the scheduler (or settle it from the cache)."""
        if self.cache is not None and self.attempts[i] == 0 and self.store is None:
            self._ready.append(i)
            if not self._draining:
                self._drain()
            return
        self._enqueue(i)

    def _drain(self) -> None:
        """Decide ready nodes: reuse a cached result here, or queue the node to run.

        A reused node ends SUCCEEDED with the cached result, decided without an
        attempt (no transitions, no handler); its event comes with the report's
        batch, flushed before any other event of the run. One loop, no call per
        reused node besides the decision and the join rule: a fully cached re-run
        is this loop and nothing else.
        """
        session = self.cache
        assert session is not None
        decide, gated, ready = session.decide, session.gated, self._ready
        report = self._reused_report(session)
        pending = report.pending
        codes, results, settle = self.states.codes, self.results, self.join.done
        run, ok = _RUN, _C_SUCCEEDED
        if self.state is not _I_RUNNING or self.cancel_requested:
            ready.clear()
            return
        self._draining = True
        try:
            # Nothing here awaits, so no cancel() can land inside the loop: the state
            # is checked once, above, not per node.
            while ready:
                i = ready.pop()
                result = decide(i)
                if result is run or (gated[i] and not self._may_reuse(i)):
                    if pending:
                        report.flush()
                    self._enqueue(i)
                    continue
                codes[i] = ok
                results[i] = result
                self.unfinished -= 1
                pending.append(i)
                for t in settle(i, ok, result):
                    if t < 0:
                        ready.append(~t)
                    else:
                        report.flush()
                        self._end_decided(t)
        finally:
            self._draining = False
            if pending:
                report.flush()
        if self.unfinished == 0:  # every node ended (so none was left ready)
            self.finish()

    def _reuse_upfront(self) -> bool:
        """Start a run with a cache: settle, in topological order, every node whose
        predecessors were all reused, then tell the join rule about those that a node
        still to run waits for.

        False where the join rule must decide node by node (conditions, other trigger
        rules, a re-run request): ``start`` queues the roots. A fully cached re-run is
        this one pass: no join rule step and no drain step per node.
        """
        session = self.cache
        assert session is not None
        order = session.upfront
        if order is None:
            return False
        codes, results, sources, gated = (self.states.codes, self.results, session.sources,
                                          session.gated)
        decide, ok, run = session.decide, _C_SUCCEEDED, _RUN
        reused: list[int] = []
        to_run: set[int] = set()
        for i in order:
            for s in sources[i]:
                if codes[s] != ok:
                    break  # a predecessor runs first: the join rule releases this one
            else:
                result = decide(i)
                if result is run or (gated[i] and not self._may_reuse(i)):
                    to_run.add(i)
                else:
                    codes[i] = ok
                    results[i] = result
                    reused.append(i)
        self.unfinished -= len(reused)
        report = self._reused_report(session)
        report.pending += reused
        report.flush()
        if not self.unfinished:
            return True
        # The join rule counts only the reused nodes that something still waits for; what
        # it releases was decided above (queued here, not decided a second time).
        for i in self.join.ready():
            if i in to_run:
                self._enqueue(i)
        out, target, settle = self.definition.out_edges, self.definition.edge_target, self.join.done
        for i in reused:
            for k in out[i]:
                if codes[target[k]] != ok:
                    for t in settle(i, ok, results[i]):
                        if t >= 0:
                            self._end_decided(t)
                        elif ~t in to_run:
                            self._enqueue(~t)
                        elif codes[~t] != ok:
                            self.queue(~t)
                    break
        return True

    def _reused_report(self, session: CacheSession) -> ReusedReport:
        report = self._report
        if report is None:
            report = self._report = ReusedReport(self.observe, self.instance_id, session.names,
                                                 session.verdicts, self._now,
                                                 detailed=session.plan is not None)
        return report

    def _may_reuse(self, i: int) -> bool:
        """The capability check runs for a cached node too: denied, it goes the normal way."""
        try:
            node = self.nodes[i]
            self.gate(node.requires, node.name)
        except SecurityError:
            assert self.cache is not None
            self.cache.verdicts[i] = None  # not reused after all; its failure says why
            return False
        return True

    def _enqueue(self, i: int, now: float | None = None) -> None:
        """Queue node ``i`` now (``now``: the caller's monotonic stamp, if it has one)."""
        codes = self.states.codes
        if LEGAL[codes[i] * _NK + _C_QUEUED]:
            codes[i] = _C_QUEUED
        else:
            self.states.move(i, _QUEUED)
        if now is None:
            now = self._mono()
        self.queued_at[i] = now
        obs = self.observe
        if _K_QUEUED in obs.wanted:
            obs.emit(ExecEvent(_K_QUEUED, now + self._offset, self.instance_id,
                               self.nodes[i].name, self.attempts[i] + 1))
        scheduler = self.scheduler
        if self.plain[i] and scheduler.policy is _FIFO:  # no task object: see enqueue_call
            scheduler.enqueue_call(self._runner or self.run_node, i, now)
            return
        node = self.nodes[i]
        task = ScheduledTask(self._run_task, i, self.priorities[i], self.deadlines[i],
                             self.definition.id, node.resources, node.name, self.instance_id)
        self.tasks[i] = task
        scheduler.enqueue(task, now)

    def _release(self, decided: Sequence[int], now: float) -> None:
        """Apply what the join rule decided at the end of an attempt (no cache, in memory).

        ``_enqueue``'s common case is inlined, with what it reads read once: a released
        node is PENDING and goes to a FIFO scheduler as a plain call, unannounced (a call
        per released node is a tenth of what the engine spends on it).
        """
        scheduler = self.scheduler
        fast = scheduler.policy is _FIFO and _K_QUEUED not in self.observe.wanted
        codes, queued_at, plain = self.states.codes, self.queued_at, self.plain
        runner = self._runner or self.run_node
        for t in decided:
            if t >= 0:
                self._end_decided(t)
                continue
            t = ~t
            if fast and plain[t] and codes[t] == _PENDING_CODE:  # PENDING -> QUEUED: legal
                codes[t] = _C_QUEUED
                queued_at[t] = now
                scheduler.enqueue_call(runner, t, now)
            else:
                self._enqueue(t, now)

    def _run_task(self, task: ScheduledTask) -> Coroutine[Any, Any, None]:
        """The runner of a node's ScheduledTask (the path with priorities, deadlines, pools)."""
        return self.run_node(task.payload, task.slice_start, task.worker, task)

    def yielding_task(self, i: int, started: float) -> ScheduledTask:
        """A ScheduledTask for node ``i``'s running attempt, dispatched as a plain call at
        ``started``: made at its first ``ctx.yield_now()``, the one place that needs it."""
        node = self.nodes[i]
        task = ScheduledTask(self._run_task, i, self.priorities[i], None, self.definition.id,
                             (), node.name, self.instance_id)
        task.enqueued_at, task.slice_start = self.queued_at[i], started
        task.worker = self.running_on[i]
        return task

    # --- one attempt ------------------------------------------------------------------

    async def run_node(self, i: int, dispatched: float, worker: Any,
                       task: ScheduledTask | None = None) -> None:
        """Run one attempt of node ``i`` in a scheduler slot taken at ``dispatched``
        (monotonic) on ``worker``; ``task`` is its ScheduledTask, if it has one."""
        codes = self.states.codes
        if self.state is not _I_RUNNING or codes[i] != _C_QUEUED:
            return  # cancelled while it waited
        self.running_on[i] = worker
        node = self.nodes[i]
        offset = self._offset
        queued = self.queued_at[i] + offset
        started = dispatched + offset  # the scheduler's dispatch stamp, on the wall clock
        if node.requires:  # checked before dispatch: a denied node never runs
            gate = self.gate  # a local: ``self.gate(...)`` is a method lookup that misses
            try:
                gate(node.requires, node.name, started)
            except SecurityError as exc:
                self.times[i] = (queued, None)
                await self._denied(i, node, exc)
                return
        codes[i] = _C_RUNNING  # from QUEUED (checked above): a legal move
        attempt = self.attempts[i] = self.attempts[i] + 1
        if self.store is not None:
            # Usually the commit that released it carried its start record: no call then.
            if self.max_crashes and (self.announced.pop(i, 0) != attempt
                                     or self.crashes.get(i, 0) >= self.max_crashes):
                self.times[i] = (queued, None)
                if not await self._announce(i, node, attempt):
                    return
                del self.times[i]
            started = self._now()  # after the start record is durable
        obs = self.observe
        if _K_STARTED in obs.wanted:
            obs.emit(ExecEvent(_K_STARTED, started, self.instance_id, node.name, attempt))
        session = self.cache
        reused = False
        if session is not None and attempt == 1 and self.store is not None:
            # A durable instance commits every node, reused ones too: they take this path.
            out = session.decide(i)
            reused = out is not _RUN
        try:
            ctx = NodeContext(self, i, dispatched if task is None else task, attempt)
            if reused:
                pass
            elif self.direct[i]:  # async handler, no timeout, local: one await, no wrapper
                out = await self.handlers[i](ctx)
            else:
                out = await self._call(i, node, ctx)
        except asyncio.CancelledError:
            if not self.scheduler.absorb_interrupt():
                raise
            self.tasks.pop(i, None)
            self.times[i] = (queued, started)
            self._end_node(i, NodeState.CANCELLED, None)
            if self.unfinished == 0:
                self.finish()
            return
        except LionError as exc:
            self.times[i] = (queued, started)
            await self._failed(i, node, exc, attempt, retry=not _is_final(exc))
            return
        except Exception as exc:
            self.times[i] = (queued, started)
            await self._failed(i, node, exc, attempt, retry=True)
            return
        if task is not None:
            del self.tasks[i]  # keep nothing per node once it has run
        if type(out) is NodeResult:
            self.times[i] = (queued, started)
            if out.kind is ResultKind.FAILURE:
                await self._failed(i, node, handler_error(node, out.error), attempt, retry=True)
                return
            if out.kind is ResultKind.SKIP:
                self.states.move(i, NodeState.SKIPPED)
                self.unfinished -= 1
                await self._finish_node(i, node, K.NODE_SKIPPED, attempt, None)
                return
            out = out.output
            del self.times[i]
        encoded: bytes | None = None
        if out is not None and self.require_json:
            if self.store is None:
                problem = check_output(node, out)
            else:  # checked by encoding it, once: the commit stores these bytes
                checked = encoded_output(node, out)
                if isinstance(checked, bytes):
                    encoded, problem = checked, None
                else:
                    problem = checked
            if problem is not None:
                self.times[i] = (queued, started)
                await self._failed(i, node, problem, attempt, retry=False)
                return
        if session is not None and not reused:
            session.ran(i, out)
        self.results[i] = out
        codes = self.states.codes
        if LEGAL[codes[i] * _NK + _C_SUCCEEDED]:
            codes[i] = _C_SUCCEEDED
        else:
            self.states.move(i, _S_SUCCEEDED)
        self.unfinished -= 1
        now = self._mono()  # the one clock read of the end: its report, its successors' queueing
        if _K_SUCCEEDED in obs.wanted:
            extra = None if session is None and not self.workers else self._extra(i)
            sink = obs.sinks.get(_K_SUCCEEDED)  # history alone: called without the stream
            if sink is None:
                obs.attempt_ended(_K_SUCCEEDED, now + offset, self.instance_id, node.name,
                                  attempt, queued, started, extra)
            else:
                try:
                    sink(_K_SUCCEEDED, now + offset, self.instance_id, node.name, attempt,
                         queued, started, extra)
                except Exception:  # as attempt_ended does: a broken subscriber breaks no run
                    _log.exception("observe subscriber %r failed", sink)
        decided = self.join.done(i, _C_SUCCEEDED, out)
        if self.store is not None:
            await self._commit(i, decided, encoded)
        elif session is None and self.state is _I_RUNNING and not self.cancel_requested:
            if decided:  # _advance without a cache: nothing here can cancel
                self._release(decided, now)
            if self.unfinished == 0:
                self.finish()
        else:
            self._advance(decided)

    async def _announce(self, i: int, node: Any, attempt: int) -> bool:
        """Durably record that ``attempt`` of node ``i`` starts; False if it must not run.

        So attempts count across crashes, and a node that keeps killing its process
        fails as a poison node instead of running on every resume.
        """
        crashes = self.crashes.get(i, 0)
        if crashes >= (self.max_crashes or 0):
            error = PoisonNodeError(
                f"node {node.name!r} of instance {self.instance_id} was queued or running "
                f"when its process died, {crashes} times; it is not run again (ExecutorConfig."
                f"max_node_crashes={self.max_crashes})", node=node.name,
                instance_id=self.instance_id, attempt=attempt, crashes=crashes)
            await self._failed(i, node, error, attempt, retry=False)
            return False
        if self.announced.pop(i, 0) == attempt:
            return True  # written with the commit that released it
        assert self.store is not None
        failure = await self.store.commit([(i, start_record(node.name, attempt, crashes))])
        if failure is None:
            return True
        if not self.cancel_requested:
            await self.cancel(reason=str(failure))
        self.tasks.pop(i, None)
        self._end_node(i, NodeState.CANCELLED, None)
        if self.unfinished == 0:
            self.finish()
        return False

    async def _denied(self, i: int, node: Any, exc: SecurityError) -> None:
        """A node whose capabilities are not covered fails (or is skipped) without running."""
        if self.env.config.on_denied == "skip":
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
        timeout = node.timeout or self.env.config.default_timeout
        if self.remote[i]:
            coro = self.env.runner.run(handler, ctx, node, self.is_async[i])
        elif self.is_async[i]:
            coro = handler(ctx)
        else:
            coro = self.env.run_in_thread(handler, ctx)
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
        self.queued_at[i] = _NAN  # the attempt that ends here was the one queued
        policy = node.retry
        if retry and attempt < policy.max_attempts and not self.cancel_requested:
            self.states.move(i, NodeState.RETRYING)
            delay = policy.delay(attempt)
            times = self._times(i)
            if K.NODE_RETRIED in self.observe.wanted:
                self.observe.attempt_ended(K.NODE_RETRIED, self._now(), self.instance_id,
                                           node.name, attempt, *times,
                                           {"error": repr(exc), "delay": delay,
                                            **(self._extra(i) or {})})
            if delay > 0:
                self.env.spawn(self._retry_after(i, delay))
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
        if self.env.config.fail_fast:
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
        self._report_end(i, kind, attempt, error)
        decided = self.join.done(i, self.states.codes[i], None)
        if self.store is None:
            self._advance(decided)
        else:
            await self._commit(i, decided)

    def _now(self) -> float:
        """Wall-clock seconds, on the same footing as the scheduler's stamps."""
        return self._mono() + self._offset

    def _times(self, i: int) -> tuple[float | None, float | None]:
        """(queued_at, started_at) of node ``i``'s attempt that is ending now."""
        times = self.times.pop(i, None)
        if times is not None:
            return times
        queued = self.queued_at[i]  # queued and not started (cancelled), or NaN
        return (None, None) if queued != queued else (queued + self._offset, None)

    def _extra(self, i: int) -> dict[str, Any] | None:
        """What an end report says beyond the times: why the node ran, and where."""
        data: dict[str, Any] = {}
        session = self.cache
        if session is not None:
            verdict = session.verdicts[i]
            if verdict is not None:
                data["reason"] = verdict.reason.value
                data["reason_detail"] = verdict.detail
        if self.workers:
            worker = self.workers.get(i)
            if worker is not None:
                data["worker"] = worker
        return data or None

    def _report_end(self, i: int, kind: K, attempt: int, error: BaseException | None) -> None:
        """Tell the observe stream how node ``i`` (its attempt, if it had one) ended."""
        times = self._times(i)
        obs = self.observe
        if kind in obs.wanted:
            extra = self._extra(i)
            if error is not None:
                extra = {**(extra or {}), "error": repr(error)}
            obs.attempt_ended(kind, self._now(), self.instance_id, self.nodes[i].name,
                              attempt, *times, extra)

    # --- applying the join rule's decisions ----------------------------------------------

    def _advance(self, decided: Sequence[int]) -> None:
        """End what the join rule ended, queue what it released, finish when nothing is left."""
        for t in decided:
            if t >= 0:
                self._end_decided(t)
            elif self.state is _I_RUNNING and not self.cancel_requested:
                self.queue(~t)
        if self.unfinished == 0:
            self.finish()

    def _end_decided(self, t: int) -> bool:
        """Apply an end the join rule decided for ``t``; False if ``t`` was cancelled first."""
        if self.states.codes[t] != _PENDING_CODE:
            return False
        state = self.join.verdict[t]
        self._end_node(t, state, self.join.errors.get(t) if state is NodeState.FAILED else None)
        return True

    async def _commit(self, i: int, decided: Sequence[int], output: bytes | None = None) -> None:
        """Commit node ``i`` (``output``: its result's canonical JSON, if made) and the ends
        decided with it in one write, then advance."""
        assert self.store is not None
        ended = [i] + [t for t in decided if t >= 0 and self._end_decided(t)]
        records = [self._record(j) for j in ended]
        for t in decided:  # successors about to be queued: their start records ride along
            if t < 0 and self.max_crashes:
                t = ~t
                attempt = self.announced[t] = self.attempts[t] + 1
                records.append((t, start_record(self.nodes[t].name, attempt,
                                                self.crashes.get(t, 0))))
        failure = await self.store.commit(records, output)
        if failure is not None and not self.cancel_requested:
            # cancel() awaits nothing, so this ends the instance before any successor
            # of an uncommitted node is queued -- even when this node was the last one.
            await self.cancel(reason=str(failure))
        self._advance([t for t in decided if t < 0])

    def _record(self, i: int) -> tuple[int, dict[str, Any]]:
        state = self.states[i]
        err = self.errors.get(i)
        return i, node_record(self.nodes[i].name, state,
                              self.results[i] if state is _S_SUCCEEDED else None,
                              self.attempts[i], None if err is None else str(err))

    def _end_node(self, i: int, state: NodeState, error: BaseException | None) -> None:
        """Terminal state for a node that will not run (again)."""
        self.states.move(i, state)
        self.unfinished -= 1
        if error is not None:
            self.errors[i] = error
        if state is NodeState.FAILED and self.first_failed is None:
            self.first_failed = i
        self._report_end(i, _END_KIND[state], self.attempts[i], error)

    # --- instance level ------------------------------------------------------------------

    def start(self) -> None:
        """Queue the roots (a resumed run is started by ``restore`` instead)."""
        self._set_state(_I_RUNNING)
        if self.cache is None or self.store is not None or not self._reuse_upfront():
            for i in self.join.ready():
                self.queue(i)
        if self.unfinished == 0:
            self.finish()

    def restore(self, committed: dict[int, tuple[NodeState, Any, int, str | None]],
                started: dict[int, tuple[int, int]]) -> None:
        """Rebuild from committed node records ``{index: (state, output, attempts, error)}``
        and the nodes that had started when the process died ``{index: (attempts, crashes)}``.

        Committed nodes keep their state and output and never run again; the join
        rule is rebuilt from them, and whatever is now decidable is queued or decided.
        Started nodes run again, their attempts counted on from where they were.
        """
        d = self.definition
        obs = self.observe
        for i, (attempts, crashes) in started.items():
            self.attempts[i] = attempts
            self.crashes[i] = crashes
        self.restored = list(committed)
        for i, (state, output, attempts, error) in committed.items():
            self.states.restore(i, state)
            self.results[i] = output if state is NodeState.SUCCEEDED else None
            self.attempts[i] = attempts
            self.unfinished -= 1
            if state is NodeState.FAILED:
                self.errors[i] = NodeFailedError(
                    f"node {d.nodes[i].name!r} failed before the restart: {error}",
                    node=d.nodes[i].name, instance_id=self.instance_id, attempt=attempts)
                if self.first_failed is None:
                    self.first_failed = i
            if K.NODE_RESTORED in obs.wanted:
                # reason/detail/error: what history's tables show of a restored node
                data = {"state": state.value, "reason": "restored",
                        "reason_detail": f"{state.value} before the restart"}
                if error is not None:
                    data["error"] = str(error)
                obs.emit(ExecEvent(K.NODE_RESTORED, self.clock.time(), self.instance_id,
                                   d.nodes[i].name, attempts, data))
        self._set_state(_I_RUNNING)
        codes = self.states.codes
        self._advance(self.join.restore({i: (codes[i], self.results[i]) for i in committed}))

    def _set_state(self, state: InstanceState) -> None:
        check_instance_transition(self.instance_id, self.state, state)
        self.state = state

    def finish(self) -> None:
        """All nodes are terminal: decide the instance state, store it, wake waiters."""
        if self.finishing or self.state is not _I_RUNNING:
            return
        self.finishing = True
        error: BaseException | None = None
        if self.first_failed is not None:  # fail_fast cancels too, but ends FAILED
            name = self.definition.nodes[self.first_failed].name
            state = InstanceState.FAILED
            cause = self.errors[self.first_failed]
            # A condition that raised fails its target, whose handler never ran: the
            # culprit is the edge and the source's result, so the error names them.
            source = getattr(cause, "source", None) if isinstance(cause, ConditionError) \
                else None
            where = f"node {name!r}: {cause}" if source is None else (
                f"the condition on edge {source!r} -> {name!r} ({name!r} never ran): "
                f"{cause.__cause__ or cause}")
            error = WorkflowFailedError(
                f"instance {self.instance_id} of {self.definition.name!r} failed at {where}",
                instance_id=self.instance_id, node=name, source=source,
                edge=None if source is None else getattr(cause, "edge", None))
            error.__cause__ = cause
        elif self.cancel_requested:
            state = InstanceState.CANCELLED
            error = InstanceCancelledError(f"instance {self.instance_id} was cancelled",
                                           instance_id=self.instance_id)
        else:
            state = InstanceState.SUCCEEDED
        self.finished_at = self.clock.time()
        if self.store is None:
            self._finished(state, error)
        else:  # the final state is what storage holds: decided after the last commit
            self.env.spawn(self._finish_durably(self.store, state, error))

    async def _finish_durably(self, store: "InstanceStore", state: InstanceState,
                              error: BaseException | None) -> None:
        try:
            state, error = await store.end(state, error)
        finally:
            self._finished(state, error)

    def _finished(self, state: InstanceState, error: BaseException | None) -> None:
        self._runner = None
        self._set_state(state)
        self.error = error
        self.env.on_finished(self)
        if not self.done.done():
            self.done.set_result(None)

    async def cancel(self, reason: str = "cancelled") -> None:
        """Cancel queued and running nodes; the instance ends CANCELLED (or FAILED)."""
        if self.state is not _I_RUNNING or self.cancel_requested or self.finishing:
            return  # not running, or already being cancelled (interrupt workers once)
        self.cancel_requested = True
        me = asyncio.current_task()
        codes = self.states.codes
        for i, task in self.tasks.items():  # queued tasks never take a slot now
            if codes[i] == _C_QUEUED:
                task.cancelled = True
        for i in range(len(codes)):
            code = codes[i]
            if code == _C_QUEUED or code in _CANCEL_NOW:  # queued, waiting to start or retry
                self._end_node(i, NodeState.CANCELLED, None)
            elif code == _C_RUNNING:
                worker = self.running_on[i]
                if worker is not None and worker is not me:
                    self.scheduler.interrupt(worker)
        if self.unfinished == 0:
            self.finish()


_FINAL = (SecurityError, ResultNotSerializableError, HandlerNotSerializableError)


def _is_final(exc: LionError) -> bool:
    """Errors that retrying cannot fix (denied capabilities, bad results, unshippable code)."""
    return isinstance(exc, _FINAL)

