"""Durable instances: each finished node is committed; after a crash, resume the rest.

With a durable storage (``StateMachineManager(SqliteStorage(path))``) the
executor gives every instance an :class:`InstanceStore`:

* ``begin`` takes the instance's owner lease and writes its header and
  definition; a background task renews the lease every third of its TTL;
* ``commit`` writes the records of a node that ended and of the nodes the join
  rule decided with it, in ONE ``put_many`` fenced by the lease, before any
  successor is queued -- so a successor never commits before its inputs did,
  and an owner whose lease was taken over cannot commit at all;
* ``end`` writes the final state and releases the lease in one write.

``resume_instance`` rebuilds an instance from those records in a new process:
committed nodes keep their outputs and never run again, everything else runs
(so a handler runs at least once, its committed result exists exactly once).
A commit that fails (lease lost, disk full, database locked) stops the
instance in this executor -- it ends CANCELLED with the cause as its error --
and leaves it resumable in storage.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import (DefinitionChangedError, InstanceNotFoundError, LeaseError, LionError,
                      SerializationError, StateError)
from ..model.definition import WorkflowDefinition
from ..model.ids import InstanceId
from ..state.machine import INSTANCE_TERMINAL, InstanceState, NodeState
from ..state.storage import Storage
from .durable_layout import (HEADER_PREFIX, StoredInstance, definition_key, header_key,
                             lease_key, new_owner_id, node_prefix, owner_is_dead, read_instance)
from .observe import EventKind as K
from .observe import ExecEvent

if TYPE_CHECKING:
    from .executor import WorkflowExecutor
    from .run import InstanceRun

__all__ = ["InstanceStore", "resume_instance", "list_resumable", "read_instance",
           "StoredInstance", "executor_owner_id"]

_log = logging.getLogger("lion_nb.durable")
_TERMINAL_VALUES = frozenset(s.value for s in INSTANCE_TERMINAL)
_owners: "weakref.WeakKeyDictionary[WorkflowExecutor, str]" = weakref.WeakKeyDictionary()


def executor_owner_id(executor: "WorkflowExecutor") -> str:
    """The lease owner id of ``executor`` (one per executor, stable for its lifetime)."""
    owner = _owners.get(executor)
    if owner is None:
        owner = _owners[executor] = new_owner_id()
    return owner


class InstanceStore:
    """Commits one instance's progress to durable storage under an owner lease."""

    def __init__(self, storage: Storage, executor: "WorkflowExecutor") -> None:
        self.storage = storage
        self.executor = executor
        self.owner = executor_owner_id(executor)
        self.ttl = float(executor.config.lease_ttl)
        self.header: dict[str, Any] = {}
        #: Set when a commit or renewal failed: the instance stopped here, stays resumable.
        self.failure: BaseException | None = None
        self._iid = ""
        self._prefix = ""
        self._fence: tuple[str, str] = ("", "")
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"InstanceStore({self._iid!r} in {self.storage!r}, owner {self.owner!r})"

    def _bind(self, iid: str) -> None:
        self._iid = iid
        self._prefix = node_prefix(iid)
        self._fence = (lease_key(iid), self.owner)

    def _now(self) -> float:
        return self.executor.scheduler.clock.time()

    # --- the three hooks the engine calls ---------------------------------------------

    async def begin(self, run: "InstanceRun") -> None:
        """Take the lease and write the header and definition of a new instance."""
        iid = str(run.instance_id)
        self._bind(iid)
        d = run.definition
        try:
            await self.acquire(takeover=False)
            if await self.storage.get(header_key(iid)) is not None:
                raise StateError(
                    f"instance {iid} already exists in {self.storage!r}; resume it with "
                    f"executor.resume({iid!r}) or start the workflow under a new id",
                    instance_id=iid)
            try:
                document: dict[str, Any] | None = d.to_dict()
            except SerializationError:  # callable conditions: resume needs the workflow
                document = None
            now = self._now()
            self.header = {"instance_id": iid, "workflow": d.name, "workflow_id": str(d.id),
                           "fingerprint": d.fingerprint(), "nodes": len(d.nodes),
                           "inputs": run.inputs, "state": InstanceState.RUNNING.value,
                           "created_at": now, "updated_at": now, "finished_at": None,
                           "error": None, "resumes": 0, "stored_definition": document is not None}
            await self.storage.put_many(
                [(header_key(iid), self.header), (definition_key(iid), {"document": document})],
                fence=self._fence)
        except BaseException:
            self.close()
            # The id must stay usable: the executor registered the run before begin().
            self.executor._runs.pop(iid, None)
            await self._release_quietly()
            raise
        self._emit("begin", InstanceState.RUNNING.value)

    async def commit(self, run: "InstanceRun", indices: list[int]) -> None:
        """Write the records of ``indices`` (and nothing else) in one fenced ``put_many``.

        Never raises: a failed commit stops the instance in this executor, since
        queueing successors of an uncommitted node would break resume's order.
        """
        if self.failure is not None:
            return
        states, results, attempts, errors = run.states, run.results, run.attempts, run.errors
        names = run.definition.nodes
        prefix = self._prefix
        items = []
        for i in indices:
            state = states[i]
            err = errors.get(i)
            items.append((f"{prefix}{i:06d}", {
                "name": names[i].name, "state": state.value,
                "output": results[i] if state is NodeState.SUCCEEDED else None,
                "attempts": attempts[i], "error": None if err is None else str(err)}))
        try:
            await self.storage.put_many(items, fence=self._fence)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            node = names[indices[0]].name
            what = ("lost its lease to another executor" if isinstance(exc, LeaseError)
                    else "could not commit")
            self._fail(run, exc, f"instance {self._iid}: node {node!r} {what} ({exc}); "
                                 f"it stopped here and stays resumable")
            # cancel() awaits nothing, so this ends the instance CANCELLED before the
            # caller decides its state -- even when this node was the last one.
            await run.cancel(reason=str(self.failure))

    async def end(self, run: "InstanceRun") -> None:
        """Write the final state and release the lease (one write); never raises."""
        self.close()
        if self.failure is not None:
            run.error = self.failure
            return
        now = self._now()
        self.header.update(state=run.state.value, updated_at=now, finished_at=now,
                           error=None if run.error is None else str(run.error))
        try:
            await self.storage.put_many([(header_key(self._iid), self.header)],
                                        deletes=[self._fence[0]], fence=self._fence)
        except Exception as exc:  # the nodes are committed; only the summary is missing
            _log.warning("instance %s finished %s but its final state was not stored: %s",
                         self._iid, run.state.value, exc)
            failure = StateError(f"instance {self._iid} finished {run.state.value} but its "
                                 f"final state could not be stored: {exc}",
                                 instance_id=self._iid)
            failure.__cause__ = exc
            run.error = run.error or failure
            return
        self._emit("end", run.state.value)

    # --- lease ------------------------------------------------------------------------

    async def acquire(self, *, takeover: bool) -> None:
        """Take the instance's lease; with ``takeover``, also from an owner that has exited."""
        key, now = self._fence[0], self._now()
        try:
            await self.storage.acquire_lease(key, self.owner, self.ttl, now)
        except LeaseError as exc:
            held = await self.storage.get(key)
            holder = str((held or {}).get("owner", "?"))
            if not (takeover and owner_is_dead(holder)):
                raise LeaseError(
                    f"instance {self._iid} is owned by {holder!r} (lease {key!r} valid for "
                    f"{float((held or {}).get('expires', now)) - now:.1f}s more); wait for it "
                    f"to expire or stop that executor", instance_id=self._iid, owner=holder,
                    key=key) from exc
            # Its process is gone: present a time just past its expiry. The storage
            # still compares atomically, so of two resumers only one wins.
            past = max(now, float(held.get("expires", now)) + 1e-3)  # type: ignore[union-attr]
            await self.storage.acquire_lease(key, self.owner, self.ttl, past)
        loop = asyncio.get_running_loop()
        if self._renewer is None:
            self._renewer = loop.create_task(self._renew(), name=f"lion-lease {self._iid}")

    async def _renew(self) -> None:
        clock = self.executor.scheduler.clock
        while True:
            await clock.sleep(self.ttl / 3)
            run = self.executor._runs.get(self._iid)
            try:
                await self.storage.acquire_lease(self._fence[0], self.owner, self.ttl,
                                                 self._now())
            except LeaseError as exc:
                if run is not None and run.store is self:
                    self._fail(run, exc, f"instance {self._iid}: another executor took its "
                                         f"lease ({exc}); it stopped here")
                    self.executor.spawn(run.cancel(reason=str(self.failure)))
                return
            except Exception as exc:  # transient: fencing keeps a lapsed lease safe
                _log.warning("instance %s: lease renewal failed: %s", self._iid, exc)

    def close(self) -> None:
        """Stop renewing the lease (the lease itself expires or is released by ``end``)."""
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def _release_quietly(self) -> None:
        if not self._iid:
            return
        try:
            await self.storage.release_lease(self._fence[0], self.owner)
        except Exception:  # best effort: the lease expires on its own
            pass

    def _fail(self, run: "InstanceRun", exc: BaseException, message: str) -> None:
        if self.failure is not None:
            return
        cls = LeaseError if isinstance(exc, LeaseError) else StateError
        self.failure = cls(message, instance_id=self._iid, owner=self.owner)
        self.failure.__cause__ = exc
        _log.error("%s", message)

    def _emit(self, what: str, state: str) -> None:
        obs = self.executor.observe
        if obs.wants(K.CHECKPOINT_SAVED):
            obs.emit(ExecEvent(K.CHECKPOINT_SAVED, self._now(), self._iid, None, 0,
                               {"what": what, "state": state, "key": header_key(self._iid),
                                "storage": repr(self.storage)}))


