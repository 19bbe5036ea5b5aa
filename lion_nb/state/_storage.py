"""The storage interface every backend implements, and the in-memory backend.

Records are JSON-able dicts under string keys. ``put_many`` is the unit of
atomicity: either every write (and delete) in it is visible, or none is.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Sequence

from ..errors import LeaseError, SerializationError
from ._records import canonical_json

__all__ = ["CALLER_WAITS", "MemoryStorage", "Storage"]

Record = dict[str, Any]

#: Set by a caller that has nothing else to run until its write returns (the engine,
#: when one node is in flight): SQLite and files then write on the caller's thread if
#: their I/O thread is idle, sparing two thread wake-ups per write (see _worker.py).
#: A context variable, not a put_many argument, so wrappers and custom backends that
#: know nothing of it keep working.
CALLER_WAITS: ContextVar[bool] = ContextVar("lion_nb_caller_waits", default=False)


class Storage(ABC):
    """Async key/record store. ``durable`` says whether records survive the process."""

    durable: bool = False
    #: Tests set this to a callable that raises at a named step of a write (a crash).
    step_hook: Callable[[str], None] | None = None

    @abstractmethod
    async def put_many(
        self,
        items: Sequence[tuple[str, Record]],
        *,
        deletes: Iterable[str] = (),
        fence: tuple[str, str] | None = None,
    ) -> None:
        """Write ``items`` and delete ``deletes`` atomically.

        ``fence=(lease_key, owner)`` refuses the whole write with LeaseError
        unless the lease at ``lease_key`` is held by ``owner``.
        """

    @abstractmethod
    async def get(self, key: str) -> Record | None:
        """The record at ``key``, or None."""

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """The records at ``keys`` (None where absent), in order; backends may read them
        in one call."""
        return [await self.get(k) for k in keys]

    @abstractmethod
    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""

    @abstractmethod
    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Take (or renew) the lease at ``key``; LeaseError if another live owner has it."""

    async def items(self, prefix: str) -> list[tuple[str, Record]]:
        """Sorted ``(key, record)`` pairs under ``prefix`` (PostgreSQL: one query)."""
        found = []
        for key in await self.keys(prefix):
            record = await self.get(key)
            if record is not None:  # deleted since keys() listed it
                found.append((key, record))
        return found

    async def renew_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Extend a lease ``owner`` still holds; LeaseError if it is gone or another's.

        Unlike ``acquire_lease`` it never takes back a lease that lapsed to
        another owner, even one that lapsed again: that owner may have committed
        progress its previous holder does not know about. This default is one
        fenced write (atomic on every backend).
        """
        await self.put_many([(key, {"owner": owner, "expires": now + ttl})], fence=(key, owner))

    async def put(self, key: str, record: Record) -> None:
        """Write one record atomically."""
        await self.put_many([(key, record)])

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        await self.put_many([], deletes=[key])

    async def release_lease(self, key: str, owner: str) -> None:
        """Give up a lease this owner holds (no-op otherwise)."""
        rec = await self.get(key)
        if rec is not None and rec.get("owner") == owner:
            await self.delete(key)

    async def claim(self, prefix: str, owner: str, ttl: float, now: float, *,
                    limit: int = 1) -> list[tuple[str, Record]]:
        """Take up to ``limit`` records under ``prefix`` whose lease is free, in key order.

        Each record names its lease (``record["lease"]``, a key). Claiming takes
        that lease for ``owner`` and deletes the record; two claimers never take
        the same record. A claimer that dies in between leaves the record to be
        claimed again once the lease expires. Backends may do it in one
        transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``); this default uses
        ``acquire_lease`` and a fenced delete, atomic on every backend.
        """
        taken: list[tuple[str, Record]] = []
        for key in await self.keys(prefix):
            if len(taken) >= limit:
                break
            record = await self.get(key)
            lease = None if record is None else record.get("lease")
            if record is None or not isinstance(lease, str):
                continue
            try:
                await self.acquire_lease(lease, owner, ttl, now)
                await self.put_many([], deletes=[key], fence=(lease, owner))
            except LeaseError:
                continue
            taken.append((key, record))
        return taken

    async def expired_leases(self, prefix: str, now: float, *,
                             limit: int = 100) -> list[tuple[str, Record]]:
        """Up to ``limit`` leases under ``prefix`` that expired at ``now``, oldest first.

        This default reads every lease under ``prefix`` (fine for one machine's
        storage); PostgreSQL answers from an index on the expiry.
        """
        found: list[tuple[str, Record]] = []
        for key in await self.keys(prefix):
            lease = await self.get(key)
            if lease is not None and float(lease.get("expires", now + 1)) <= now:
                found.append((key, lease))
        found.sort(key=lambda kv: float(kv[1]["expires"]))
        return found[:limit]

    async def close(self) -> None:
        """Release files and connections."""

    def _step(self, name: str) -> None:
        if self.step_hook is not None:
            self.step_hook(name)


class MemoryStorage(Storage):
    """Dict-backed storage: fast, not durable.

    Records are kept as canonical JSON, so the same records are refused
    (SerializationError: not a dict, not JSON, NaN or infinity) and come back
    the same (tuples as lists, copies) as from the durable backends.
    """

    durable = False

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def put_many(self, items: Sequence[tuple[str, Record]], *,
                       deletes: Iterable[str] = (),
                       fence: tuple[str, str] | None = None) -> None:
        """Write and delete atomically (nothing can interleave on one loop)."""
        if fence is not None:
            lease = self._record(fence[0])
            if lease is None or lease.get("owner") != fence[1]:
                raise LeaseError(
                    f"lease {fence[0]!r} is not held by {fence[1]!r}", key=fence[0], owner=fence[1]
                )
        staged = [(k, _json(k, v)) for k, v in items]  # bad records fail before any change
        for k in deletes:
            self._data.pop(k, None)
        self._data.update(staged)

    async def get(self, key: str) -> Record | None:
        """A copy of the record, or None."""
        return self._record(key)

    def _record(self, key: str) -> Record | None:
        raw = self._data.get(key)
        return None if raw is None else json.loads(raw)

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted matching keys."""
        return sorted(k for k in self._data if k.startswith(prefix))

    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Take the lease unless a different owner's lease is still live."""
        cur = self._record(key)
        if cur is not None and cur["owner"] != owner and cur["expires"] > now:
            raise LeaseError(f"{key!r} is leased by {cur['owner']!r}", key=key, owner=cur["owner"])
        self._data[key] = _json(key, {"owner": owner, "expires": now + ttl})


def _json(key: str, record: Any) -> bytes:
    """``record`` as canonical JSON, under the rules every durable backend applies."""
    if not isinstance(record, dict):
        raise SerializationError(f"record {key!r} must be a dict, not {type(record).__name__}",
                                 field=key)
    try:
        return canonical_json(record)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"record {key!r} is not JSON-serializable: {exc}",
                                 field=key) from exc
