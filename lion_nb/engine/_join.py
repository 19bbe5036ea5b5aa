"""JoinRule: decides when each node of one instance may run, from how its inputs ended.

In the style of ``graphlib.TopologicalSorter``: a pure object fed with node
outcomes (``done``) that answers with decisions; the run applies them (moves
states, emits events, commits, queues). It touches no clock, no storage and no
event stream, so every rule is testable on its own.

Each input edge of a node counts as one of: success (source succeeded, edge
active), failed, upstream_failed, or skipped (source skipped, or its condition
was false). The node's trigger rule reads those counts with Airflow's meanings
(docs/semantics.md has the table), and three rules of our own:

* a decision is taken as soon as no input still to come could change it (so
  ONE_SUCCESS fires at the first success and ALL_SUCCESS fails at the first
  failure) and never earlier, so outcomes do not depend on the order inputs end;
* a node with a false input edge and no active one does not run, whatever its
  rule (Airflow's branch operator skips the children it did not choose);
* a condition that raises fails the edge's target with the ConditionError.
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter, not_
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ConditionError
from ..model import TriggerRule as R
from ..state import NodeState
from ..state._machine import CODE

if TYPE_CHECKING:
    from ..model import WorkflowDefinition

__all__ = ["JoinRule"]

_RULE_OF = attrgetter("trigger_rule")
_SUCCEEDED = CODE[NodeState.SUCCEEDED]
_FAILED = CODE[NodeState.FAILED]
_UPSTREAM_FAILED = CODE[NodeState.UPSTREAM_FAILED]
_SKIPPED = CODE[NodeState.SKIPPED]
_DEFAULT = R.NONE_FAILED_MIN_ONE_SUCCESS
_ALWAYS = R.ALWAYS
_RUN = NodeState.QUEUED  # the verdict "may run now"
_SKIP, _UPFAIL = NodeState.SKIPPED, NodeState.UPSTREAM_FAILED


class JoinRule:
    """Join counters of one instance; ``done(i, code, result)`` returns what it decided.

    A decision is an int: ``~t`` (negative) means "node t may run now"; ``t``
    means t ended without running, in ``verdict[t]`` (SKIPPED, UPSTREAM_FAILED,
    or FAILED with ``errors[t]``). Each node is decided at most once; inputs that
    end after their target was decided are not counted (nor their conditions run).
    """

    __slots__ = ("_definition", "_conds", "_rules", "_size", "remaining", "active",
                 "failed", "upfailed", "skipped", "inactive", "_cond_left", "errors",
                 "verdict", "_decided", "_hot", "_stack")

    def __init__(self, definition: "WorkflowDefinition") -> None:
        d = self._definition = definition
        n = len(d.nodes)
        self._conds = d.conditions
        self._rules = list(map(_RULE_OF, d.nodes))
        self._size = d.in_degree
        self.remaining = list(self._size)
        self.active = [0] * n  # input edges whose source succeeded and condition held
        self.failed = [0] * n  # failed or upstream_failed
        self.upfailed = [0] * n  # upstream_failed only
        self.skipped = [0] * n  # including false edges
        self.inactive = [0] * n  # false edges only
        # Conditional input edges not counted yet: while any is left, a false edge may
        # still come, so a node that would run without an active edge must wait.
        self._cond_left = [0] * n
        if self._conds.count(None) != len(self._conds):  # in C: most graphs have none
            for k, cond in enumerate(self._conds):
                if cond is not None:
                    self._cond_left[d.edge_target[k]] += 1
        #: Condition errors, by the target node of the edge whose condition raised.
        self.errors: dict[int, ConditionError] = {}
        #: How the nodes this rule ended without running ended.
        self.verdict: dict[int, NodeState] = {}
        self._decided = bytearray(n)
        # What ``done`` reads for every edge, in one tuple: one load instead of eight.
        # Ends decided while ``done`` runs, to count onwards: empty between calls (one list
        # for all of them, not one per node).
        self._stack: list[tuple[int, int, Any]] = []
        self._hot = (d.out_edges, d.edge_target, self._conds, self._rules, self._decided,
                     self.remaining, self.active, self.failed, self._stack)

    def ready(self) -> list[int]:
        """Nodes that may run at once (roots, and ALWAYS nodes); they count as decided."""
        size, rules = self._size, self._rules
        out = list(compress(range(len(size)), map(not_, size)))  # the roots, found in C
        if _ALWAYS in rules:
            out = sorted(set(out).union(i for i, r in enumerate(rules) if r is _ALWAYS))
        for i in out:
            self._decided[i] = 1
        return out

    def done(self, i: int, code: int, result: Any) -> Sequence[int]:
        """Node ``i`` ended with state ``code`` (and ``result`` if it succeeded).

        Each out-edge costs O(1) whatever its target's in-degree: the end node of a
        10k fan-out counts its inputs one by one and is decided by the last. Most
        ends decide nothing: they get an empty tuple, not a list of their own.
        """
        out, targets, conds, rules, flag, remaining, active, failed, stack = self._hot
        flag[i] = 1
        decided: list[int] | None = None
        while True:
            for k in out[i]:
                t = targets[k]
                if flag[t]:
                    continue
                # the usual case inlined (this loop runs once per edge of every instance):
                # an unconditional edge from a success into a default-rule node
                if code == _SUCCEEDED and conds[k] is None:
                    active[t] += 1
                    left = remaining[t] = remaining[t] - 1
                    if rules[t] is not _DEFAULT or failed[t]:
                        if decided is None:
                            decided = []
                        self._decide(t, decided, stack)
                    elif not left:  # no failure and one active edge at least: run
                        flag[t] = 1
                        if decided is None:
                            decided = [~t]
                        else:
                            decided.append(~t)
                else:
                    if decided is None:
                        decided = []
                    self._count(k, t, code, result)
                    self._decide(t, decided, stack)
            if not stack:
                return () if decided is None else decided
            i, code, result = stack.pop()

    def restore(self, ended: dict[int, tuple[int, Any]]) -> list[int]:
        """Rebuild from nodes that ended before a restart: ``{index: (code, result)}``.

        Returns the decisions due now, as ``done`` does: the uncommitted roots and
        ALWAYS nodes, and the nodes the committed ones decide.
        """
        d = self._definition
        for i in ended:
            self._decided[i] = 1
        decided = [~i for i in self.ready() if i not in ended]
        stack: list[tuple[int, int, Any]] = []
        for i, (code, result) in ended.items():
            for k in d.out_edges[i]:
                t = d.edge_target[k]
                if not self._decided[t]:
                    self._count(k, t, code, result)
        for t in range(len(self._size)):
            if not self._decided[t]:
                self._decide(t, decided, stack)
        while stack:  # what those ends decide in turn
            decided += self.done(*stack.pop())
        return decided

    # --- internals ---------------------------------------------------------------

    def _count(self, k: int, t: int, code: int, result: Any) -> None:
        """Count edge ``k`` into ``t``, whose source ended with ``code``."""
        cond = self._conds[k]
        if cond is not None:
            self._cond_left[t] -= 1
        if code == _SUCCEEDED:
            if cond is None:
                self.active[t] += 1
            else:
                try:
                    ok = cond.evaluate(result)
                except ConditionError as exc:
                    self.errors.setdefault(t, self._edge_error(k, exc))
                    ok = False
                if ok:
                    self.active[t] += 1
                else:
                    self.skipped[t] += 1
                    self.inactive[t] += 1
        elif code == _FAILED:
            self.failed[t] += 1
        elif code == _UPSTREAM_FAILED:
            self.failed[t] += 1
            self.upfailed[t] += 1
        elif code == _SKIPPED:
            self.skipped[t] += 1
        self.remaining[t] -= 1

    def _edge_error(self, k: int, exc: ConditionError) -> ConditionError:
        d = self._definition
        source, target = d.nodes[d.edge_source[k]].name, d.nodes[d.edge_target[k]].name
        err = ConditionError(f"condition on edge {source!r} -> {target!r} raised: {exc}",
                             expression=getattr(exc, "expression", None),
                             edge=str(d.edge_id(k)), source=source, target=target)
        err.__cause__ = exc
        return err

    def _decide(self, t: int, decided: list[int], stack: list[tuple[int, int, Any]]) -> None:
        """Apply ``t``'s trigger rule to its counts so far; record a verdict if there is one."""
        verdict = NodeState.FAILED if t in self.errors else self._rule(t)
        if verdict is None:
            return
        if verdict is _RUN and not self.active[t] and (self.inactive[t]
                                                       or self._cond_left[t]):
            if self.remaining[t]:
                return  # an active edge may still come, or a false one: wait
            verdict = _SKIP  # a false edge and no active one: not chosen by its branch
        self._decided[t] = 1
        if verdict is _RUN:
            decided.append(~t)
            return
        self.verdict[t] = verdict
        decided.append(t)
        stack.append((t, CODE[verdict], None))

    def _rule(self, t: int) -> NodeState | None:
        """The trigger rule's verdict on ``t``'s counts, or None while it must wait.

        Early verdicts are the ones no input still to come could change.
        """
        rule = self._rules[t]
        s, bad, k = self.active[t], self.failed[t], self.skipped[t]
        f = bad - self.upfailed[t]  # failed itself (ONE_DONE does not count upstream_failed)
        left = self.remaining[t]
        if rule is _DEFAULT:
            return _UPFAIL if bad else None if left else _SKIP if k == self._size[t] else _RUN
        if rule is R.ALL_SUCCESS:
            return _UPFAIL if bad else None if left else _SKIP if k else _RUN
        if rule is R.ALL_FAILED:
            return _SKIP if s or k else None if left else _RUN
        if rule is R.ALL_DONE:
            return None if left else _RUN
        if rule is R.ALL_DONE_MIN_ONE_SUCCESS:
            return _SKIP if k else None if left else _RUN if s else _UPFAIL
        if rule is R.ALL_SKIPPED:
            return _SKIP if s or bad else None if left else _RUN
        if rule is R.ONE_SUCCESS:
            return _RUN if s else None if left else _SKIP if k == self._size[t] else _UPFAIL
        if rule is R.ONE_FAILED:
            return _RUN if bad else None if left else _SKIP
        if rule is R.ONE_DONE:
            return _RUN if s or f else None if left else _SKIP
        if rule is R.NONE_FAILED:
            return _UPFAIL if bad else None if left else _RUN
        if rule is R.NONE_SKIPPED:
            return _SKIP if k else None if left else _RUN
        return _RUN  # ALWAYS (decided at start; here only after a restart)
