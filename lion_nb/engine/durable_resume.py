"""Resume: rebuild an instance from its committed records and continue it.

Called by ``WorkflowExecutor.resume`` / ``resumable`` (through ``engine.durable``).
The new owner takes the lease first (from an exited owner at once, see
``owner_is_dead``), then reads the records, so nothing commits while it
rebuilds. Committed nodes are matched to the definition by name, which lets
``allow_changed=True`` resume with a definition whose nodes moved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..errors import (DefinitionChangedError, InstanceNotFoundError, LionError,
                      SerializationError, StateError)
from ..model.definition import WorkflowDefinition
from ..model.ids import InstanceId
from ..state.machine import INSTANCE_TERMINAL, InstanceState, NodeState
from ..state.storage import Storage
from .durable import InstanceStore
from .durable_layout import (HEADER_PREFIX, StoredInstance, definition_key, header_key,
                             node_prefix, read_instance)
from .observe import EventKind as K
from .observe import ExecEvent

if TYPE_CHECKING:
    from .executor import WorkflowExecutor

__all__ = ["resume_instance", "list_resumable"]

_TERMINAL_VALUES = frozenset(s.value for s in INSTANCE_TERMINAL)


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
    await store.acquire()
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
