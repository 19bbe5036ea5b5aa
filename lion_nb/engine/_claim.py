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

``hand_back`` puts a submitted instance back in the queue when its executor
stops, so another claiming executor continues it at once (see executor.stop).
Expired leases are found with ``Storage.expired_leases`` (an index scan on
PostgreSQL), a bounded number per scan, never by reading every lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Mapping

from ..errors import LeaseError, LionError, StateError
from ..model import WorkflowDefinition
from ..state import InstanceState, Storage
from ..state._machine import INSTANCE_TERMINAL
from ._store import InstanceStore
from ._durable import definition_key, header_key, lease_key, new_header

__all__ = ["QUEUE_PREFIX", "Claimer", "hand_back", "submit_instance"]

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
        _queued(iid, now)])


def _queued(iid: str, now: float) -> tuple[str, dict[str, Any]]:
    return (f"{QUEUE_PREFIX}{time.time_ns():020d}-{iid}",
            {"instance_id": iid, "lease": lease_key(iid), "submitted_at": now})


async def hand_back(store: InstanceStore) -> bool:
    """Queue a submitted instance again before its executor lets it go; False if not one.

    Written under the lease (fenced) and before the lease is released: if the
    process dies in between, the record waits for the lease to expire, so a
    claimer never takes an instance its owner still runs.
    """
    if not store.header.get("submitted") or store.failure is not None:
        return False  # started here (execute_workflow): stays paused until resume()
    iid = store.instance_id
    try:
        await store.storage.put_many([_queued(iid, time.time())],
                                     fence=(lease_key(iid), store.owner))
    except LionError as exc:  # lease already lost: its new owner runs it
        _log.info("instance %s not handed back: %s", iid, exc)
        return False
    return True


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
        free = self.limit - self._busy()
        if free <= 0:
            return False
        expired = await self.storage.expired_leases(LEASE_PREFIX, time.time(),
                                                    limit=min(free, 16) + 16)
        for key, lease in expired:
            if self._busy() >= self.limit:
                break
            if lease.get("owner") == self.owner:
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
            header = await self.storage.get(header_key(iid))
            if header is None or header.get("state") in _TERMINAL:
                # A queue record outliving its run (its owner died between hand_back
                # and release, and the lease takeover finished it): nothing to do.
                await self.storage.release_lease(lease_key(iid), self.owner)
                return
            # This executor holds the lease but cannot run the instance (a handler is
            # missing): end it FAILED with the reason, so the submitter's wait() says why.
            _log.error("claimed instance %s cannot run here: %s", iid, exc)
            await self.storage.acquire_lease(lease_key(iid), self.owner, self.ttl, time.time())
            header.update(state=InstanceState.FAILED.value, error=str(exc),
                          finished_at=time.time(), updated_at=time.time())
            await self.storage.put_many([(header_key(iid), header)],
                                        deletes=[lease_key(iid)],
                                        fence=(lease_key(iid), self.owner))