# --- resume ----------------------------------------------------------------------------

def _storage(executor: "WorkflowExecutor") -> Storage:
    if not executor.state_manager.durable:
        raise StateError(
            f"executor storage {executor.state_manager.storage!r} is not durable; create the "
            f"executor with StateMachineManager(SqliteStorage(path)) to resume instances")
    return executor.state_manager.storage


def _definition(iid: str, stored: StoredInstance, workflow: WorkflowDefinition | None,
                allow_changed: bool) -> WorkflowDefinition:
    """The definition to resume with, after checking it against the stored fingerprint."""
    if workflow is None:
        if stored.definition is None:
            raise StateError(
                f"instance {iid} was started with a definition holding Python callable "
                f"conditions, which cannot be stored; pass the same workflow: "
                f"executor.resume({iid!r}, workflow)", instance_id=iid)
        return WorkflowDefinition.from_dict(stored.definition)
    if not isinstance(workflow, WorkflowDefinition):
        raise LionError(f"resume takes a WorkflowDefinition, not {type(workflow).__name__}")
    if workflow.fingerprint() != stored.header.get("fingerprint") and not allow_changed:
        before = set()
        if stored.definition is not None:
            before = {n["name"] for n in stored.definition.get("nodes", ())}
        after = {n.name for n in workflow.nodes}
        detail = ""
        if before:
            detail = (f" (nodes added: {sorted(after - before)[:10]}, removed: "
                      f"{sorted(before - after)[:10]}; or edges, handlers or conditions changed)")
        raise DefinitionChangedError(
            f"instance {iid} was started with a different structure of workflow "
            f"{stored.header.get('workflow')!r}{detail}; pass allow_changed=True to resume "
            f"anyway (committed nodes are matched by name)", instance_id=iid)
    return workflow


