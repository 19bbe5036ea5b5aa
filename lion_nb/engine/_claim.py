"""Instances that run elsewhere: queued in durable storage, claimed by any executor.

``submit_instance`` writes a new instance's header (state ``pending``), its
definition and a queue record ``queue/<ns>-<id>`` that names the instance's
lease, in one write. An executor started with ``start(claim=True)`` runs a
:class:`Claimer`: it claims queue records (``Storage.claim`` takes the lease and
deletes the record atomically, so of several executors exactly one claims each
instance) and resumes them -- a claimed instance is a resumed one with nothing
committed -- and it takes over instances whose lease expired because their
owner died. One owner per instance at a time: the lease fences every commit, so
an owner that lost it can no longer write (see InstanceStore).

``wait_stored`` follows an instance that runs elsewhere by reading its header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Mapping

from ..errors import (InstanceCancelledError, InstanceNotFoundError, LeaseError, LionError,
                      NodeFailedError, StateError, WorkflowFailedError)
from ..model import WorkflowDefinition
from ..state.machine import INSTANCE_TERMINAL, InstanceState, NodeState
from ..state.storage import Storage
from ._result import InstanceResult
from .durable import (StoredInstance, definition_key, header_key, lease_key, new_header,
                      owner_is_dead, read_instance)

__all__ = ["QUEUE_PREFIX", "Claimer", "submit_instance", "wait_stored"]

QUEUE_PREFIX = "queue/"
LEASE_PREFIX = "leases/"
_log = logging.getLogger("lion_nb.claim")
_TERMINAL = frozenset(s.value for s in INSTANCE_TERMINAL)


async def submit_instance(storage: Storage, definition: WorkflowDefinition, instance_id: str,
                          inputs: Mapping[str, Any], now: float) -> None:
    """Queue a new instance for claiming executors (header, definition, queue record)."""
    iid = str(instance_id)
    document = definition.to_dict()  # SerializationError: a worker could not rebuild it
    if await storage.get(header_key(iid)) is not None:
        raise StateError(f"instance {iid} already exists in {storage!r}; submit under a new id",
                         instance_id=iid)
    header = new_header(definition, iid, dict(inputs), now, InstanceState.PENDING,
                        stored_definition=True)
    header["submitted"] = True
    await storage.put_many([
        (header_key(iid), header), (definition_key(iid), {"document": document}),
        (f"{QUEUE_PREFIX}{time.time_ns():020d}-{iid}",
         {"instance_id": iid, "lease": lease_key(iid), "submitted_at": now})])


def stored_result(stored: StoredInstance) -> InstanceResult:
    """An InstanceResult built from what storage holds (for instances run elsewhere)."""
    header, iid = stored.header, stored.instance_id
    definition = (WorkflowDefinition.from_dict(stored.definition)
                  if stored.definition is not None else None)
    names = (list(definition.by_name) if definition is not None  # in node order
             else [r["name"] for r in stored.nodes.values()])
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
            failures[name] = NodeFailedError(f"node {name!r} failed: {rec.get('error')}",
                                             node=name, instance_id=iid,
                                             attempt=attempts[name])
        elif node_state is NodeState.SKIPPED and rec.get("error"):
            skipped[name] = str(rec["error"])  # a capability denial under on_denied="skip"
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
                          skipped=skipped, error=error,
                          started_at=float(header.get("created_at") or 0.0),
                          finished_at=header.get("finished_at"))


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


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
    stored = await read_instance(storage, iid)
    if stored is None:
        raise InstanceNotFoundError(f"instance {iid!r} vanished from {storage!r}",
                                    instance_id=iid)
    return stored_result(stored)


class Claimer:
    """Claims queued instances and takes over expired ones for one executor (a task)."""

    def __init__(self, storage: Storage, *, owner: str, ttl: float,
                 resume: Callable[[str], Awaitable[Any]], busy: Callable[[], int],
                 limit: int, poll: float) -> None:
        if limit < 1 or poll <= 0:
            raise LionError(f"claim needs max_claimed >= 1 and poll > 0, not {limit}, {poll}")
        self.storage = storage
        self.owner = owner
        self.ttl = ttl
        self.limit = limit
        self.poll = poll
        self._resume = resume
        self._busy = busy
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start claiming on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                 name="lion-claimer")

    async def stop(self) -> None:
        """Stop claiming; instances already claimed keep running."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        last_scan = 0.0
        while True:
            took = False
            try:
                if self._busy() < self.limit:
                    took = await self.claim_some()
                    now = time.monotonic()
                    if not took and now - last_scan >= max(self.poll, self.ttl / 3):
                        last_scan = now
                        took = await self.take_over_expired()
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage hiccup must not end the worker
                _log.exception("claiming failed; retrying in %.1fs", self.poll)
            if not took:
                await asyncio.sleep(self.poll)

    async def claim_some(self) -> bool:
        """Claim queued instances up to the limit and start them; False if none was queued."""
        free = self.limit - self._busy()
        got = await self.storage.claim(QUEUE_PREFIX, self.owner, self.ttl, time.time(),
                                       limit=min(free, 16))
        # Started together, their first writes share transactions (group commit).
        await asyncio.gather(*(self._start(str(rec.get("instance_id"))) for _, rec in got))
        return bool(got)

    async def take_over_expired(self) -> bool:
        """Resume instances whose owner's lease expired; True if any was taken."""
        took = False
        now = time.time()
        for key in await self.storage.keys(LEASE_PREFIX):
            if self._busy() >= self.limit:
                break
            lease = await self.storage.get(key)
            if lease is None or lease.get("owner") == self.owner:
                continue
            if float(lease.get("expires", 0)) > now and not owner_is_dead(
                    str(lease.get("owner"))):
                continue
            iid = key[len(LEASE_PREFIX):]
            header = await self.storage.get(header_key(iid))
            if header is None or header.get("state") in _TERMINAL:
                continue
            try:
                await self._resume(iid)
            except LeaseError:  # another executor was faster
                continue
            except LionError as exc:
                _log.warning("could not take over instance %s: %s", iid, exc)
                continue
            _log.info("took over instance %s from %s", iid, lease.get("owner"))
            took = True
        return took

    async def _start(self, iid: str) -> None:
        try:
            await self._resume(iid)
        except LeaseError:
            return
        except LionError as exc:
            # This executor holds the lease but cannot run the instance (a handler is
            # missing): end it FAILED with the reason, so the submitter's wait() says why.
            _log.error("claimed instance %s cannot run here: %s", iid, exc)
            header = await self.storage.get(header_key(iid))
            if header is None:
                return
            await self.storage.acquire_lease(lease_key(iid), self.owner, self.ttl, time.time())
            header.update(state=InstanceState.FAILED.value, error=str(exc),
                          finished_at=time.time(), updated_at=time.time())
            await self.storage.put_many([(header_key(iid), header)],
                                        deletes=[lease_key(iid)],
                                        fence=(lease_key(iid), self.owner))
