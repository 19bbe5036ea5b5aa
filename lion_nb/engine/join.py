"""The join rule and crash restore of an instance, as a mixin of InstanceRun.

A node is decided when its last predecessor ends: it runs if at least one
incoming edge is active (ONE_SUCCESS, the default), every one is (ALL_SUCCESS),
or always (ALL_DONE); otherwise it is SKIPPED, or UPSTREAM_FAILED when a
predecessor failed. Decisions that end a node propagate further.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConditionError, NodeFailedError
from ..model.node import TriggerRule
from ..state.machine import CODE, InstanceState, NodeState
from .observe import EventKind as K
from .observe import ExecEvent

__all__ = ["JoinRule"]

_TERMINAL = frozenset(CODE[s] for s in (NodeState.SUCCEEDED, NodeState.FAILED,
                                         NodeState.SKIPPED, NodeState.UPSTREAM_FAILED,
                                         NodeState.CANCELLED))
_SUCCEEDED = CODE[NodeState.SUCCEEDED]
_FAILED_CODES = (CODE[NodeState.FAILED], CODE[NodeState.UPSTREAM_FAILED])
_END_KIND = {NodeState.SKIPPED: K.NODE_SKIPPED, NodeState.UPSTREAM_FAILED: K.NODE_UPSTREAM_FAILED,
             NodeState.CANCELLED: K.NODE_CANCELLED, NodeState.FAILED: K.NODE_FAILED}


class JoinRule:
    """Successor bookkeeping for InstanceRun, which provides the attributes below
    and the ``queue(i)``, ``finish()`` and ``attempt_data(i)`` methods used here."""

    definition: Any
    states: Any
    results: list[Any]
    errors: dict[int, BaseException]
    attempts: list[int]
    remaining: list[int]
    active_in: list[int]
    failed_in: list[int]
    unfinished: int
    first_failed: int | None
    observe: Any
    clock: Any
    instance_id: str
    state: InstanceState
    _conds: list[Any]

    def propagate(self, i: int, decided: list[int]) -> None:
        """Node ``i`` is terminal: update its successors and decide those now complete.

        Nodes decided SKIPPED/UPSTREAM_FAILED/FAILED here go into ``decided``
        (for the durable commit); runnable ones are queued by the caller.
        """
        d = self.definition
        codes = self.states.codes
        stack = [i]
        while stack:
            j = stack.pop()
            ok = codes[j] == _SUCCEEDED
            failed = codes[j] in _FAILED_CODES
            for k in d.out_edges[j]:
                t = d.edge_target[k]
                if ok:
                    cond = self._conds[k]
                    if cond is None:
                        self.active_in[t] += 1
                    else:
                        try:
                            if cond.evaluate(self.results[j]):
                                self.active_in[t] += 1
                        except ConditionError as exc:
                            self.errors.setdefault(t, exc)
                            self.failed_in[t] += 1
                elif failed:
                    self.failed_in[t] += 1
                self.remaining[t] -= 1
                if self.remaining[t] == 0 and codes[t] not in _TERMINAL:
                    if self._decide(t, decided):
                        stack.append(t)

    def _decide(self, t: int, decided: list[int]) -> bool:
        """Apply the trigger rule; True if ``t`` ended without running (propagate it)."""
        node = self.definition.nodes[t]
        rule = node.trigger_rule
        if rule is TriggerRule.ALL_DONE:
            decided.append(~t)  # ~t marks "queue me" for the caller
            return False
        if t in self.errors and isinstance(self.errors[t], ConditionError):
            self._end_node(t, NodeState.FAILED, self.errors[t])
        elif self.failed_in[t]:
            self._end_node(t, NodeState.UPSTREAM_FAILED, None)
        elif self.active_in[t] and (rule is TriggerRule.ONE_SUCCESS
                                    or self.active_in[t] == len(self.definition.in_edges[t])):
            decided.append(~t)
            return False
        else:
            self._end_node(t, NodeState.SKIPPED, None)
        decided.append(t)
        return True

    def _end_node(self, i: int, state: NodeState, error: BaseException | None) -> None:
        """Terminal state for a node that will not run (again)."""
        self.states.move(i, state)
        self.unfinished -= 1
        if error is not None:
            self.errors[i] = error
        if state is NodeState.FAILED and self.first_failed is None:
            self.first_failed = i
        kind = _END_KIND[state]
        if self.observe.wants(kind):
            data = self.attempt_data(i)
            if error is not None:
                data["error"] = repr(error)
            self.observe.emit(ExecEvent(kind, self.clock.time(), self.instance_id,
                                        self.definition.nodes[i].name, self.attempts[i], data))

    def restore(self, committed: dict[int, tuple[NodeState, Any, int, str | None]]) -> None:
        """Rebuild from committed node records ``{index: (state, output, attempts, error)}``.

        Committed nodes keep their state and output and never run again; join
        counters are recomputed from them, and whatever is now decidable is
        queued (roots and nodes whose predecessors all committed) or decided.
        """
        d = self.definition
        codes = self.states.codes
        for i, (state, output, attempts, error) in committed.items():
            self.states.restore(i, state)
            self.results[i] = output if state is NodeState.SUCCEEDED else None
            self.attempts[i] = attempts
            self.unfinished -= 1
            if state is NodeState.FAILED:
                self.errors[i] = NodeFailedError(
                    f"node {d.nodes[i].name!r} failed before the restart: {error}",
                    node=d.nodes[i].name, instance_id=self.instance_id, attempt=attempts)
                if self.first_failed is None:
                    self.first_failed = i
            if self.observe.wants(K.NODE_RESTORED):
                self.observe.emit(ExecEvent(K.NODE_RESTORED, self.clock.time(),
                                            self.instance_id, d.nodes[i].name, attempts,
                                            {"state": state.value}))
        self.state = InstanceState.RUNNING
        for k in range(len(d.edges)):
            src, t = d.edge_source[k], d.edge_target[k]
            if codes[src] not in _TERMINAL:
                continue
            self.remaining[t] -= 1
            if codes[src] == _SUCCEEDED:
                cond = self._conds[k]
                try:
                    if cond is None or cond.evaluate(self.results[src]):
                        self.active_in[t] += 1
                except ConditionError as exc:
                    self.errors.setdefault(t, exc)
                    self.failed_in[t] += 1
            elif codes[src] in _FAILED_CODES:
                self.failed_in[t] += 1
        for node in d.topological_order():
            i = d.index[node.id]
            if codes[i] in _TERMINAL or self.remaining[i] or codes[i] != 0:
                continue
            if not d.in_edges[i]:
                self.queue(i)
                continue
            decided: list[int] = []
            if self._decide(i, decided):
                self.propagate(i, decided)
            for t in decided:
                if t < 0:
                    self.queue(~t)
        if self.unfinished == 0:
            self.finish()
