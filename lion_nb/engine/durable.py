"""Durable instances: each finished node is committed; after a crash, resume the rest.

With a durable storage (``StateMachineManager(SqliteStorage(path))``) the
executor gives every instance an :class:`InstanceStore`:

* ``begin`` takes the instance's owner lease and writes its header and
  definition; a background task renews the lease every third of its TTL;
* ``commit`` writes the records of a node that ended and of the nodes the join
  rule decided with it in one atomic ``put_many`` fenced by the lease (shared
  with the commits that arrive while a write is in flight), and returns only
  once they are durable, before any successor is queued -- so a successor never
  commits before its inputs did, and an owner whose lease was taken over
  cannot commit at all;
* ``end`` writes the final state and releases the lease in one write, after
  every queued commit; ``detach`` (executor.stop) releases the lease instead.

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
from typing import TYPE_CHECKING, Any

from ..errors import LeaseError, SerializationError, StateError
from ..state.machine import InstanceState, NodeState
from ..state.storage import Storage
from .durable_layout import (StoredInstance, definition_key, header_key, lease_key,
                             new_owner_id, node_prefix, owner_is_dead, read_instance)
from .observe import EventKind as K
from .observe import ExecEvent

if TYPE_CHECKING:
    from .executor import WorkflowExecutor
    from .run import InstanceRun

__all__ = ["InstanceStore", "resume_instance", "list_resumable", "read_instance",
           "StoredInstance", "executor_owner_id"]

_log = logging.getLogger("lion_nb.durable")
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
        self._queue: list[tuple[list[tuple[str, dict[str, Any]]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

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
            # A process that died before its header committed may still hold the
            # lease: acquire() takes it over, then the header check below decides.
            await self.acquire()
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
        """Durably write the records of ``indices``; return once they are committed.

        Commits that arrive while a write is in flight share the next
        ``put_many`` (one transaction or journal; no waiting when idle), so a
        busy instance pays one fsync per group rather than per node. Never
        raises: a failed commit stops the instance in this executor, since
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
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((items, fut))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        try:
            await fut
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            node = names[indices[0]].name
            what = ("lost its lease to another executor" if isinstance(exc, LeaseError)
                    else "could not commit")
            first = self._fail(exc, f"instance {self._iid}: node {node!r} {what} ({exc}); "
                                    f"it stopped here and stays resumable")
            if first and not run.cancel_requested:
                # cancel() awaits nothing, so this ends the instance CANCELLED before the
                # caller decides its state -- even when this node was the last one.
                await run.cancel(reason=str(self.failure))

    async def _flush(self) -> None:
        """Write queued commits, one ``put_many`` per group, until the queue is empty."""
        try:
            while self._queue:
                group, self._queue = self._queue, []
                items = group[0][0] if len(group) == 1 else [x for g, _ in group for x in g]
                try:
                    await self.storage.put_many(items, fence=self._fence)
                except Exception as exc:  # every commit of the group hears it
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for _, fut in group:
                    if not fut.done():  # a cancelled waiter: its records committed anyway
                        fut.set_result(None)
        finally:
            self._flusher = None

    async def end(self, run: "InstanceRun") -> None:
        """Write the final state and release the lease (one write); never raises."""
        # The node that ended the run may not be the last to commit: its siblings'
        # records can still be queued. The final state must follow them, not pass them.
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        self.close()
        if self.failure is not None:
            # Finished in memory, but not durably: say so, as the instance is resumable.
            run.state = InstanceState.CANCELLED if run.state is InstanceState.SUCCEEDED \
                else run.state
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

    async def detach(self, run: "InstanceRun") -> None:
        """The executor is stopping: write nothing more, release the lease, stay resumable."""
        if self.failure is None:
            self.failure = StateError(
                f"instance {self._iid} was stopped with its executor; it is resumable: "
                f"executor.resume({self._iid!r})", instance_id=self._iid)
        self.close()
        await self._release_quietly()

    # --- lease ------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take the instance's lease: free, expired, or held by a process that has exited."""
        key, now = self._fence[0], self._now()
        try:
            await self.storage.acquire_lease(key, self.owner, self.ttl, now)
        except LeaseError as exc:
            held = await self.storage.get(key)
            holder = str((held or {}).get("owner", "?"))
            if not owner_is_dead(holder):
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
                if run is not None and run.store is self and self._fail(
                        exc, f"instance {self._iid}: another executor took its lease "
                             f"({exc}); it stopped here") and not run.cancel_requested:
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

    def _fail(self, exc: BaseException, message: str) -> bool:
        """Record the first failure (True) -- later ones add nothing (False)."""
        if self.failure is not None:
            return False
        cls = LeaseError if isinstance(exc, LeaseError) else StateError
        self.failure = cls(message, instance_id=self._iid, owner=self.owner)
        self.failure.__cause__ = exc
        _log.error("%s", message)
        return True

    def _emit(self, what: str, state: str) -> None:
        obs = self.executor.observe
        if obs.wants(K.CHECKPOINT_SAVED):
            obs.emit(ExecEvent(K.CHECKPOINT_SAVED, self._now(), self._iid, None, 0,
                               {"what": what, "state": state, "key": header_key(self._iid),
                                "storage": repr(self.storage)}))


# Resume lives in its own module; imported here so ``engine.durable`` is the one entry point.
from .durable_resume import list_resumable, resume_instance  # noqa: E402
