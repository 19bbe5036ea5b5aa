"""Cache: node results reused when a node's code and inputs have not changed.

Two tiers. The memory tier holds any Python object (DataFrames included) for
the life of the process. The durable tier, when a storage is given, keeps
JSON results on the state layer (``Cache("cache.db")`` is SQLite; any
``lion_nb.state`` storage works, PostgreSQL included) so a kernel restart keeps
them; nothing executable is ever loaded from it (JSON records, checksummed,
never pickle). Results that are not JSON -- DataFrames, arrays, objects --
stay in the memory tier only (there is no Parquet tier: pyarrow is not a
dependency).

One entry per node: the latest. A node whose code or inputs went back to an
earlier state runs once more; in exchange the cache never grows past one
entry per node and "why did this run" is a comparison with that one entry.

``clear()`` and ``invalidate()`` are synchronous (a notebook calls them
without ``await``): the memory tier changes at once, the durable deletions
are applied at the next run or ``await cache.flush()``, before anything is
read back.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any

from ..errors import CacheConfigError, CacheCorruptWarning, StorageError
from ..state import Storage
from ._cache_durable import DurableTier
from ._cache_entry import CacheEntry

__all__ = ["Cache", "as_cache"]

_log = logging.getLogger("lion_nb.cache")


class Cache:
    """Node results by workflow and node, reused when code and inputs are unchanged.

    ``Cache()`` keeps results in memory; ``Cache("cache.db")`` (a path: SQLite)
    or ``Cache(storage)`` (any ``lion_nb.state.Storage``) also keeps JSON
    results durably under ``namespace``. ``ttl`` (seconds) is the default
    time-to-live of an entry; a node's own ``cache_ttl`` overrides it.
    """

    def __init__(self, storage: Storage | str | os.PathLike[str] | None = None, *,
                 namespace: str = "cache", ttl: float | None = None) -> None:
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not ttl > 0 or math.isinf(ttl)):
            raise CacheConfigError(f"ttl must be a number of seconds > 0, not {ttl!r}",
                                   field="ttl")
        if not isinstance(namespace, str) or not namespace or "/" in namespace:
            raise CacheConfigError(f"namespace must be a non-empty string without '/', "
                                   f"not {namespace!r}", field="namespace")
        self._owned: Storage | None = None
        if isinstance(storage, (str, os.PathLike)):
            from ..state import SqliteStorage
            # A lost cache entry costs one re-run, so NORMAL (WAL stays consistent) is enough.
            # Processes sharing one cache file wait for each other's lock rather than fail:
            # the last connection's close checkpoints under an exclusive lock, and one fsync
            # on a busy disk can outlast SQLite's usual 5 s.
            storage = self._owned = SqliteStorage(os.fspath(storage), synchronous="NORMAL",
                                                  busy_timeout=60.0)
        elif storage is not None and not isinstance(storage, Storage):
            raise CacheConfigError(f"storage must be a path or a lion_nb.state.Storage, not "
                                   f"{type(storage).__name__}", field="storage")
        self.ttl = ttl
        self.namespace = namespace
        self._memory: dict[str, dict[str, CacheEntry]] = {}  # workflow -> node -> entry
        self._durable = DurableTier(storage, namespace) if storage is not None else None
        self._loaded: set[str] = set()

    @property
    def durable(self) -> bool:
        """Whether JSON results survive the process."""
        return self._durable is not None and bool(self._durable.storage.durable)

    @property
    def durable_pending(self) -> bool:
        """Whether entries or deletions wait for a flush to the durable tier."""
        return self._durable is not None and self._durable.pending

    # --- entries (used by each run's cache session) ------------------------------

    def table(self, workflow: str) -> dict[str, CacheEntry]:
        """The live node -> entry table of ``workflow`` (``await load(workflow)`` first)."""
        table = self._memory.get(workflow)
        if table is None:
            table = self._memory[workflow] = {}
        return table

    def put(self, entry: CacheEntry) -> None:
        """Keep ``entry`` as the node's latest (durably at the next flush, if JSON)."""
        self.table(entry.workflow)[entry.node] = entry
        if self._durable is not None:
            self._durable.write(entry)

    def discard(self, entry: CacheEntry, why: str) -> None:
        """Drop an entry that failed its check, with the named warning."""
        self.table(entry.workflow).pop(entry.node, None)
        key = None
        if self._durable is not None:
            key = self._durable.key(entry.workflow, entry.node)
            self._durable.delete(entry.workflow, entry.node)
        _warn(f"cache entry of node {entry.node!r} ({entry.workflow!r}) is unusable: {why}; "
              "the node runs instead", key=key, node=entry.node)

    async def load(self, workflow: str) -> None:
        """Read ``workflow``'s durable entries into memory (once per process)."""
        if self._durable is None or workflow in self._loaded:
            return
        try:
            await self.flush()  # deletions asked for before are applied before reading
            entries, bad = await self._durable.load(workflow)
        except StorageError:  # an unreadable cache costs re-runs, never the run itself
            _log.warning("could not read cache entries of %r from %r; its nodes run",
                         workflow, self, exc_info=True)
            return
        for key, why in bad:
            _warn(f"cache entry {key!r} of {workflow!r} is unusable: {why}; its node runs "
                  "instead", key=key, node=None)
        table = self.table(workflow)
        for entry in entries:
            table.setdefault(entry.node, entry)
        self._loaded.add(workflow)

    async def flush(self) -> None:
        """Write buffered entries and deletions to the durable tier (no-op in memory)."""
        if self._durable is not None:
            await self._durable.flush()

    async def flush_quietly(self) -> None:
        """``flush``, logging instead of raising: a lost entry costs a re-run, not the run."""
        try:
            await self.flush()
        except Exception:  # the storage's own error types vary by backend
            _log.warning("could not write cache entries to %r", self, exc_info=True)

    # --- invalidation ---------------------------------------------------------------

    def invalidate(self, *nodes: str, workflow: str | None = None) -> int:
        """Forget the entries of ``nodes`` (in ``workflow``, or in every workflow).

        Returns how many entries the memory tier dropped.
        """
        dropped = 0
        for node in nodes:
            for name, table in self._memory.items():
                if (workflow is None or name == workflow) and node in table:
                    del table[node]
                    dropped += 1
            if self._durable is not None:
                self._durable.delete(workflow, node)
        return dropped

    def clear(self, workflow: str | None = None) -> None:
        """Forget every entry (of ``workflow``, or all)."""
        for name, table in self._memory.items():
            if workflow is None or name == workflow:
                table.clear()  # cleared in place: a running session holds the table
        if self._durable is not None:
            self._durable.delete(workflow, None)

    # --- inspection and lifetime -------------------------------------------------------

    def entries(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """One dict per entry in memory: workflow, node, created (wall time), reads, cacheable."""
        return [{"workflow": e.workflow, "node": e.node, "created": e.created,
                 "reads": None if e.reads is None else sorted(e.reads),
                 "cacheable": e.uncacheable is None}
                for name, table in self._memory.items() if workflow in (None, name)
                for e in table.values()]

    def __len__(self) -> int:
        return sum(map(len, self._memory.values()))

    async def close(self) -> None:
        """Flush, and close the storage this cache opened itself (a path it was given)."""
        await self.flush()
        if self._owned is not None:
            await self._owned.close()

    def __repr__(self) -> str:
        where = "memory" if self._durable is None else f"memory + {self._durable.storage!r}"
        return f"Cache({where}, entries={len(self)})"


def _warn(message: str, *, key: str | None, node: str | None) -> None:
    warnings.warn(CacheCorruptWarning(message, key=key, node=node), stacklevel=4)


def as_cache(value: Any) -> Cache | None:
    """A ``cache=`` setting as a Cache: True -> in memory, a path -> SQLite, None/False -> none."""
    if value is None or value is False:
        return None
    if value is True:
        return Cache()
    if isinstance(value, Cache):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Cache(value)
    raise CacheConfigError(f"cache is True, a path or a Cache, not {value!r}", field="cache")
