"""WorkflowExecutor: registers handlers, starts instances, waits, cancels, resumes."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Iterable, Mapping

from ..errors import (CapabilityDeniedError, ExecutorStoppedError, HandlerNotFoundError,
                      InstanceNotFoundError, LionError, SecurityError)
from ..model.definition import WorkflowDefinition
from ..model.ids import InstanceId
from ..model.node import Node, Priority
from ..security import GrantSet, Requirement, ResourceRegistry, resource_for, scope_covers
from ..state.machine import InstanceState, StateMachineManager
from .history import HistoryRecorder
from .observe import EventKind as K
from .observe import ExecEvent
from .result import InstanceResult
from .run import InstanceRun
from .scheduler import WorkflowScheduler

__all__ = ["WorkflowExecutor", "ExecutorConfig", "NodeHandler"]

NodeHandler = Callable[[Any], Any]
"""A handler: ``async def h(ctx)`` or ``def h(ctx)``, returning a value or a NodeResult."""


@dataclass
class ExecutorConfig:
    """Executor settings.

    ``fail_fast``: the first failed node cancels the rest of its instance
    (default: independent branches go on; dependents end UPSTREAM_FAILED).
    ``require_json_results``: outputs must be JSON data (so they can be
    checkpointed); turn off to pass Python objects such as DataFrames in memory.
    ``runner``: where handlers run (None: this process; see lion_nb.distributed).
    ``authority``: the lion_nb.security Authority that verifies the ``grants`` of
    ``execute_workflow``; ``on_denied``: a node whose requirements are not
    covered "fail"s (default) or is "skip"ped — it never runs either way.
    ``event_sink``: ``async (topic, payload, headers) -> None`` behind
    ``ctx.publish``; ``lion_nb.patterns.connect_broker(executor, broker)`` sets it.
    """

    fail_fast: bool = False
    default_timeout: float | None = None
    require_json_results: bool = True
    max_threads: int | None = None
    record_history: bool = True
    runner: Any = None
    lease_ttl: float = 30.0
    authority: Any = None
    on_denied: str = "fail"
    event_sink: Callable[..., Awaitable[Any]] | None = None

    def __post_init__(self) -> None:
        if self.on_denied not in ("fail", "skip"):
            raise LionError(f"on_denied must be 'fail' or 'skip', not {self.on_denied!r}")


class WorkflowExecutor:
    """Runs workflow instances on a scheduler, many at once, on the running event loop."""

    def __init__(self, scheduler: WorkflowScheduler | None = None,
                 state_manager: StateMachineManager | None = None,
                 config: ExecutorConfig | None = None) -> None:
        self.scheduler = scheduler if scheduler is not None else WorkflowScheduler()
        self.state_manager = state_manager if state_manager is not None else StateMachineManager()
        self.config = config or ExecutorConfig()
        self.observe = self.scheduler.observe
        self.history = HistoryRecorder()
        if self.config.record_history:
            self.history.attach(self.observe)
        self.runner = self.config.runner
        self._handlers: dict[str, tuple[NodeHandler, bool]] = {}
        self._runs: dict[str, InstanceRun] = {}
        self._started = False
        self._threads: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.scheduler.on_deadline_failed = self._deadline_failed
        self.resources = ResourceRegistry()
        if self.config.authority is not None:
            self.config.authority.add_listener(self._audited)

    # --- handlers ----------------------------------------------------------------

    async def register_node_handler(self, name: str, handler: NodeHandler) -> None:
        """Register ``handler`` for nodes whose handler key (default: name) is ``name``."""
        self.add_handler(name, handler)

    def add_handler(self, name: str, handler: NodeHandler) -> None:
        """Synchronous twin of ``register_node_handler`` (replaces an earlier one)."""
        if not callable(handler):
            raise HandlerNotFoundError(f"handler for {name!r} is not callable: {handler!r}",
                                       handler=name, node=None)
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None))
        self._handlers[name] = (handler, is_async)

    def handler(self, name: str | None = None) -> Callable[[NodeHandler], NodeHandler]:
        """Decorator form: ``@executor.handler("Extract")`` (default: the function's name)."""
        def deco(fn: NodeHandler) -> NodeHandler:
            self.add_handler(name or fn.__name__, fn)
            return fn
        return deco

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Accept instances (idempotent). A stopped executor stays stopped: make a new one."""
        if self.scheduler.closed:
            raise ExecutorStoppedError("this executor was stopped (its scheduler is closed); "
                                       "create a new WorkflowExecutor")
        self._started = True

    async def stop(self) -> None:
        """Cancel running instances, stop the scheduler's workers and the thread pool."""
        for run in list(self._runs.values()):
            if run.state is InstanceState.RUNNING:
                if run.store is not None:  # durable: stays resumable, its lease released
                    await run.store.detach(run)
                await run.cancel()
        self._started = False
        for t in list(self._background):
            t.cancel()
        await self.scheduler.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def __aenter__(self) -> "WorkflowExecutor":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- instances -------------------------------------------------------------------

    def _resolve_handlers(self, definition: WorkflowDefinition) -> tuple[list[Any], list[bool]]:
        handlers, flags = [], []
        for node in definition.nodes:
            entry = self._handlers.get(node.handler)
            if entry is None:
                raise HandlerNotFoundError(
                    f"node {node.name!r} of {definition.name!r} has no registered handler "
                    f"{node.handler!r}; registered: {sorted(self._handlers)[:20]}",
                    node=node.name, handler=node.handler)
            handlers.append(entry[0])
            flags.append(entry[1])
        return handlers, flags

    def _new_run(self, definition: WorkflowDefinition, instance_id: str,
                 inputs: Mapping[str, Any] | None, priority: Any, deadlines: Any,
                 grants: Iterable[Any] | None) -> InstanceRun:
        if not self._started or self.scheduler.closed:
            raise ExecutorStoppedError("the executor is not started; await executor.start()")
        if not isinstance(definition, WorkflowDefinition):
            raise LionError(f"execute_workflow takes a WorkflowDefinition, not "
                            f"{type(definition).__name__}")
        handlers, flags = self._resolve_handlers(definition)
        nodes = definition.nodes
        prios = [int(_per_node(priority, n, n.priority)) for n in nodes]
        now = self.scheduler.clock.monotonic()
        dls: list[float | None] = []
        for n in nodes:
            rel = _per_node(deadlines, n, n.deadline)
            dls.append(None if rel is None else now + rel)
        grant_set = self._grant(instance_id, grants)
        gate, resource_gate = self._security_gates(instance_id, grant_set)
        run = InstanceRun(self, definition, instance_id, dict(inputs or {}), handlers, flags,
                          prios, dls, gate, resource_gate)
        run.grants = grant_set
        return run

    async def execute_workflow(self, workflow: WorkflowDefinition, *,
                               inputs: Mapping[str, Any] | None = None,
                               instance_id: str | None = None,
                               priority: Priority | Mapping[str, Priority] | None = None,
                               deadlines: float | Mapping[str, float] | None = None,
                               grants: Iterable[Any] | None = None) -> InstanceId:
        """Start an instance and return its id at once; ``wait(id)`` for the outcome.

        ``priority`` and ``deadlines`` (seconds from now) override the nodes' own,
        for every node or per node name. ``grants`` are capability tokens.
        """
        iid = InstanceId(instance_id) if instance_id else InstanceId.new()
        if iid in self._runs:
            raise LionError(f"instance id {iid} is already in use")
        run = self._new_run(workflow, iid, inputs, priority, deadlines, grants)
        self._runs[iid] = run
        if self.observe.wants(K.INSTANCE_STARTED):
            self.observe.emit(ExecEvent(K.INSTANCE_STARTED, run.started_at, iid, None, 0,
                                        {"workflow": workflow.name, "nodes": len(workflow)}))
        if self.state_manager.durable:
            from .durable import InstanceStore
            run.store = InstanceStore(self.state_manager.storage, self)
            await run.store.begin(run)
        run.start()
        return iid

    async def resume(self, instance_id: str, workflow: WorkflowDefinition | None = None, *,
                     allow_changed: bool = False, grants: Iterable[Any] | None = None
                     ) -> InstanceId:
        """Continue an instance from durable storage after a crash or restart.

        Committed nodes keep their results and are not run again; nodes that
        were queued or running re-run. ``workflow`` is needed when the stored
        definition holds callables; a structurally different one is refused
        unless ``allow_changed=True``.
        """
        from .durable import resume_instance
        return await resume_instance(self, instance_id, workflow, allow_changed=allow_changed,
                                     grants=grants)

    async def resumable(self) -> list[InstanceId]:
        """Ids of instances in durable storage that did not finish."""
        from .durable import list_resumable
        return await list_resumable(self)

    async def run(self, workflow: WorkflowDefinition, **kwargs: Any) -> InstanceResult:
        """``execute_workflow`` then ``wait``: the finished instance's result."""
        return await self.wait(await self.execute_workflow(workflow, **kwargs))

    def _get(self, instance_id: str) -> InstanceRun:
        run = self._runs.get(instance_id)
        if run is None:
            raise InstanceNotFoundError(f"no instance {instance_id!r} on this executor",
                                        instance_id=instance_id)
        return run

    async def wait(self, instance_id: str, *, timeout: float | None = None,
                   check: bool = False) -> InstanceResult:
        """Wait until the instance finishes; ``check=True`` raises its error if it failed."""
        run = self._get(instance_id)
        if timeout is None:
            await asyncio.shield(run.done)
        else:
            async with asyncio.timeout(timeout):
                await asyncio.shield(run.done)
        result = InstanceResult(run)
        return result.check() if check else result

    async def cancel(self, instance_id: str) -> None:
        """Cancel an instance: queued nodes are dropped, running handlers cancelled."""
        await self._get(instance_id).cancel()

    def status(self, instance_id: str) -> InstanceState:
        """The instance's current state."""
        return self._get(instance_id).state

    def snapshot(self, instance_id: str) -> InstanceResult:
        """The instance as it is now (running or finished)."""
        return InstanceResult(self._get(instance_id))

    def instances(self) -> list[InstanceId]:
        """Ids of the instances this executor knows, oldest first."""
        return [InstanceId(i) for i in self._runs]

    def forget(self, instance_id: str) -> None:
        """Drop a finished instance from memory (its history stays)."""
        run = self._get(instance_id)
        if run.state is InstanceState.RUNNING:
            raise LionError(f"instance {instance_id} is still running")
        del self._runs[instance_id]

    # --- used by InstanceRun ----------------------------------------------------------

    def instance_finished(self, run: InstanceRun) -> None:
        """Record and announce the end of an instance."""
        if self.observe.wants(K.INSTANCE_FINISHED):
            self.observe.emit(ExecEvent(
                K.INSTANCE_FINISHED, run.finished_at or 0.0, run.instance_id, None, 0,
                {"state": run.state.value, "workflow": run.definition.name,
                 "error": str(run.error) if run.error else None}))
        if run.store is not None:
            self.spawn(run.store.end(run), then=lambda: _resolve(run))
        else:
            _resolve(run)

    def spawn(self, coro: Coroutine[Any, Any, Any], then: Callable[[], None] | None = None
              ) -> None:
        """Run a background coroutine owned by the executor (retries, commits)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if then is not None:
                then()
        task.add_done_callback(done)

    def run_in_thread(self, handler: NodeHandler, ctx: Any) -> Awaitable[Any]:
        """Run a plain-function handler in the worker thread pool."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.config.max_threads,
                                               thread_name_prefix="lion_nb-handler")
        return _maybe_await(asyncio.get_running_loop().run_in_executor(
            self._threads, handler, ctx))

    def _deadline_failed(self, task: Any, error: Exception) -> None:
        run = self._runs.get(task.instance_id)
        if run is not None and run.state is InstanceState.RUNNING:
            self.spawn(run.deadline_failed(task.payload, error))

    async def publish_from_node(self, run: InstanceRun, node: str, topic: str, payload: Any
                                ) -> None:
        """``ctx.publish``: hand the event to the configured sink, tagged with its source."""
        sink = self.config.event_sink
        if sink is None:
            raise LionError(f"node {node!r} published to {topic!r} but the executor has no "
                            "event sink; call lion_nb.patterns.connect_broker(executor, broker)")
        await sink(topic, payload, {"lion.instance_id": run.instance_id, "lion.node": node,
                                    "lion.workflow": run.definition.name})

    def _audited(self, record: Any) -> None:
        if self.observe.wants(K.CAPABILITY):
            self.observe.emit(ExecEvent(K.CAPABILITY, record.time, record.instance_id,
                                        record.node, 0, record._asdict()))

    def _grant(self, instance_id: str, grants: Iterable[Any] | None) -> GrantSet | None:
        """Verify the tokens and bind them to this instance (None: no grants at all)."""
        if grants is None:
            return None
        authority = self.config.authority
        if authority is None:
            raise SecurityError("grants were given but the executor has no authority; "
                                "use ExecutorConfig(authority=...)")
        return authority.grant(list(grants), instance_id=instance_id)

    def _security_gates(self, instance_id: str, grant_set: GrantSet | None
                        ) -> tuple[Callable[..., None], Callable[..., Any]]:
        """The dispatch check and ``ctx.resource`` for one instance (deny by default)."""
        registry = self.resources

        def no_grants(node: Node, what: str) -> CapabilityDeniedError:
            return CapabilityDeniedError(
                f"node {node.name!r} needs {what} but instance {instance_id} holds no grants",
                capability=what, node=node.name)

        def gate(node: Node, run: InstanceRun) -> None:
            if grant_set is None:
                raise no_grants(node, node.requires[0])
            for req in node.requires:
                grant_set.check(req, node=node.name)

        def resource_gate(node: Node, name: str, action: str, scope: str | None) -> Any:
            declared = [r for r in map(Requirement.parse, node.requires)
                        if r.resource == name and r.action == action
                        and (scope is None or scope_covers(r.scope, scope))]
            if not declared:  # least privilege: only what the node declared
                raise CapabilityDeniedError(
                    f"node {node.name!r} did not declare {name}:{action}"
                    f"{':' + scope if scope else ''} in its requires", capability=name,
                    node=node.name)
            if grant_set is None:
                raise no_grants(node, f"{name}:{action}")
            return resource_for(grant_set, registry, name, action, scope or declared[0].scope,
                                node=node.name)
        return gate, resource_gate


async def _maybe_await(fut: Awaitable[Any]) -> Any:
    out = await fut
    if inspect.isawaitable(out):  # a sync callable that returned a coroutine
        out = await out
    return out


def _resolve(run: InstanceRun) -> None:
    if not run.done.done():
        run.done.set_result(None)


def _per_node(value: Any, node: Node, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, Mapping):
        return value.get(node.name, default)
    return value
