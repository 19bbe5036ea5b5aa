"""JoinRule: decides when each node of one instance may run, from how its inputs ended.

In the style of ``graphlib.TopologicalSorter``: a pure object fed with node
outcomes (``done``) that answers with decisions; the run applies them (moves
states, emits events, commits, queues). It touches no clock, no storage and no
event stream, so every rule is testable on its own.

A node is decided when its last predecessor ends: it runs if at least one
incoming edge is active (ONE_SUCCESS, the default), every one is (ALL_SUCCESS),
or always (ALL_DONE); otherwise it is SKIPPED, or UPSTREAM_FAILED when a
predecessor failed, or FAILED when a condition on an incoming edge raised.
Nodes decided not to run count as ended in turn, so decisions propagate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConditionError
from ..model.node import TriggerRule
from ..state.machine import CODE, NodeState

if TYPE_CHECKING:
    from ..model.definition import WorkflowDefinition

__all__ = ["JoinRule"]

_SUCCEEDED = CODE[NodeState.SUCCEEDED]
_FAILED_CODES = (CODE[NodeState.FAILED], CODE[NodeState.UPSTREAM_FAILED])
_ONE_SUCCESS = TriggerRule.ONE_SUCCESS
_ALL_DONE = TriggerRule.ALL_DONE


class JoinRule:
    """Join counters of one instance; ``done(i, code, result)`` returns what it decided.

    A decision is an int: ``~t`` (negative) means "node t may run now"; ``t``
    means t ended without running, in ``verdict[t]`` (SKIPPED, UPSTREAM_FAILED,
    or FAILED with ``errors[t]``). Each node is decided at most once.
    """

    __slots__ = ("_targets", "_out", "_conds", "_rules", "_size", "remaining", "active",
                 "failed", "errors", "verdict", "_decided")

    def __init__(self, definition: "WorkflowDefinition") -> None:
        d = definition
        n = len(d.nodes)
        self._targets = d.edge_target
        self._out = d.out_edges
        self._conds = [e.condition for e in d.edges]
        self._rules = [node.trigger_rule for node in d.nodes]
        self._size = [len(e) for e in d.in_edges]
        self.remaining = list(self._size)
        self.active = [0] * n  # edges whose source succeeded and whose condition held
        self.failed = [0] * n  # edges whose source failed or was upstream-failed
        #: Condition errors, by the target node of the edge whose condition raised.
        self.errors: dict[int, ConditionError] = {}
        #: How the nodes this rule ended without running ended.
        self.verdict: dict[int, NodeState] = {}
        self._decided = bytearray(n)

    def ready(self) -> list[int]:
        """Nodes that may run at once (the roots); they count as decided."""
        out = [i for i, size in enumerate(self._size) if not size]
        for i in out:
            self._decided[i] = 1
        return out

    def done(self, i: int, code: int, result: Any) -> list[int]:
        """Node ``i`` ended with state ``code`` (and ``result`` if it succeeded)."""
        self._decided[i] = 1
        decided: list[int] = []
        self._settle([(i, code, result)], decided)
        return decided

    def restore(self, ended: dict[int, tuple[int, Any]]) -> list[int]:
        """Rebuild from nodes that ended before a restart: ``{index: (code, result)}``.

        Returns the decisions that are due now: the uncommitted roots and the
        nodes whose predecessors all ended (in topological order), as ``done``.
        """
        for i in ended:
            self._decided[i] = 1
        for i, (code, result) in ended.items():
            for k in self._out[i]:
                t = self._targets[k]
                if not self._decided[t]:
                    self._count(k, t, code, result)
        decided: list[int] = []
        for i, size in enumerate(self._size):
            if not size and not self._decided[i]:
                self._decided[i] = 1
                decided.append(~i)
        stack: list[tuple[int, int, Any]] = []
        for t in range(len(self._size)):
            if self._size[t] and not self._decided[t] and not self.remaining[t]:
                self._decide(t, decided, stack)
        self._settle(stack, decided)
        return decided

    # --- internals ---------------------------------------------------------------

    def _count(self, k: int, t: int, code: int, result: Any) -> None:
        """Count edge ``k`` into ``t`` whose source ended with ``code``."""
        if code == _SUCCEEDED:
            cond = self._conds[k]
            if cond is None:
                self.active[t] += 1
            else:
                try:
                    if cond.evaluate(result):
                        self.active[t] += 1
                except ConditionError as exc:
                    self.errors.setdefault(t, exc)
                    self.failed[t] += 1
        elif code in _FAILED_CODES:
            self.failed[t] += 1
        self.remaining[t] -= 1

    def _settle(self, stack: list[tuple[int, int, Any]], decided: list[int]) -> None:
        """Count the out-edges of each ended node on ``stack``; decide complete targets."""
        targets, out, remaining, flag = self._targets, self._out, self.remaining, self._decided
        active, failed, conds, rules = self.active, self.failed, self._conds, self._rules
        while stack:
            j, code, result = stack.pop()
            for k in out[j]:
                t = targets[k]
                if flag[t]:
                    continue
                # _count inlined: this loop runs once per edge of every instance
                if code == _SUCCEEDED and conds[k] is None:
                    active[t] += 1
                    remaining[t] -= 1
                else:
                    self._count(k, t, code, result)
                if not remaining[t]:
                    if not failed[t] and active[t] and rules[t] is _ONE_SUCCESS:
                        flag[t] = 1  # the default rule's usual outcome, decided inline
                        decided.append(~t)
                    else:
                        self._decide(t, decided, stack)

    def _decide(self, t: int, decided: list[int], stack: list[tuple[int, int, Any]]) -> None:
        """Every input of ``t`` ended: apply its trigger rule."""
        self._decided[t] = 1
        rule = self._rules[t]
        if rule is _ALL_DONE:
            decided.append(~t)
            return
        if t in self.errors:
            state = NodeState.FAILED
        elif self.failed[t]:
            state = NodeState.UPSTREAM_FAILED
        elif self.active[t] and (rule is _ONE_SUCCESS or self.active[t] == self._size[t]):
            decided.append(~t)
            return
        else:
            state = NodeState.SKIPPED
        self.verdict[t] = state
        decided.append(t)
        stack.append((t, CODE[state], None))
