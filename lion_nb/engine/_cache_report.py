"""ReusedReport: the events of reused nodes, one ``NODES_REUSED`` per run of them.

A fully cached re-run settles thousands of nodes without running a handler;
one event (and one history row) per node would cost more than the reuse
itself. Reused nodes are collected while the run drains its ready nodes and
reported together before any other event of the run, so subscribers see
events in the order nodes ended. Subscribers that did not opt into
``NODES_REUSED`` still get one ``NODE_SUCCEEDED`` (reason "reused") per node.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from ._cache_reason import REUSED, NodeReason
from ._observe import EventKind as K
from ._observe import ExecEvent, ObserveStream

__all__ = ["ReusedReport"]

_BATCH = K.NODES_REUSED
_SINGLE = K.NODE_SUCCEEDED
# The event data of a node reused without a detail: one shared dict, never mutated.
_REUSED_DATA: dict[str, Any] = {"reason": "reused"}


class ReusedReport:
    """Reused nodes of one instance run not reported yet (engine-internal)."""

    __slots__ = ("pending", "_observe", "_instance_id", "_names", "_verdicts", "_time",
                 "_detailed")

    def __init__(self, observe: ObserveStream, instance_id: str, names: Sequence[str],
                 verdicts: list[NodeReason | None], time: Callable[[], float],
                 detailed: bool = True) -> None:
        """``detailed=False``: every reused node's verdict is ``REUSED``, with no detail."""
        #: Indices of reused nodes, in the order they were settled (one list, emptied by
        #: ``flush``: the run appends to it in its loop).
        self.pending: list[int] = []
        self._observe = observe
        self._instance_id = instance_id
        self._names = names
        self._verdicts = verdicts
        self._time = time
        self._detailed = detailed

    def flush(self) -> None:
        """Report the pending nodes (call before the run emits anything else)."""
        pending = self.pending
        if not pending:
            return
        obs = self._observe
        if obs.active:
            now = self._time()
            if obs.wants(_BATCH):
                # Built at C speed (map, count): a batch may hold every node of the run.
                names = list(map(self._names.__getitem__, pending))
                details = self._details(pending, names) if self._detailed else {}
                obs.emit(ExecEvent(_BATCH, now, self._instance_id, None, 0,
                                   {"nodes": names, "details": details}))
            if obs.wants_singles(_BATCH):
                obs.emit_singles(_BATCH, self._singles(pending, now))
        pending.clear()

    def _details(self, pending: list[int], names: list[str]) -> dict[str, str]:
        verdicts = list(map(self._verdicts.__getitem__, pending))
        if verdicts.count(REUSED) == len(verdicts):  # by identity, at C speed
            return {}
        return {name: v.detail for name, v in zip(names, verdicts)
                if v is not None and v.detail is not None}

    def _singles(self, pending: list[int], now: float) -> Iterator[ExecEvent]:
        names, verdicts, iid = self._names, self._verdicts, self._instance_id
        for i in pending:
            v = verdicts[i]
            data = _REUSED_DATA if v is None or v.detail is None else {
                "reason": "reused", "reason_detail": v.detail}
            yield ExecEvent(_SINGLE, now, iid, names[i], 0, data)
