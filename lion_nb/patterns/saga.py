"""Sagas: multi-step transactions whose completed steps are compensated when a later one fails.

The seed's example, in Python (``broker`` is an :class:`EventBroker`)::

    saga = (SagaDefinitionBuilder("order-saga", "Order Processing")
            .add_step(SagaStep("create-order", "Create Order", {"action": "create_order"},
                               "order-service").with_compensation({"action": "cancel_order"}))
            .build())
    saga_manager = SagaManager(broker, SagaManagerConfig())
    await saga_manager.register_definition(saga)
    await saga_manager.register_service("order-service", handler)   # or a remote SagaService
    instance = await saga_manager.create_instance("order-saga", {"order_id": "12345"})
    await saga_manager.start_instance(instance.id)
    await saga_manager.wait(instance.id)

Steps reach services over the broker (``saga.command.<service>``, replies on
``saga.reply.<manager name>``) or, for handlers registered in process, by a
direct call. With ``storage=`` the saga log is persisted and ``recover()``
resumes unfinished sagas after a crash. See docs/sagas.md.

Statuses: CREATED -> RUNNING -> COMPLETED, or RUNNING -> COMPENSATING ->
COMPENSATED; a compensation that keeps failing -> COMPENSATION_FAILED, a step
failing after a pivot -> FAILED; both wait for ``retry`` or ``mark_resolved``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..engine.observe import ObserveStream
from ..errors import SagaError, SagaNotFoundError, SagaStateError, SecurityError
from ..state.storage import Storage
from ._events_model import new_event_id
from ._saga_dispatch import Handler, RecentIds, SagaService, Waiter, run_with_timeout, \
    wrap_handler
from ._saga_instance import FORWARD, SagaCommand, SagaInstance, StepState
from ._saga_log import SagaLog
from ._saga_model import (
    COMMAND_TOPIC_PREFIX, REPLY_TOPIC_PREFIX, SagaDefinition, SagaDefinitionBuilder,
    SagaManagerConfig, SagaStatistics, SagaStatus, SagaStep, StepStatus, command_topic,
    reply_topic,
)
from ._saga_operator import OperatorMixin
from ._saga_runner import RunnerMixin

__all__ = [
    "SagaManager", "SagaManagerConfig", "SagaDefinition", "SagaDefinitionBuilder", "SagaStep",
    "SagaInstance", "StepState", "SagaStatus", "StepStatus", "SagaCommand", "SagaService",
    "SagaStatistics", "command_topic", "reply_topic", "COMMAND_TOPIC_PREFIX",
    "REPLY_TOPIC_PREFIX",
]

_HISTORY_FIELDS = ("time", "saga_id", "instance_id", "event", "status", "step_id",
                   "step_name", "phase", "attempt", "error")
_STAT_NAMES = ("steps_succeeded", "step_attempts_failed", "compensations_succeeded",
               "compensation_attempts_failed", "duplicate_replies", "malformed_replies")


class SagaManager(OperatorMixin, RunnerMixin):
    """Registers saga definitions and services, runs instances, and keeps their log.

    ``broker`` carries commands to services that are not registered in
    process (it may be None if every service is). ``storage`` (a state-layer
    Storage, e.g. ``SqliteStorage(path)``) makes the saga log durable;
    without it sagas live in memory only. ``clock`` drives timeouts and
    backoff; ``observe`` receives SAGA_STATE and SAGA_STEP events.
    """

    def __init__(self, broker: Any, config: SagaManagerConfig | None = None, *,
                 storage: Storage | None = None, clock: Clock = SYSTEM_CLOCK,
                 observe: ObserveStream | None = None, authority: Any = None) -> None:
        if storage is not None and not isinstance(storage, Storage):
            raise TypeError(f"storage must be a lion_nb.state Storage, got "
                            f"{type(storage).__name__}")
        self._broker = broker
        self._config = config = config or SagaManagerConfig()
        self._clock = clock
        self._observe = observe
        self._saga_log = SagaLog(storage, config.name)
        self._definitions: dict[str, SagaDefinition] = {}
        self._instances: dict[str, SagaInstance] = {}
        self._local: dict[str, Handler] = {}
        self._authority = authority  # verifies the grants of start_instance / recover
        self._grants: dict[str, Any] = {}  # instance id -> GrantSet (memory only, never logged)
        self._services: list[SagaService] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, list[asyncio.Future[SagaInstance]]] = {}
        self._finished: deque[str] = deque()
        self._history = deque(maxlen=config.history_limit) if config.history_limit else None
        self._counts = {status: 0 for status in SagaStatus}
        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._waiting: dict[str, Waiter] = {}
        self._recent = RecentIds()
        self._orphans: dict[str, Any] = {}
        self._reply_rx = self._reply_ack = None
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def config(self) -> SagaManagerConfig:
        """The configuration this manager runs with."""
        return self._config

    @property
    def definitions(self) -> dict[str, SagaDefinition]:
        """Registered definitions by id (a copy)."""
        return dict(self._definitions)

    @property
    def durable(self) -> bool:
        """True if the saga log survives the process."""
        storage = self._saga_log.storage
        return storage is not None and storage.durable

    def _check_open(self) -> None:
        if self._closed:
            raise SagaError(f"saga manager {self._config.name!r} is closed")

    # -- setting up ----------------------------------------------------------------------

    async def register_definition(self, definition: SagaDefinition) -> None:
        """Make ``definition`` available to ``create_instance`` (re-registering replaces it).

        Running instances keep the version they were created with.
        """
        self._check_open()
        if not isinstance(definition, SagaDefinition):
            raise TypeError(f"register_definition takes a SagaDefinition (from "
                            f"SagaDefinitionBuilder.build()), got {type(definition).__name__}")
        await self._saga_log.save_definition(definition)
        self._definitions[definition.id] = definition

    async def register_service(self, service: str, handler: Any, *,
                               via_broker: bool | None = None) -> SagaService | None:
        """Serve ``service`` with ``handler(command) -> result`` in this process.

        A handler raising is a failed attempt. By default (``local_dispatch``)
        the manager calls it directly; ``via_broker=True`` serves it over the
        command topic instead, like a remote service (the SagaService is
        returned). Plain functions run in a worker thread.
        """
        self._check_open()
        if not isinstance(service, str) or not service:
            raise SagaError(f"service name must be a non-empty string, got {service!r}")
        command_topic(service)
        wrapped = wrap_handler(handler, service)
        use_broker = (not self._config.local_dispatch) if via_broker is None else via_broker
        if not use_broker:
            self._local[service] = wrapped
            return None
        if self._broker is None:
            raise SagaError(f"service {service!r} cannot be served via the broker: the saga "
                            "manager has none")
        self._local.pop(service, None)
        svc = await SagaService(self._broker, service, wrapped).start()
        self._services.append(svc)
        return svc

    # -- instances --------------------------------------------------------------------------

    async def create_instance(self, saga_id: str, data: Any = None, *,
                              instance_id: str | None = None) -> SagaInstance:
        """A new CREATED instance of definition ``saga_id`` carrying ``data``."""
        self._check_open()
        definition = self._definitions.get(saga_id)
        if definition is None:
            known = ", ".join(repr(k) for k in sorted(self._definitions)) or "none"
            raise SagaNotFoundError(f"unknown saga definition {saga_id!r} (registered: "
                                    f"{known})", saga=saga_id)
        if instance_id is None:
            instance_id = new_event_id()
        elif not isinstance(instance_id, str) or not instance_id or "/" in instance_id:
            raise SagaError(f"instance_id must be a non-empty string without '/', got "
                            f"{instance_id!r}", saga=saga_id)
        if instance_id in self._instances:
            raise SagaStateError(f"saga instance {instance_id!r} already exists", saga=saga_id,
                                 state=self._instances[instance_id].status)
        if self._saga_log.enabled:
            try:
                json.dumps(data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise SagaError(f"data of a new {saga_id!r} instance is not JSON-serializable "
                                f"({exc}); the saga log is persisted", saga=saga_id) from None
        inst = SagaInstance(instance_id, definition, data, self._clock.time())
        self._instances[instance_id] = inst
        self._counts[SagaStatus.CREATED] += 1
        if self._history is not None:
            self._history.append((inst.created_at, saga_id, instance_id, "created", "created",
                                  None, None, FORWARD, None, None))
        await self._saga_log.create(inst)
        return inst

    def get_instance(self, instance_id: str) -> SagaInstance:
        """The instance ``instance_id``; SagaNotFoundError if unknown."""
        try:
            return self._instances[instance_id]
        except (KeyError, TypeError):
            raise SagaNotFoundError(f"unknown saga instance {instance_id!r}",
                                    saga=None) from None

    def instances(self, status: SagaStatus | str | None = None) -> list[SagaInstance]:
        """Instances held in memory, optionally only those in ``status``."""
        if status is None:
            return list(self._instances.values())
        wanted = SagaStatus(status)
        return [i for i in self._instances.values() if i.status is wanted]

    async def start_instance(self, instance_id: str, *,
                             grants: Any = None) -> SagaInstance:
        """Start a CREATED instance in the background; ``wait()`` for its end.

        ``grants`` (capability tokens) cover the steps' ``requires``; each
        command carries them narrowed to its own step.
        """
        self._check_open()
        inst = self.get_instance(instance_id)
        self._bind_grants(inst, grants)
        if inst.status is not SagaStatus.CREATED or instance_id in self._tasks:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"already {inst.status.value}; only a created instance can "
                                 "be started", saga=inst.saga_id, state=inst.status)
        # Recorded before any await, so a second start_instance is refused at once.
        self._record(inst, {"k": "status", "st": SagaStatus.RUNNING.value,
                            "t": self._clock.time(), "e": None, "fs": None})
        self._spawn(inst)
        if self._saga_log.enabled:   # started means started: durable before we return
            await self._flush(inst)
        return inst

    async def run(self, saga_id: str, data: Any = None, *, timeout: float | None = None,
                  grants: Any = None) -> SagaInstance:
        """Create, start and wait for one instance; returns it at rest."""
        inst = await self.create_instance(saga_id, data)
        await self.start_instance(inst.id, grants=grants)
        return await self.wait(inst.id, timeout=timeout)

    def _bind_grants(self, inst: SagaInstance, grants: Any) -> None:
        """Verify tokens with the authority and bind them to this instance."""
        if grants is None:
            return
        if self._authority is None:
            raise SecurityError(f"grants were given for saga instance {inst.id!r} but the "
                                "manager has no authority: SagaManager(..., authority=...)")
        self._grants[inst.id] = self._authority.grant(list(grants), instance_id=inst.id)

    def _spawn(self, inst: SagaInstance) -> None:
        self._tasks[inst.id] = asyncio.get_running_loop().create_task(
            self._drive(inst), name=f"lion-saga {inst.saga_id} {inst.id}")

    async def wait(self, instance_id: str, *, timeout: float | None = None) -> SagaInstance:
        """Wait until the instance rests (completed, compensated, or needs attention).

        Raises TimeoutError after ``timeout`` seconds (on the manager's clock),
        and SagaError if the manager could not drive it (e.g. storage failed).
        """
        inst = self.get_instance(instance_id)
        if inst.status.resting and instance_id not in self._tasks:
            return inst
        fut: asyncio.Future[SagaInstance] = asyncio.get_running_loop().create_future()
        self._wake.setdefault(instance_id, []).append(fut)
        try:
            if timeout is None:
                return await fut
            finished, value = await run_with_timeout(self._clock, asyncio.shield(fut), timeout)
        finally:
            waiters = self._wake.get(instance_id)
            if waiters and fut in waiters:
                waiters.remove(fut)
        if not finished:
            raise TimeoutError(f"saga instance {instance_id!r} of {inst.saga_id!r} is still "
                               f"{inst.status.value} after {timeout:g}s")
        return value

    def _rest(self, inst: SagaInstance, error: BaseException | None) -> None:
        for fut in self._wake.pop(inst.id, ()):
            if fut.done():
                continue
            if error is None:
                fut.set_result(inst)
            else:
                fut.set_exception(SagaError(inst.error or str(error), saga=inst.saga_id))
        if inst.status.final and self._config.keep_finished is not None:
            self._finished.append(inst.id)
            while len(self._finished) > self._config.keep_finished:
                old = self._instances.get(self._finished.popleft())
                if old is not None and old.status.final:
                    del self._instances[old.id]

    # -- durability -------------------------------------------------------------------------

    async def recover(self, *, grants: Any = None) -> list[SagaInstance]:
        """Load unfinished instances from the saga log and resume them; returns them.

        Register definitions and services first. Running sagas continue
        forward, compensating ones continue backward; steps and compensations
        whose outcome was committed are not run again. Instances that need
        attention are loaded and wait for ``retry``/``mark_resolved``. Tokens
        are never written to the log: pass ``grants={instance_id: [tokens]}``
        for sagas whose steps require capabilities.
        """
        self._check_open()
        loaded = await self._saga_log.load(self._definitions, self._clock.time(),
                                           skip=self._instances)
        for inst in loaded:
            self._instances[inst.id] = inst
            self._counts[inst.status] += 1
            self._bind_grants(inst, (grants or {}).get(inst.id))
            if inst.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
                self._spawn(inst)
        return loaded

    # -- looking at it -----------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """One row per saga happening (created, status change, step start/outcome, ...)."""
        if self._history is None:
            return []
        return [dict(zip(_HISTORY_FIELDS, row)) for row in self._history]

    def statistics(self) -> SagaStatistics:
        """Instances per status now and work counts since start (frozen snapshot)."""
        c = self._counts
        return SagaStatistics(
            created=c[SagaStatus.CREATED], running=c[SagaStatus.RUNNING],
            compensating=c[SagaStatus.COMPENSATING], completed=c[SagaStatus.COMPLETED],
            compensated=c[SagaStatus.COMPENSATED],
            compensation_failed=c[SagaStatus.COMPENSATION_FAILED],
            failed=c[SagaStatus.FAILED], **self._stats)

    async def close(self) -> None:
        """Stop driving sagas and serving services. The broker and storage stay open.

        Unfinished sagas stay where they are; with durable storage a new
        manager's ``recover()`` resumes them.
        """
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        if self._reply_task is not None:
            tasks.append(self._reply_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for svc in self._services:
            await svc.stop()
        for futs in self._wake.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(SagaError(f"saga manager {self._config.name!r} closed"))
        self._wake.clear()

    async def __aenter__(self) -> "SagaManager":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<SagaManager {self._config.name!r} definitions={len(self._definitions)} "
                f"running={s.running} completed={s.completed} compensated={s.compensated} "
                f"needs_attention={s.needs_attention}>")
