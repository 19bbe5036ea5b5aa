"""The saga manager: definitions and services, instances and their runs, operator actions."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from itertools import count
from os import urandom
from typing import Any

from ...clock import SYSTEM_CLOCK, Clock
from ...engine import ObserveStream
from ...errors import ConfigError, SagaError, SagaNotFoundError, SagaStateError, SecurityError
from ...security import GrantSet
from ...state import Storage
from ._channel import CommandChannel
from ._config import SagaManagerConfig
from ._definition import SagaDefinition
from ._handler import Handler, run_with_timeout, wrap_handler
from ._instance import COMPENSATE, FORWARD, SagaInstance
from ._key import SagaKey
from ._ledger import SagaLedger, SagaStatistics
from ._log import SagaLog
from ._run import SagaRun
from ._service import SagaService
from ._status import FINAL, RESTING, SagaStatus, StepStatus
from ._topics import topic_segments_problem

__all__ = ["SagaManager"]

_log = logging.getLogger("lion_nb.saga")
# Instance ids: a random per-process prefix and a counter (uuid4 costs more than a step).
_PREFIX = urandom(5).hex()
_IDS = count()
# Members as globals (see _instance): read for every instance started.
_CREATED, _RUNNING = SagaStatus.CREATED, SagaStatus.RUNNING
_RUNNING_TEXT = _RUNNING.value


class SagaManager:
    """Registers saga definitions and services, runs instances, and keeps their log.

    ``broker`` carries commands to services that are not registered in
    process (it may be None if every service is). ``storage`` (a state-layer
    Storage, e.g. ``SqliteStorage(path)``) makes the saga log durable;
    without it sagas live in memory only. ``clock`` drives timeouts and
    backoff; ``observe`` receives SAGA_STATE and SAGA_STEP events. ``key``
    (a SagaKey) signs commands and checks replies of services on the broker;
    pass the same key to every manager and service that must talk across a
    restart or a process boundary (without one: the key in
    ``$LION_NB_SAGA_KEY``, else a random one).
    """

    def __init__(self, broker: Any, config: SagaManagerConfig | None = None, *,
                 storage: Storage | None = None, clock: Clock = SYSTEM_CLOCK,
                 observe: ObserveStream | None = None, authority: Any = None,
                 key: SagaKey | None = None) -> None:
        if key is not None and not isinstance(key, SagaKey):
            raise ConfigError(f"key must be a SagaKey, got {type(key).__name__}", field="key")
        if storage is not None and not isinstance(storage, Storage):
            raise TypeError(f"storage must be a lion_nb.state Storage, got "
                            f"{type(storage).__name__}")
        self._broker = broker
        self._config = config = config or SagaManagerConfig()
        self._clock = clock
        self._observe = observe
        self._ledger = ledger = SagaLedger(config.history_limit, observe)
        self._log = SagaLog(storage, config.name, ledger)
        self._key = key or SagaKey.from_env() or SagaKey.generate()
        self._channel = None if broker is None else CommandChannel(
            broker, config.name, clock, self._key, count=self._ledger.count,
            # The callback holds the ledger, not the manager: no reference cycle through it.
            noted=lambda why: ledger.rejected(clock.time(), why))
        self._definitions: dict[str, SagaDefinition] = {}
        self._instances: dict[str, SagaInstance] = {}
        self._local: dict[str, Handler] = {}
        self._authority = authority  # verifies the grants of start_instance / recover
        self._grants: dict[str, GrantSet] = {}  # instance id -> grants (memory only)
        self._services: list[SagaService] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, list[asyncio.Future[SagaInstance]]] = {}
        self._finished: deque[str] = deque()
        self._closed = False
        self._on_rest = self._run_ended   # bound once, handed to every run

    @property
    def config(self) -> SagaManagerConfig:
        """The configuration this manager runs with."""
        return self._config

    @property
    def definitions(self) -> dict[str, SagaDefinition]:
        """Registered definitions by id (a copy)."""
        return dict(self._definitions)

    @property
    def observe(self) -> ObserveStream | None:
        """The stream SAGA_STATE and SAGA_STEP events go to (None: not observed)."""
        return self._observe

    @property
    def key(self) -> SagaKey:
        """The key this manager shares with its services (give a remote one ``for_service``)."""
        return self._key

    @property
    def storage(self) -> Storage | None:
        """The storage the saga log is kept in (None: memory only)."""
        return self._log.storage

    @property
    def durable(self) -> bool:
        """True if the saga log survives the process."""
        storage = self._log.storage
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
        await self._log.save_definition(definition)
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
        problem = topic_segments_problem(service)
        if problem is not None:
            raise SagaError(f"service name {service!r} {problem}")
        wrapped = wrap_handler(handler, service)
        use_broker = (not self._config.local_dispatch) if via_broker is None else via_broker
        if not use_broker:
            self._local[service] = wrapped
            return None
        if self._broker is None:
            raise SagaError(f"service {service!r} cannot be served via the broker: the saga "
                            "manager has none")
        self._local.pop(service, None)
        svc = await SagaService(self._broker, service, wrapped, key=self._key).start()
        self._services.append(svc)
        return svc

    # -- instances --------------------------------------------------------------------------

    async def create_instance(self, saga_id: str, data: Any = None, *,
                              instance_id: str | None = None) -> SagaInstance:
        """A new CREATED instance of definition ``saga_id`` carrying ``data``.

        An ``instance_id`` that this manager or its durable log already holds
        is refused with SagaStateError.
        """
        self._check_open()
        definition = self._definitions.get(saga_id)
        if definition is None:
            known = ", ".join(repr(k) for k in sorted(self._definitions)) or "none"
            raise SagaNotFoundError(f"unknown saga definition {saga_id!r} (registered: "
                                    f"{known})", saga=saga_id)
        if instance_id is None:
            instance_id = f"{_PREFIX}{next(_IDS):010x}"
        elif not isinstance(instance_id, str) or not instance_id or "/" in instance_id:
            raise SagaError(f"instance_id must be a non-empty string without '/', got "
                            f"{instance_id!r}", saga=saga_id)
        elif instance_id in self._instances:
            raise SagaStateError(f"saga instance {instance_id!r} already exists", saga=saga_id,
                                 state=self._instances[instance_id].status)
        elif await self._log.holds(instance_id):
            raise SagaStateError(f"saga instance {instance_id!r} is already in the saga log "
                                 f"of manager {self._config.name!r}; recover() resumes it",
                                 saga=saga_id, state=None)
        if self._log.enabled:
            try:
                json.dumps(data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise SagaError(f"data of a new {saga_id!r} instance is not JSON-serializable "
                                f"({exc}); the saga log is persisted", saga=saga_id) from None
        if instance_id in self._instances:   # taken while the log was asked
            raise SagaStateError(f"saga instance {instance_id!r} already exists", saga=saga_id,
                                 state=self._instances[instance_id].status)
        inst = SagaInstance(instance_id, definition, data, self._clock.time())
        self._instances[instance_id] = inst
        self._ledger.created(inst)
        if self._log.enabled:
            await self._log.create(inst)
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
        command carries them narrowed to its own step. A refused start
        changes nothing, not even the grants of the instance.
        """
        self._check_open()
        inst = self.get_instance(instance_id)
        if inst.status is not _CREATED or instance_id in self._tasks:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"already {inst.status.value}; only a created instance can "
                                 "be started", saga=inst.saga_id, state=inst.status)
        if grants is not None:
            self._bind_grants(inst, grants)
        # Recorded before any await, so a second start_instance is refused at once.
        self._log.record(inst, {"k": "status", "st": _RUNNING_TEXT,
                                "t": self._clock.time(), "e": None, "fs": None})
        self._spawn(inst)
        if self._log.enabled:   # started means started: durable before we return
            await self._log.flush(inst)
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

    def _spawn(self, inst: SagaInstance, *, resumed: bool = False) -> None:
        run = SagaRun(inst, config=self._config, clock=self._clock, log=self._log,
                      channel=self._channel, handlers=self._local,
                      grants=self._grants.get(inst.id), on_rest=self._on_rest)
        if resumed and self._channel is not None:
            for cid, service, attempt in run.first_commands():
                self._channel.expect(cid, service, attempt)
        self._tasks[inst.id] = asyncio.get_running_loop().create_task(
            run.drive(), name=f"lion-saga {inst.saga_id} {inst.id}")

    def _run_ended(self, inst: SagaInstance, exc: BaseException | None) -> None:
        self._tasks.pop(inst.id, None)
        if exc is not None:  # storage or broker failure: the saga stays where it is
            _log.error("saga instance %s of %r stopped: %s", inst.id, inst.saga_id, exc,
                       exc_info=exc)
            inst.error = f"saga manager error ({type(exc).__name__}: {exc}); the instance " \
                         f"stays {inst.status.value}; fix the cause and call recover()"
        self._rest(inst, exc)

    async def wait(self, instance_id: str, *, timeout: float | None = None) -> SagaInstance:
        """Wait until the instance rests (completed, compensated, or needs attention).

        Raises TimeoutError after ``timeout`` seconds (on the manager's clock),
        and SagaError if the manager could not drive it (e.g. storage failed).
        """
        inst = self.get_instance(instance_id)
        if inst.status in RESTING and instance_id not in self._tasks:
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
        if inst.status in FINAL:
            self._grants.pop(inst.id, None)
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
        loaded = await self._log.load(self._definitions, self._clock.time(),
                                      skip=self._instances)
        for inst in loaded:
            self._instances[inst.id] = inst
            self._ledger.created(inst)
            self._bind_grants(inst, (grants or {}).get(inst.id))
            if inst.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
                self._spawn(inst, resumed=True)
        return loaded

    # -- operator actions -------------------------------------------------------------------

    async def abort(self, instance_id: str, reason: str = "aborted by user") -> SagaInstance:
        """Stop a created or running saga and compensate what it completed.

        The step in flight is awaited (a remote service cannot be recalled),
        then compensations run in reverse. Refused once a pivot succeeded.
        """
        self._check_open()
        inst = self.get_instance(instance_id)
        status = inst.status
        if status is SagaStatus.CREATED:
            await self._log.commit(inst, {"k": "abort", "e": reason, "t": self._clock.time()})
            self._rest(inst, None)
            return inst
        if status is not SagaStatus.RUNNING:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"{status.value}; only a created or running saga can be "
                                 "aborted", saga=inst.saga_id, state=status)
        if inst.pivot_passed:
            pivots = [s for s in inst.definition.pivots
                      if inst.steps[s].status is StepStatus.SUCCEEDED]
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} passed "
                                 f"pivot step {pivots[0]!r}; it can only go forward",
                                 saga=inst.saga_id, state=status)
        if inst.abort_reason is None:
            await self._log.commit(inst, {"k": "abort", "e": reason, "t": self._clock.time()})
        return inst

    def _attention(self, instance_id: str, action: str) -> tuple[SagaInstance, str, str]:
        self._check_open()
        inst = self.get_instance(instance_id)
        if not inst.status.needs_attention or inst.failed_step is None \
                or instance_id in self._tasks:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"{inst.status.value}; {action}() applies to "
                                 "compensation_failed or failed sagas", saga=inst.saga_id,
                                 state=inst.status)
        if inst.status is SagaStatus.COMPENSATION_FAILED:
            return inst, COMPENSATE, inst.failed_step
        return inst, FORWARD, inst.failed_step

    async def retry(self, instance_id: str) -> SagaInstance:
        """Operator: run the failed compensation (or post-pivot step) again, with fresh attempts."""
        inst, phase, step_id = self._attention(instance_id, "retry")
        await self._log.commit(inst, {"k": "retry", "s": step_id, "p": phase,
                                      "t": self._clock.time()})
        self._resume(inst)
        return inst

    async def mark_resolved(self, instance_id: str, note: str = "") -> SagaInstance:
        """Operator: the failed compensation (or step) was done by hand; carry on from there."""
        inst, phase, step_id = self._attention(instance_id, "mark_resolved")
        await self._log.commit(inst, {"k": "resolved", "s": step_id, "p": phase,
                                      "t": self._clock.time(),
                                      "note": note or "resolved by operator"})
        self._resume(inst)
        return inst

    def _resume(self, inst: SagaInstance) -> None:
        if inst.status.resting:    # marking the last one resolved may have finished it
            self._rest(inst, None)
        else:
            self._spawn(inst)

    # -- looking at it -----------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """One row per saga happening (created, status change, step start/outcome, ...)."""
        return self._ledger.history()

    def statistics(self) -> SagaStatistics:
        """Instances per status now and work counts since start (frozen snapshot)."""
        return self._ledger.statistics()

    async def close(self) -> None:
        """Stop driving sagas and serving services. The broker and storage stay open.

        Unfinished sagas stay where they are; with durable storage a new
        manager's ``recover()`` resumes them.
        """
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
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
