"""WorkflowExecutor: registers handlers, starts instances, waits, cancels, resumes."""

from __future__ import annotations

import asyncio
import inspect
import logging
import operator
import secrets
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Awaitable, Callable, Coroutine, Iterable, Mapping

from ..errors import (CapabilityDeniedError, ExecutorStoppedError, HandlerNotFoundError,
                      InstanceNotFoundError, LionError, RerunError, SecurityError, StateError)
from ..model import InstanceId, Node, Priority, WorkflowDefinition
from ..security import GrantSet, Requirement, ResourceRegistry, scope_covers
from ..state import InstanceState, StateMachineManager
from ._claim import Claimer, hand_back, submit_instance
from ._cache import Cache, as_cache
from ._cache_session import CacheSession, RerunPlan
from ._env import RunEnv
from ._executor_config import ExecutorConfig, seconds
from ._prune import prune_finished
from ._remote import RemoteRun, wait_stored
from ._result import InstanceResult
from ._run import InstanceRun, RunProgress
from ._store import InstanceStore
from ._durable import new_owner_id
from ._history import HistoryRecorder
from ._observe import EventKind as K
from ._observe import ExecEvent
from ._scheduler import WorkflowScheduler

_log = logging.getLogger("lion_nb.engine")

__all__ = ["ExecutorConfig", "NodeHandler", "Resumable", "WorkflowExecutor"]

_HANDLER_KEY = operator.attrgetter("handler")
_PRIORITY_OF, _DEADLINE_OF = operator.attrgetter("priority"), operator.attrgetter("deadline")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)

NodeHandler = Callable[[Any], Any]
"""A handler: ``async def h(ctx)`` or ``def h(ctx)``, returning a value or a NodeResult."""


