"""Deleting the durable records of instances that finished long enough ago.

Instances are deleted in ``put_many`` batches of up to ``_BATCH`` whole
instances (header, definition, node and attempt records, lease): every backend
applies a batch atomically, so a crash during a prune leaves each instance
either whole or gone, never a header without its nodes (which resume would
report as damaged) or nodes without a header. Batching keeps a prune of many
small instances from costing one transaction (one fsync) each, so an automatic
prune keeps up with a busy executor (issue 14: durable soak).
"""

from __future__ import annotations

import logging
from typing import Any, Container

from ..errors import StateError
from ..state import Storage
from ..state._machine import INSTANCE_TERMINAL
from ._durable import (HEADER_PREFIX, definition_key, from_ranges, header_key, lease_key,
                      node_key, node_prefix)

__all__ = ["prune_finished"]

_log = logging.getLogger("lion_nb.durable")
_TERMINAL_VALUES = frozenset(s.value for s in INSTANCE_TERMINAL)
_BATCH = 64


async def prune_finished(storage: Storage, cutoff: float, running: Container[str]) -> int:
    """Delete instances whose stored state is final and that finished before ``cutoff``.

    Instances in ``running`` (live on this executor), unfinished (resumable or
    queued) and damaged ones (their header cannot be read) are left alone.
    Returns how many instances were deleted.
    """
    pruned = 0
    doomed: list[str] = []
    candidates = [k for k in await storage.keys(HEADER_PREFIX)
                  if k[len(HEADER_PREFIX):] not in running]
    for at in range(0, len(candidates), 512):
        pruned, doomed = await _prune_some(storage, candidates[at:at + 512], cutoff,
                                           pruned, doomed)
    if doomed:
        await storage.put_many([], deletes=doomed)
    return pruned


async def _prune_some(storage: Storage, keys: list[str], cutoff: float, pruned: int,
                      doomed: list[str]) -> tuple[int, list[str]]:
    """Prune what ``keys`` (headers) name; returns the count and the deletes not written yet."""
    try:
        # One read for many headers: a pass costs a call per batch, not per instance,
        # so an automatic prune of a large store does not fall behind the executor.
        headers = await storage.get_many(keys)
    except StateError:  # a damaged one among them: read one by one to skip just it
        headers = [await _header(storage, k) for k in keys]
    for key, header in zip(keys, headers):
        iid = key[len(HEADER_PREFIX):]
        if header is None or header.get("state") not in _TERMINAL_VALUES:
            continue
        finished = header.get("finished_at") or header.get("updated_at")
        if not isinstance(finished, (int, float)) or finished > cutoff:
            continue
        doomed += [header_key(iid), definition_key(iid), lease_key(iid),
                   *await _node_keys(storage, iid, header)]
        pruned += 1
        if pruned % _BATCH == 0:
            await storage.put_many([], deletes=doomed)
            doomed = []
    return pruned, doomed


async def _node_keys(storage: Storage, iid: str, header: dict[str, Any]) -> list[str]:
    """The keys of a finished instance's node records.

    Its final header lists them (``manifest``, exact once the end was written)
    and counts its definition's nodes, so no listing is needed (one call less
    per instance); headers from before commit sequences are listed.
    """
    runs, count = header.get("manifest"), header.get("nodes")
    if not isinstance(header.get("seq"), int) or not isinstance(runs, list) \
            or type(count) is not int:
        return await storage.keys(node_prefix(iid))
    try:
        indices = from_ranges(runs) | set(range(count))
    except (TypeError, ValueError):  # a manifest this code did not write: list instead
        return await storage.keys(node_prefix(iid))
    return [node_key(iid, i) for i in sorted(indices)]


async def _header(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        return await storage.get(key)
    except StateError as exc:  # damaged: someone has to look at it, not a prune
        _log.warning("prune: instance %s skipped, its header cannot be read: %s",
                     key[len(HEADER_PREFIX):], exc)
        return None