async def resume_instance(executor: "WorkflowExecutor", instance_id: str,
                          workflow: WorkflowDefinition | None = None, *,
                          allow_changed: bool = False,
                          grants: Iterable[Any] | None = None) -> InstanceId:
    """Continue ``instance_id`` from storage on ``executor`` (see ``WorkflowExecutor.resume``)."""
    storage = _storage(executor)
    iid = str(instance_id)
    here = executor._runs.get(iid)
    if here is not None and here.state is InstanceState.RUNNING:
        return InstanceId(iid)  # already running on this executor: nothing to do
    header = await storage.get(header_key(iid))
    if header is None:
        known = [k[len(HEADER_PREFIX):] for k in await storage.keys(HEADER_PREFIX)][:10]
        raise InstanceNotFoundError(f"no instance {iid!r} in {storage!r} (stored: {known})",
                                    instance_id=iid)
    if header.get("state") in _TERMINAL_VALUES:
        raise StateError(
            f"instance {iid} already finished ({header['state']}); nothing to resume. Read "
            f"its stored results with read_instance(storage, {iid!r}) or start a new instance "
            f"with execute_workflow", instance_id=iid, state=header["state"])
    store = InstanceStore(storage, executor)
    store._bind(iid)
    await store.acquire(takeover=True)
    try:
        # Read under the lease: no other executor can commit while we rebuild.
        stored = await read_instance(storage, iid)
        if stored is None:  # deleted between the two reads
            raise InstanceNotFoundError(f"instance {iid!r} vanished from {storage!r}",
                                        instance_id=iid)
        definition = _definition(iid, stored, workflow, allow_changed)
        run = executor._new_run(definition, iid, stored.header.get("inputs") or {}, None,
                                None, grants)
        committed = await _adopt(store, stored, definition)
    except BaseException:
        store.close()
        await store._release_quietly()
        raise
    executor._runs[iid] = run
    run.store = store
    obs = executor.observe
    if obs.wants(K.INSTANCE_STARTED):
        obs.emit(ExecEvent(K.INSTANCE_STARTED, run.started_at, iid, None, 0,
                           {"workflow": definition.name, "nodes": len(definition),
                            "resumed": len(committed)}))
    store._emit("resume", InstanceState.RUNNING.value)
    run.restore(committed)
    return InstanceId(iid)


