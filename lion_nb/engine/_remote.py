"""Instances that run elsewhere, followed through the committed records in durable storage.

Another process (a claim worker, another notebook) owns the instance; this one
only reads. :class:`RemoteRun` polls the instance's header and node records
every ``interval`` seconds and turns what changed into the same observe events a
local run emits (instance started/finished, node started/retried/ended), so the
history recorder and ``RunView`` need no second code path. What a poll sees is
committed: a node that ran and ended between two polls shows as ended, and event
times are when the poll saw the change (the records carry no per-node clock), so
they are exact to one ``interval``.

Reads are not one snapshot (a storage has no multi-key read transaction): the
owner may commit between the header read and the node reads, which can look like
a broken commit sequence. :func:`read_settled` reads again in that case while the
instance is still running, and raises only if the damage stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from ..errors import (InstanceCancelledError, InstanceNotFoundError, NodeFailedError,
                      StorageCorruptError, WorkflowFailedError)
from ..model import WorkflowDefinition
from ..state import InstanceState, NodeState, Storage
from ..state._machine import INSTANCE_TERMINAL
from ._result import InstanceResult
from ._durable import (StoredInstance, definition_key, header_key, node_prefix, started_nodes,
                      verify_sequence)
from ._observe import EventKind as K
from ._observe import ExecEvent, ObserveStream

__all__ = ["RemoteRun", "read_settled", "restored_nodes", "stored_result", "wait_stored"]

_log = logging.getLogger("lion_nb.remote")
_TERMINAL = frozenset(s.value for s in INSTANCE_TERMINAL)
_END = {NodeState.SUCCEEDED.value: K.NODE_SUCCEEDED, NodeState.FAILED.value: K.NODE_FAILED,
        NodeState.SKIPPED.value: K.NODE_SKIPPED,
        NodeState.UPSTREAM_FAILED.value: K.NODE_UPSTREAM_FAILED,
        NodeState.CANCELLED.value: K.NODE_CANCELLED}
_RUNNING = NodeState.RUNNING.value
#: Torn reads of a running instance are retried this many times before they count.
_READS = 5


async def read_settled(storage: Storage, instance_id: str,
                       known: StoredInstance | None = None) -> StoredInstance | None:
    """``read_instance`` of an instance another process may be writing (see the module).

    Node records come in one ``items`` call (one query on PostgreSQL, instead of
    a round trip per node); the definition of a ``known`` earlier read is reused
    while the header's fingerprint is the same (a resume may change it).
    """
    for attempt in range(_READS):
        try:
            return await _read(storage, instance_id, known)
        except StorageCorruptError:
            header = await storage.get(header_key(instance_id))
            if attempt == _READS - 1 or header is None or header.get("state") in _TERMINAL:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


async def _read(storage: Storage, iid: str,
                known: StoredInstance | None) -> StoredInstance | None:
    header = await storage.get(header_key(iid))
    if header is None:
        return None
    if known is not None and known.header.get("fingerprint") == header.get("fingerprint"):
        definition = known.definition
    else:
        doc = await storage.get(definition_key(iid))
        definition = None if doc is None else doc.get("document")
    prefix = node_prefix(iid)
    nodes = {int(key[len(prefix):]): rec for key, rec in await storage.items(prefix)
             if key[len(prefix):].isdigit()}  # not a longer id that shares the prefix
    verify_sequence(iid, header, nodes)
    return StoredInstance(iid, header, definition, nodes)


def stored_result(stored: StoredInstance, built: WorkflowDefinition | None = None,
                  restored: frozenset[str] | None = None) -> InstanceResult:
    """An InstanceResult built from what storage holds (for instances run elsewhere).

    ``built``: the definition already rebuilt from ``stored.definition`` (a poller
    keeps it: rebuilding a big workflow costs more than reading its records);
    ``restored``: :func:`restored_nodes` of ``stored``, if already known.
    """
    header, iid = stored.header, stored.instance_id
    definition = built
    if definition is None and stored.definition is not None:
        definition = WorkflowDefinition.from_dict(stored.definition)
    names = (list(definition.by_name) if definition is not None  # in node order
             else [r["name"] for r in stored.nodes.values()])
    if restored is None:
        restored = restored_nodes(stored)
    states = {n: NodeState.PENDING for n in names}
    attempts = {n: 0 for n in names}
    results: dict[str, Any] = {n: None for n in names}
    failures: dict[str, BaseException] = {}
    skipped: dict[str, str] = {}
    for rec in stored.nodes.values():
        name, node_state = rec["name"], NodeState(rec["state"])
        states[name], attempts[name] = node_state, int(rec.get("attempts", 0))
        if node_state is NodeState.SUCCEEDED:
            results[name] = rec.get("output")
        elif node_state is NodeState.FAILED:
            when = " before the restart" if name in restored else ""  # as a local resume says
            failures[name] = NodeFailedError(f"node {name!r} failed{when}: {rec.get('error')}",
                                             node=name, instance_id=iid,
                                             attempt=attempts[name])
        elif node_state is NodeState.SKIPPED and rec.get("error"):
            skipped[name] = str(rec["error"])  # a capability denial under on_denied="skip"
    # A start may ride on another node's end record (see durable): running all the same.
    for name, (attempt, _) in started_nodes(stored.nodes).items():
        states[name], attempts[name] = NodeState.RUNNING, attempt
    state = InstanceState(header.get("state", "pending"))
    error: BaseException | None = None
    if state is InstanceState.FAILED:
        first = next(iter(failures), None)
        error = WorkflowFailedError(header.get("error") or f"instance {iid} failed",
                                    instance_id=iid, node=first)
    elif state is InstanceState.CANCELLED:
        error = InstanceCancelledError(header.get("error") or f"instance {iid} was cancelled",
                                       instance_id=iid)
    shown: Any = definition if definition is not None else _Named(header.get("workflow", "?"))
    return InstanceResult(instance_id=iid, definition=shown, state=state, node_states=states,
                          attempts=attempts, results=results, exceptions=failures,
                          skip_reasons=skipped, error=error, restored=restored,
                          started_at=float(header.get("created_at") or 0.0),
                          finished_at=header.get("finished_at"))


def restored_nodes(stored: StoredInstance) -> frozenset[str]:
    """The nodes the instance's latest ``resume`` read back from storage (not run again).

    That resume's write is commit ``resumed_seq`` of the header: every node that had
    ended by then has a record of that number or lower, every later end a higher one.
    Instances resumed before headers kept the number: known only while they run (the
    header is then that resume's own write), empty once they finished.
    """
    header = stored.header
    if not header.get("resumes"):
        return frozenset()
    mark = header.get("resumed_seq")
    if type(mark) is not int:
        if header.get("state") in _TERMINAL:
            return frozenset()
        mark = header.get("seq")
        if type(mark) is not int:
            return frozenset()
    return frozenset(rec["name"] for rec in stored.nodes.values()
                     if rec["state"] != _RUNNING and int(rec.get("seq", 0)) <= mark)


def _node_views(stored: StoredInstance) -> list[tuple[tuple[int, int], str, str, int, Any]]:
    """``(order, node, state, attempt, error)`` per node as committed, in commit order.

    A node whose newest start has no end yet is running, whether its start is its
    own record or rides on the end record of the node that released it.
    """
    running = started_nodes(stored.nodes)
    order: dict[str, tuple[int, int]] = {}
    views: list[tuple[tuple[int, int], str, str, int, Any]] = []
    for rec in stored.nodes.values():
        seq, name = int(rec.get("seq", 0)), rec["name"]
        if name in running:
            order[name] = max(order.get(name, (seq, 1)), (seq, 1))
        else:
            views.append(((seq, 0), name, rec["state"], int(rec.get("attempts", 0)),
                          rec.get("error")))
        for other in rec.get("starts") or ():
            if other in running:   # after the end it rides on
                order[other] = max(order.get(other, (seq, 1)), (seq, 1))
    views.extend((order.get(name, (0, 1)), name, _RUNNING, attempt, None)
                 for name, (attempt, _) in running.items())
    views.sort(key=lambda v: v[0])
    return views


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Any] = []


async def wait_stored(storage: Storage, instance_id: str, *, timeout: float | None,
                      poll: float = 0.05) -> InstanceResult:
    """Poll an instance's stored header until it finished; its result from storage."""
    iid = str(instance_id)
    async with asyncio.timeout(timeout):
        delay = poll
        while True:
            header = await storage.get(header_key(iid))
            if header is None:
                raise InstanceNotFoundError(f"no instance {iid!r} on this executor or in "
                                            f"{storage!r}", instance_id=iid)
            if header.get("state") in _TERMINAL:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    stored = await read_settled(storage, iid)
    if stored is None:
        raise InstanceNotFoundError(f"instance {iid!r} vanished from {storage!r}",
                                    instance_id=iid)
    return stored_result(stored)


class RemoteRun:
    """Follows one stored instance by polling; emits its changes on ``observe``."""

    def __init__(self, storage: Storage, instance_id: str, observe: ObserveStream, *,
                 interval: float,
                 on_finished: Callable[[RemoteRun], None] | None = None) -> None:
        self.storage = storage
        self.instance_id = str(instance_id)
        self.observe = observe
        self.interval = interval
        #: The instance as the last poll saw it (set by ``first_read``).
        self.result: InstanceResult | None = None
        #: Set when the instance finished (or vanished: then ``error`` says so).
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        #: Called once when ``done`` is set (the executor's retention counts it then).
        self.on_finished = on_finished
        self._seen: dict[str, tuple[str, int]] = {}  # node -> (state, attempt) last seen
        self._started: dict[str, float] = {}  # node -> when its running attempt was seen
        self._task: asyncio.Task[None] | None = None
        self._last: StoredInstance | None = None  # its definition is not read again
        self._last_document: Any = None

    async def first_read(self) -> InstanceResult:
        """Read the instance once (InstanceNotFoundError if unknown) and start polling."""
        stored = await read_settled(self.storage, self.instance_id)
        if stored is None:
            raise InstanceNotFoundError(f"no instance {self.instance_id!r} in "
                                        f"{self.storage!r}", instance_id=self.instance_id)
        header = stored.header
        self.result = stored_result(stored)  # a view told of the start reads it at once
        self._last, self._last_document = stored, stored.definition
        if self.observe.wants(K.INSTANCE_STARTED):
            self.observe.emit(ExecEvent(
                K.INSTANCE_STARTED, float(header.get("created_at") or time.time()),
                self.instance_id, None, 0,
                {"workflow": header.get("workflow", ""), "nodes": header.get("nodes"),
                 "remote": True}))
        self._apply(stored)
        if not self.done.is_set():
            self._task = asyncio.get_running_loop().create_task(
                self._poll(), name=f"lion-follow {self.instance_id}")
        assert self.result is not None
        return self.result

    async def wait(self, timeout: float | None = None) -> InstanceResult:
        """The instance's result once it finished (as the poll that saw it end read it)."""
        async with asyncio.timeout(timeout):
            await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    async def stop(self) -> None:
        """Stop polling (the last result stays readable)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.interval)
            try:
                stored = await read_settled(self.storage, self.instance_id, self._last)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a storage hiccup: the next poll tries again
                _log.warning("following instance %s: %s", self.instance_id, exc)
                continue
            if stored is None:  # pruned or deleted under us: nothing more will come
                self.error = InstanceNotFoundError(
                    f"instance {self.instance_id!r} vanished from {self.storage!r}",
                    instance_id=self.instance_id)
                self._finish()
                return
            self._apply(stored)

    def _apply(self, stored: StoredInstance) -> None:
        """Emit what changed since the last poll, then keep this read as the result."""
        now = time.time()
        header, iid, obs = stored.header, self.instance_id, self.observe
        worker = header.get("owner")
        restored = restored_nodes(stored)
        for _, name, state, attempt, error in _node_views(stored):
            before = self._seen.get(name)
            if before == (state, attempt):
                continue
            self._seen[name] = (state, attempt)
            if before is None and name in restored:
                # Read back by a resume before this follower saw it end: what the
                # resuming executor's own history shows (see InstanceRun.restore).
                data = {"state": state, "reason": "restored",
                        "reason_detail": f"{state} before the restart"}
                if error is not None:
                    data["error"] = str(error)
                self._emit(K.NODE_RESTORED, now, name, attempt, data)
                continue
            missed = 1 if before is None else before[1] + 1
            if before is not None and before[0] == _RUNNING and before[1] < attempt:
                # The attempt seen running ended and another began: it failed and retried.
                self._emit(K.NODE_RETRIED, now, name, before[1],
                           {"started_at": self._started.get(name), "worker": worker})
            for earlier in range(missed, attempt):  # attempts that began and failed unseen
                self._emit(K.NODE_RETRIED, now, name, earlier,
                           {"started_at": None, "worker": worker})
            if state == _RUNNING:
                self._started[name] = now
                self._emit(K.NODE_STARTED, now, name, attempt, {"worker": worker})
            elif state in _END:
                self._emit(_END[state], now, name, attempt,
                           {"started_at": self._started.pop(name, None), "queued_at": None,
                            "error": error, "worker": worker})
        built = None
        if (self.result is not None and stored.definition is not None
                and stored.definition is self._last_document):
            built = self.result.definition  # the same document: no need to rebuild it
        self.result = stored_result(stored, built, restored)
        self._last, self._last_document = stored, stored.definition
        if header.get("state") in _TERMINAL:
            end = float(header.get("finished_at") or now)
            if obs.wants(K.INSTANCE_FINISHED):
                obs.emit(ExecEvent(K.INSTANCE_FINISHED, end, iid, None, 0,
                                   {"state": header.get("state"),
                                    "workflow": header.get("workflow", ""),
                                    "error": header.get("error"), "remote": True}))
            self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.on_finished is not None:
            self.on_finished(self)

    def _emit(self, kind: K, when: float, node: str, attempt: int,
              data: dict[str, Any]) -> None:
        if self.observe.wants(kind):
            self.observe.emit(ExecEvent(kind, when, self.instance_id, node, attempt, data))
