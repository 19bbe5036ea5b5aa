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
from typing import Container

from ..errors import StateError
from ..state.machine import INSTANCE_TERMINAL
from ..state.storage import Storage
from .durable import HEADER_PREFIX, definition_key, header_key, lease_key, node_prefix

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
    for key in await storage.keys(HEADER_PREFIX):
        iid = key[len(HEADER_PREFIX):]
        if iid in running:
            continue
        try:
            header = await storage.get(key)
        except StateError as exc:  # damaged: someone has to look at it, not a prune
            _log.warning("prune: instance %s skipped, its header cannot be read: %s", iid, exc)
            continue
        if header is None or header.get("state") not in _TERMINAL_VALUES:
            continue
        finished = header.get("finished_at") or header.get("updated_at")
        if not isinstance(finished, (int, float)) or finished > cutoff:
            continue
        doomed += [header_key(iid), definition_key(iid), lease_key(iid),
                   *await storage.keys(node_prefix(iid))]
        pruned += 1
        if pruned % _BATCH == 0:
            await storage.put_many([], deletes=doomed)
            doomed = []
    if doomed:
        await storage.put_many([], deletes=doomed)
    return pruned