class Resumable(list[InstanceId]):
    """What ``executor.resumable()`` returns: the healthy ids, and ``damaged`` ones."""

    def __init__(self, ids: Iterable[InstanceId], damaged: Mapping[str, BaseException]) -> None:
        super().__init__(ids)
        #: Instance id -> the error reading its header (CheckpointCorruptError, ...).
        self.damaged = dict(damaged)


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
        self._finished: OrderedDict[str, float] = OrderedDict()  # id -> when, oldest first
        self._pruner: asyncio.Task[None] | None = None
        self._started = False
        self._threads: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._event_sink = self.config.event_sink
        self._owner = new_owner_id()  # this executor's name on the leases it holds
        self._claimer: Claimer | None = None
        self._remote: dict[str, RemoteRun] = {}  # instances followed in durable storage
        self._env = RunEnv(scheduler=self.scheduler, observe=self.observe,
                           clock=self.scheduler.clock, config=self.config, runner=self.runner,
                           spawn=self.spawn, run_in_thread=self.run_in_thread,
                           publish=self._publish, on_finished=self._instance_finished)
        self.scheduler.on_deadline_failed = self._deadline_failed
        self.resources = ResourceRegistry()
        #: The cache of ``ExecutorConfig(cache=...)`` (None: results are not reused).
        self.cache: Cache | None = as_cache(self.config.cache)
        if self.config.authority is not None:
            # Allowed checks on the dispatch path are forwarded by the gate itself, only
            # when the observe stream wants them: a passing check then calls no listener.
            self.config.authority.add_listener(self._audited, allowed_checks=False)

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

    async def start(self, *, claim: bool = False, max_claimed: int = 32,
                    poll: float = 0.1) -> None:
        """Accept instances (idempotent). A stopped executor stays stopped: make a new one.

        ``claim=True`` also runs instances that others ``submit`` to the durable
        storage, and takes over those whose owner's lease expired, keeping at most
        ``max_claimed`` instances running here; ``poll`` is the idle wait in seconds.
        """
        if self.scheduler.closed:
            raise ExecutorStoppedError("this executor was stopped (its scheduler is closed); "
                                       "create a new WorkflowExecutor")
        self._started = True
        if claim and self._claimer is None:
            self._claimer = Claimer(
                self._durable_storage(), owner=self._owner, ttl=self.config.lease_ttl,
                resume=self.resume, limit=max_claimed, poll=poll,
                busy=lambda: sum(r.state is InstanceState.RUNNING for r in self._runs.values()))
            self._claimer.start()
        if (self.config.prune_older_than is not None and self._pruner is None
                and self.state_manager.durable):
            self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    async def _prune_forever(self) -> None:
        age = seconds(self.config.prune_older_than or 0)
        while True:
            try:
                await self.prune(older_than=age)
            except Exception as exc:  # a failed round (locked database...) retries next time
                _log.warning("automatic prune failed: %s", exc)
            await asyncio.sleep(self.config.prune_every)

    async def stop(self) -> None:
        """Cancel running instances, stop the scheduler's workers and the thread pool."""
        if self._claimer is not None:
            await self._claimer.stop()
            self._claimer = None
        for remote in list(self._remote.values()):  # a poll ending meanwhile drops one
            await remote.stop()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        finishing = []
        for run in list(self._runs.values()):
            if run.finishing:  # its nodes are committed; let its final state be stored
                finishing.append(asyncio.shield(run.done))
            elif run.state is InstanceState.RUNNING:
                if run.store is not None:  # durable: stays resumable, its lease released
                    await hand_back(run.store)  # a submitted one: claimers continue it
                    await run.store.detach()
                await run.cancel()
        if finishing:
            await asyncio.wait(finishing)
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
        entries: list[Any] = list(map(self._handlers.get, map(_HANDLER_KEY, definition.nodes)))
        if None in entries:
            node = definition.nodes[entries.index(None)]
            raise HandlerNotFoundError(
                f"node {node.name!r} of {definition.name!r} has no registered handler "
                f"{node.handler!r}; registered: {sorted(self._handlers)[:20]}",
                node=node.name, handler=node.handler)
        return list(map(_FIRST, entries)), list(map(_SECOND, entries))

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
        now = self.scheduler.clock.monotonic()
        prios: list[int]
        dls: list[float | None]
        if priority is None:  # the common case, without a call per node
            prios = list(map(_PRIORITY_OF, nodes))
        else:
            prios = [int(_per_node(priority, n, n.priority)) for n in nodes]
        if deadlines is None:
            if any(map(_DEADLINE_OF, nodes)):  # a deadline is > 0 (checked by Node)
                dls = [None if n.deadline is None else now + n.deadline for n in nodes]
            else:
                dls = [None] * len(nodes)
        else:
            dls = []
            for n in nodes:
                rel = _per_node(deadlines, n, n.deadline)
                dls.append(None if rel is None else now + rel)
        grant_set = self._grant(instance_id, grants, definition)
        gate, resource_gate = self._security_gates(instance_id, grant_set)
        return InstanceRun(self._env, definition, instance_id, dict(inputs or {}), handlers,
                           flags, prios, dls, gate, resource_gate, grant_set)

    def _new_store(self, instance_id: str) -> InstanceStore:
        def lost(error: BaseException) -> None:
            run = self._runs.get(instance_id)
            if run is not None and run.store is store and not run.cancel_requested:
                self.spawn(run.cancel(reason=str(error)))
        sched = self.scheduler
        store = InstanceStore(self._durable_storage(), instance_id, owner=self._owner,
                              ttl=self.config.lease_ttl, clock=self.scheduler.clock,
                              observe=self.observe, on_lost=lost,
                              authority=self.config.authority,
                              in_flight=lambda: sched.running + sched.queued)
        return store

    def _durable_storage(self) -> Any:
        if not self.state_manager.durable:
            raise StateError(
                f"executor storage {self.state_manager.storage!r} is not durable; create the "
                f"executor with StateMachineManager(SqliteStorage(path)) to resume instances")
        return self.state_manager.storage

    async def execute_workflow(self, workflow: WorkflowDefinition, *,
                               inputs: Mapping[str, Any] | None = None,
                               instance_id: str | None = None,
                               priority: Priority | Mapping[str, Priority] | None = None,
                               deadlines: float | Mapping[str, float] | None = None,
                               grants: Iterable[Any] | None = None,
                               cache: Any = True,
                               rerun: Iterable[str] | str = (),
                               start_from: Iterable[str] | str = (),
                               previous: Any = None) -> InstanceId:
        """Start an instance and return its id at once; ``wait(id)`` for the outcome.

        ``priority`` and ``deadlines`` (seconds from now) override the nodes' own,
        for every node or per node name. ``grants`` are capability tokens.
        ``cache``: the executor's cache (default), another ``Cache``, or None.
        ``rerun``: nodes to run whatever the cache says, with everything
        downstream of them. ``start_from``: run these nodes and what follows;
        every other node takes its result from ``previous`` (an InstanceResult;
        default: this executor's last finished run of the same workflow).
        """
        iid = InstanceId(instance_id or InstanceId.new())
        if iid in self._runs:
            raise LionError(f"instance id {iid} is already in use")
        cache_obj = self.cache if cache is True else as_cache(cache)
        plan = RerunPlan(workflow, rerun, start_from) if rerun or start_from else None
        earlier = self._previous(workflow, previous, start_from) if start_from else None
        if cache_obj is not None:
            await cache_obj.load(workflow.name)
        run = self._new_run(workflow, iid, inputs, priority, deadlines, grants)
        if cache_obj is not None or plan is not None:
            run.cache = CacheSession(workflow, run.handlers, run.inputs, cache_obj,
                                     run.states.codes, run.clock.time, plan, earlier)
        self._runs[iid] = run
        if self.observe.wants(K.INSTANCE_STARTED):
            self.observe.emit(ExecEvent(K.INSTANCE_STARTED, run.started_at, iid, None, 0,
                                        {"workflow": workflow.name, "nodes": len(workflow)}))
        if self.state_manager.durable:
            run.store = self._new_store(iid)
            try:
                await run.store.begin(workflow, run.inputs)
            except BaseException:
                del self._runs[iid]  # the id stays usable
                raise
        run.start()
        return iid

    async def submit(self, workflow: WorkflowDefinition, *,
                     inputs: Mapping[str, Any] | None = None,
                     instance_id: str | None = None) -> InstanceId:
        """Queue an instance in durable storage for an executor started with ``claim=True``.

        Nothing runs here; ``wait(id)`` follows it wherever it runs. The workflow
        must be serializable (declarative conditions), since the claimer rebuilds it.
        """
        if not isinstance(workflow, WorkflowDefinition):
            raise LionError(f"submit takes a WorkflowDefinition, not {type(workflow).__name__}")
        iid = InstanceId(instance_id or InstanceId.new())
        await submit_instance(self._durable_storage(), workflow, iid, inputs or {},
                              self.scheduler.clock.time())
        return iid

    def _previous(self, workflow: WorkflowDefinition, previous: Any,
                  start_from: Iterable[str] | str) -> Mapping[str, Any]:
        """The results ``start_from`` takes the other nodes' results from."""
        if previous is None:
            for run in reversed(list(self._runs.values())):
                if run.definition.name == workflow.name and run.done.done():
                    previous = run.snapshot()
                    break
        first = start_from if isinstance(start_from, str) else next(iter(start_from), None)
        if previous is None:
            raise RerunError(f"start_from={first!r}: this executor has no finished run of "
                             f"{workflow.name!r} to take the other results from; run it "
                             "once, or pass previous=", node=first)
        results = getattr(previous, "results", previous)
        if not isinstance(results, Mapping):
            raise RerunError(f"previous is an InstanceResult or a mapping of results, not "
                             f"{type(previous).__name__}", node=first)
        return results

    async def resume(self, instance_id: str, workflow: WorkflowDefinition | None = None, *,
                     allow_changed: bool = False, grants: Iterable[Any] | None = None
                     ) -> InstanceId:
        """Continue an instance from durable storage after a crash or restart.

        Committed nodes keep their results and are not run again; nodes that
        were queued or running re-run. ``workflow`` is needed when the stored
        definition holds callables; a structurally different one is refused
        unless ``allow_changed=True``.
        """
        iid = str(instance_id)
        store = self._new_store(iid)
        here = self._runs.get(iid)
        if here is not None and here.state is InstanceState.RUNNING:
            return InstanceId(iid)  # already running on this executor: nothing to do
        stored = await store.adopt()
        try:
            definition = store.definition_for(stored, workflow, allow_changed)
            run = self._new_run(definition, iid, stored.header.get("inputs") or {}, None,
                                None, grants)
            committed, started = await store.rebind(stored, definition)
        except BaseException:
            await store.release()
            raise
        self._runs[iid] = run
        run.store = store
        if self.observe.wants(K.INSTANCE_STARTED):
            self.observe.emit(ExecEvent(K.INSTANCE_STARTED, run.started_at, iid, None, 0,
                                        {"workflow": definition.name, "nodes": len(definition),
                                         "resumed": len(committed)}))
        store.announce("resume", InstanceState.RUNNING.value)
        run.restore(committed, started)
        return InstanceId(iid)

    async def resumable(self) -> "Resumable":
        """Ids of instances in durable storage that did not finish and do not run here.

        A damaged instance header does not hide the others: the list holds the
        healthy ones, and its ``damaged`` attribute maps each damaged id to its error.
        """
        ids, damaged = await InstanceStore.unfinished(self._durable_storage())
        return Resumable((InstanceId(i) for i in ids if i not in self._runs
                          or self._runs[i].state is not InstanceState.RUNNING), damaged)

    async def run(self, workflow: WorkflowDefinition, **kwargs: Any) -> InstanceResult:
        """``execute_workflow`` then ``wait``: the finished instance's result."""
        return await self.wait(await self.execute_workflow(workflow, **kwargs))

    def _get(self, instance_id: str) -> InstanceRun:
        run = self._runs.get(instance_id)
        if run is None:
            hint = ("; to watch one that runs elsewhere: await executor.follow(instance_id)"
                    if self.state_manager.durable else "")
            raise InstanceNotFoundError(f"no instance {instance_id!r} on this executor{hint}",
                                        instance_id=instance_id)
        return run

    async def wait(self, instance_id: str, *, timeout: float | None = None,
                   check: bool = False) -> InstanceResult:
        """Wait until the instance finishes; ``check=True`` raises its error if it failed.

        An instance that runs elsewhere (``submit``) is followed in durable storage.
        """
        remote = self._remote.get(instance_id)
        if remote is not None and instance_id not in self._runs:
            result = await remote.wait(timeout)
            return result.check() if check else result
        if instance_id not in self._runs and self.state_manager.durable:
            result = await wait_stored(self.state_manager.storage, instance_id,
                                       timeout=timeout)
            return result.check() if check else result
        run = self._get(instance_id)
        if timeout is None:
            await asyncio.shield(run.done)
        else:
            async with asyncio.timeout(timeout):
                await asyncio.shield(run.done)
        session = run.cache
        if session is not None and session.cache is not None:
            await session.cache.flush_quietly()  # its entries are durable when wait returns
        result = run.snapshot()
        return result.check() if check else result

    async def cancel(self, instance_id: str) -> None:
        """Cancel an instance: queued nodes are dropped, running handlers cancelled."""
        await self._get(instance_id).cancel()

    def status(self, instance_id: str) -> InstanceState:
        """The instance's current state."""
        return self._get(instance_id).state

    def snapshot(self, instance_id: str) -> InstanceResult:
        """The instance as it is now (running or finished; followed: as last polled)."""
        remote = self._remote.get(instance_id)
        if remote is not None and remote.result is not None and instance_id not in self._runs:
            return remote.result
        return self._get(instance_id).snapshot()

    def progress(self, instance_id: str) -> RunProgress | None:
        """A cheap read of an instance that runs (or ran) here; None if it runs elsewhere."""
        run = self._runs.get(instance_id)
        return None if run is None else run.progress()

    async def follow(self, instance_id: str, *, interval: float = 0.5) -> InstanceResult:
        """Follow an instance that runs elsewhere (``submit``, another process).

        Its committed records are read every ``interval`` seconds and what
        changed is emitted on ``observe`` as for a local run, so ``history``,
        ``RunView(executor, instance_id)``, ``snapshot`` and ``wait`` show it.
        Returns the instance as read now; InstanceNotFoundError if storage has none.
        """
        iid = str(instance_id)
        if not self.state_manager.durable:
            raise InstanceNotFoundError(f"follow({iid!r}) reads durable storage; this "
                                        f"executor's storage is in memory", instance_id=iid)
        if not interval > 0:
            raise LionError(f"follow(interval=...) must be > 0 seconds, not {interval!r}")
        if iid in self._runs:  # it runs here: its events are already on observe
            return self.snapshot(iid)
        old = self._remote.get(iid)
        if old is not None and old.result is not None:
            return old.result
        remote = RemoteRun(self.state_manager.storage, iid, self.observe, interval=interval,
                           on_finished=self._remote_finished)
        self._remote[iid] = remote  # before its first events: a view asks for its snapshot
        try:
            return await remote.first_read()
        except BaseException:
            del self._remote[iid]
            raise

    def instances(self) -> list[InstanceId]:
        """Ids of the instances this executor knows: those it runs (or ran), oldest first,
        then those it follows (``follow``), in the order it began following them."""
        self._retain()
        remote = [InstanceId(i) for i in self._remote if i not in self._runs]
        return [InstanceId(i) for i in self._runs] + remote

    async def prune(self, older_than: float | timedelta = 0.0) -> int:
        """Delete the durable records of instances that finished ``older_than`` ago or more.

        Headers, definitions, node and attempt records and leases go, up to 64
        whole instances per atomic write; running, resumable, queued and damaged
        instances are never touched. Returns how many instances were deleted.
        """
        age = seconds(older_than)
        if age < 0:
            raise LionError(f"prune(older_than=...) must be >= 0 seconds, not {older_than!r}")
        live = {i for i, r in self._runs.items() if r.state is InstanceState.RUNNING}
        # A non-durable executor stores no instances: nothing to prune, not an error.
        return await prune_finished(self.state_manager.storage,
                                    self.scheduler.clock.time() - age, live)

    def forget(self, instance_id: str) -> None:
        """Drop a finished instance from memory (its history stays)."""
        remote = self._remote.get(instance_id)
        if remote is not None and instance_id not in self._runs:  # a followed one
            if not remote.done.is_set():
                raise LionError(f"instance {instance_id} is still running (followed)")
            del self._remote[instance_id]
            self._finished.pop(instance_id, None)
            return
        run = self._get(instance_id)
        if run.state is InstanceState.RUNNING:
            raise LionError(f"instance {instance_id} is still running")
        del self._runs[instance_id]
        self._finished.pop(instance_id, None)

    def _retain(self) -> None:
        """Drop the finished instances ``retain_finished`` no longer keeps."""
        keep = self.config.retain_finished
        if keep is None:
            return
        finished = self._finished
        if isinstance(keep, int):
            doomed = max(0, len(finished) - keep)
        else:
            cutoff = self.scheduler.clock.time() - keep.total_seconds()
            doomed = 0
            for when in finished.values():  # oldest first: stop at the first one kept
                if when > cutoff:
                    break
                doomed += 1
        for _ in range(doomed):
            iid, _when = finished.popitem(last=False)
            run = self._runs.get(iid)
            if run is not None and run.state is not InstanceState.RUNNING:
                del self._runs[iid]
            remote = self._remote.get(iid)
            if remote is not None and remote.done.is_set():
                del self._remote[iid]
            self.history.forget(iid)

    def set_event_sink(self, sink: Callable[..., Awaitable[Any]] | None) -> None:
        """Route ``ctx.publish`` to ``sink(topic, payload, headers)`` (None: no sink)."""
        self._event_sink = sink

    # --- services handed to runs (RunEnv) ------------------------------------------------

    def _note_finished(self, instance_id: str) -> None:
        """Start ``retain_finished``'s count for an instance that just ended."""
        if self.config.retain_finished is not None:
            self._finished[instance_id] = self.scheduler.clock.time()
            self._finished.move_to_end(instance_id)

    def _remote_finished(self, remote: RemoteRun) -> None:
        """A followed instance ended (or vanished): retained like one that ran here."""
        self._note_finished(remote.instance_id)
        self._retain()

    def _instance_finished(self, run: InstanceRun) -> None:
        self._note_finished(run.instance_id)
        session = run.cache
        if session is not None and session.cache is not None and session.cache.durable_pending:
            self.spawn(session.cache.flush_quietly())  # also when nobody waits for the run
        if self.observe.wants(K.INSTANCE_FINISHED):
            self.observe.emit(ExecEvent(
                K.INSTANCE_FINISHED, run.finished_at or 0.0, run.instance_id, None, 0,
                {"state": run.state.value, "workflow": run.definition.name,
                 "error": str(run.error) if run.error else None}))
        self._retain()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background coroutine owned by the executor (retries, final writes)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    async def _publish(self, topic: str, payload: Any, headers: dict[str, str]) -> None:
        sink = self._event_sink
        if sink is None:
            raise LionError(f"node {headers.get('lion.node')!r} published to {topic!r} but the "
                            "executor has no event sink; call "
                            "lion_nb.patterns.connect_broker(executor, broker)")
        await sink(topic, payload, headers)

    def _audited(self, record: Any) -> None:
        if self.observe.wants(K.CAPABILITY):
            self.observe.emit(ExecEvent(K.CAPABILITY, record.time, record.instance_id,
                                        record.node, 0, record._asdict()))

    def _grant(self, instance_id: str, grants: Iterable[Any] | None,
               definition: WorkflowDefinition) -> GrantSet | None:
        """Verify the tokens and bind them to this run of this instance (None: no grants).

        The binding names a nonce made here plus the definition's fingerprint, so a
        later workflow started under the same instance id cannot reuse the tokens.
        """
        if grants is None:
            return None
        authority = self.config.authority
        if authority is None:
            raise SecurityError("grants were given but the executor has no authority; "
                                "use ExecutorConfig(authority=...)")
        run_id = f"{secrets.token_urlsafe(12)}.{definition.fingerprint()[:16]}"
        return authority.grant(list(grants), instance_id=instance_id, run_id=run_id)

    def _security_gates(self, instance_id: str, grant_set: GrantSet | None
                        ) -> tuple[Callable[..., None], Callable[..., Any]]:
        """The dispatch check and ``ctx.resource`` for one instance (deny by default)."""
        registry = self.resources
        wants, capability = self.observe.wants, K.CAPABILITY

        def no_grants(node: str, what: str) -> CapabilityDeniedError:
            return CapabilityDeniedError(
                f"node {node!r} needs {what} but instance {instance_id} holds no grants",
                capability=what, node=node)

        gate: Callable[..., None]
        if grant_set is None:
            def gate(requires: tuple[str, ...], node: str, now: float | None = None) -> None:
                raise no_grants(node, requires[0])
        else:
            # Allowed dispatch checks reach the observe stream if it wanted them when the
            # run started: asking at every dispatch would cost more than the check itself.
            # The run passes its dispatch stamp: one clock read per node, not two.
            gate = grant_set.gate(forward=self._audited if wants(capability) else None,
                                  clock=self.scheduler.clock)

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
                raise no_grants(node.name, f"{name}:{action}")
            scope = scope or declared[0].scope
            grant_set.check_all((f"{name}:{action}:{scope}",), node=node.name,
                                forward=self._audited if wants(capability) else None)
            return registry.get(name, scope)  # checked first: see resource_for
        return gate, resource_gate


async def _maybe_await(fut: Awaitable[Any]) -> Any:
    out = await fut
    if inspect.isawaitable(out):  # a sync callable that returned a coroutine
        out = await out
    return out


def _per_node(value: Any, node: Node, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, Mapping):
        return value.get(node.name, default)
    return value
