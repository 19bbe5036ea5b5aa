"""The durable tier of the cache: entries as checksummed JSON records in a Storage namespace.

Layout: ``<namespace>/<workflow digest>/<node digest>`` -> one record (the
node's latest entry). Digests keep any workflow or node name a valid key on
every backend. Writes are buffered and flushed in one ``put_many`` (one
transaction) at the end of each instance: a crash before the flush loses
cache entries, never correctness -- those nodes simply run again. Every
record is written whole, so concurrent writers (two runs, two processes on
one SQLite file) never leave a mixed record: the last complete write wins.
"""

from __future__ import annotations

import asyncio

from ..errors import CheckpointError, StorageError
from ..state import Storage
from ._cache_entry import CacheEntry, EntryCorrupt
from ._fingerprint import digest

__all__ = ["DurableTier"]


class DurableTier:
    """Buffered, verified reads and writes of cache entries on one Storage."""

    def __init__(self, storage: Storage, namespace: str) -> None:
        self.storage = storage
        self.namespace = namespace
        self._pending: dict[str, CacheEntry] = {}
        self._deletes: set[str] = set()
        self._prefix_deletes: list[tuple[str, str]] = []  # (prefix, suffix)
        # One flush at a time: a second caller waits until the first one's write is durable.
        self._flushing = asyncio.Lock()

    @property
    def pending(self) -> bool:
        """Whether a flush has anything to do."""
        return bool(self._pending or self._deletes or self._prefix_deletes)

    def key(self, workflow: str, node: str) -> str:
        """The storage key of a node's entry."""
        return f"{self.namespace}/{self._wf(workflow)}/{digest(node.encode())}"

    def _wf(self, workflow: str) -> str:
        return digest(workflow.encode())

    def write(self, entry: CacheEntry) -> None:
        """Buffer ``entry`` for the next flush (it replaces any earlier one)."""
        key = self.key(entry.workflow, entry.node)
        self._deletes.discard(key)
        self._pending[key] = entry

    def delete(self, workflow: str | None, node: str | None) -> None:
        """Buffer the deletion of one entry, a workflow's, a node's everywhere, or all."""
        if workflow is not None and node is not None:
            key = self.key(workflow, node)
            self._pending.pop(key, None)
            self._deletes.add(key)
            return
        prefix = f"{self.namespace}/" + ("" if workflow is None else self._wf(workflow) + "/")
        suffix = "" if node is None else "/" + digest(node.encode())
        for key in [k for k in self._pending if k.startswith(prefix) and k.endswith(suffix)]:
            del self._pending[key]
        self._prefix_deletes.append((prefix, suffix))

    async def flush(self) -> None:
        """Apply buffered deletions, then write buffered entries, in one transaction."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        deletes, self._deletes = self._deletes, set()
        prefixes, self._prefix_deletes = self._prefix_deletes, []
        for prefix, suffix in prefixes:
            deletes.update(k for k in await self.storage.keys(prefix)
                           if k.endswith(suffix) and k not in pending)
        items = []
        for key, entry in pending.items():
            try:
                record = entry.to_record()  # canonical JSON: refuses what the codec would
            except (TypeError, ValueError):
                continue  # a result that is not JSON stays in memory only (documented)
            items.append((key, record))
        if items or deletes:
            await self.storage.put_many(items, deletes=sorted(deletes))

    async def load(self, workflow: str) -> tuple[list[CacheEntry], list[tuple[str, str]]]:
        """The verified entries of ``workflow``, and ``(key, why)`` of the unusable ones.

        An unusable record is deleted at the next flush (its node runs and
        writes a fresh one anyway).
        """
        prefix = f"{self.namespace}/{self._wf(workflow)}/"
        entries: list[CacheEntry] = []
        bad: list[tuple[str, str]] = []
        for key in await self.storage.keys(prefix):
            try:
                record = await self.storage.get(key)
                if record is None:  # deleted meanwhile by another writer
                    continue
                entry = CacheEntry.from_record(record)
                if self.key(entry.workflow, entry.node) != key or entry.workflow != workflow:
                    raise EntryCorrupt("stored under another key")
            except (EntryCorrupt, CheckpointError, StorageError, ValueError) as exc:
                bad.append((key, str(exc) or type(exc).__name__))
                self._deletes.add(key)
                continue
            entries.append(entry)
        return entries, bad

