"""Why a node ran again, or was reused: one verdict per node per run."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["CacheReason", "NodeReason", "REUSED"]


class CacheReason(enum.StrEnum):
    """The reason a node ran (or did not) in a run with a cache or a re-run request."""

    REUSED = "reused"                #: an earlier result was used; the handler did not run
    FIRST_RUN = "first_run"          #: nothing cached for this node yet
    CODE_CHANGED = "code_changed"    #: its handler, or code the handler reaches, changed
    INPUT_CHANGED = "input_changed"  #: a predecessor's result, an input, config or edges
    FORCED = "forced"                #: ``rerun=`` / ``start_from=`` named it or an ancestor
    EXPIRED = "expired"              #: the cached result is older than the node's TTL
    NOT_CACHEABLE = "not_cacheable"  #: ``cache=False``, or something has no stable hash
    CORRUPT = "corrupt"              #: the cached entry failed its check (a warning says so)


class NodeReason(NamedTuple):
    """A node's reason, with a detail such as the predecessor whose result changed."""

    reason: CacheReason
    detail: str | None = None

    def __str__(self) -> str:
        text = self.reason.value.replace("_", " ")
        return f"{text}: {self.detail}" if self.detail else text


#: The verdict of a node reused without a detail: one shared object, so a batch of them is
#: recognised by identity (``list.count``) rather than compared field by field.
REUSED = NodeReason(CacheReason.REUSED)