async def _adopt(store: InstanceStore, stored: StoredInstance, definition: WorkflowDefinition
                 ) -> dict[int, tuple[NodeState, Any, int, str | None]]:
    """Committed nodes by index of ``definition``; rewrite the header (and re-key if changed)."""
    iid = stored.instance_id
    prefix = node_prefix(iid)
    by_name = definition.by_name
    committed: dict[int, tuple[NodeState, Any, int, str | None]] = {}
    moved: list[tuple[str, dict[str, Any]]] = []
    stale: list[str] = []
    for old, rec in stored.nodes.items():
        i = by_name.get(rec.get("name"))  # matched by name: indices move if nodes changed
        if i is None:
            stale.append(f"{prefix}{old:06d}")
            continue
        committed[i] = (NodeState(rec["state"]), rec.get("output"), int(rec.get("attempts", 0)),
                        rec.get("error"))
        if i != old:
            stale.append(f"{prefix}{old:06d}")
            moved.append((f"{prefix}{i:06d}", rec))
    header = dict(stored.header)
    header.update(updated_at=store._now(), resumes=int(header.get("resumes", 0)) + 1,
                  owner=store.owner)
    items = [(header_key(iid), header)]
    fingerprint = definition.fingerprint()
    if fingerprint != header.get("fingerprint"):  # allow_changed: later resumes compare anew
        header["fingerprint"] = fingerprint
        try:
            document: dict[str, Any] | None = definition.to_dict()
        except SerializationError:
            document = None
        header["stored_definition"] = document is not None
        items.append((definition_key(iid), {"document": document}))
    moved_keys = {k for k, _ in moved}
    await store.storage.put_many(items + moved,
                                 deletes=[k for k in stale if k not in moved_keys],
                                 fence=store._fence)
    store.header = header
    return committed


async def list_resumable(executor: "WorkflowExecutor") -> list[InstanceId]:
    """Ids of stored instances that did not finish and are not running on ``executor``."""
    storage = _storage(executor)
    out = []
    for key in await storage.keys(HEADER_PREFIX):
        iid = key[len(HEADER_PREFIX):]
        here = executor._runs.get(iid)
        if here is not None and here.state is InstanceState.RUNNING:
            continue
        header = await storage.get(key)
        if header is not None and header.get("state") not in _TERMINAL_VALUES:
            out.append(InstanceId(iid))
    return out
