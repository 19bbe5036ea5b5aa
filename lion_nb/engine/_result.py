"""InstanceResult: a snapshot of one instance that notebooks display and tests inspect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from .. import _display
from ..model import WorkflowDefinition
from ..errors import LionError, NoResultError
from ..state import InstanceState, NodeState
from ._cache_reason import CacheReason, NodeReason

__all__ = ["InstanceResult", "NodeColumn"]


class NodeColumn(Mapping[str, Any]):
    """A read-only mapping node name -> value, read from a finished run's per-node columns.

    A finished run's columns never change, so its result keeps these instead of
    three dicts of every node, and makes a dict of one only when it is read
    (see ``_DictOnRead``). ``only`` keeps the nodes for which it is true.
    """

    __slots__ = ("_names", "_index", "_value", "_only", "_len")

    def __init__(self, names: Sequence[str], index: Mapping[str, int],
                 value: Callable[[int], Any],
                 only: Callable[[int], bool] | None = None) -> None:
        self._names, self._index, self._value, self._only = names, index, value, only
        self._len: int | None = None if only is not None else len(names)

    def __getitem__(self, name: str) -> Any:
        i = self._index.get(name)
        if i is None or (self._only is not None and not self._only(i)):
            raise KeyError(name)
        return self._value(i)

    def __contains__(self, name: object) -> bool:
        i = self._index.get(name) if isinstance(name, str) else None
        return i is not None and (self._only is None or self._only(i))

    def __iter__(self) -> Iterator[str]:
        only, names = self._only, self._names
        if only is None:
            return iter(names)
        return (names[i] for i in range(len(names)) if only(i))

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def __repr__(self) -> str:
        return repr(dict(self))

_SKIPPED = "no active incoming edge, a false condition, or its handler returned a skip"


@dataclass(kw_only=True, eq=False, repr=False)
class InstanceResult:
    """State, node states, attempts, results and errors of an instance at one moment.

    ``result["Node"]`` is that node's output; ``check()`` raises the instance's
    error (WorkflowFailedError, with the node's exception chained) unless it
    succeeded. ``executor.wait``/``snapshot`` make them.
    """

    _display_kind = "instance"

    instance_id: str
    definition: WorkflowDefinition
    state: InstanceState
    node_states: dict[str, NodeState]
    attempts: dict[str, int]
    results: dict[str, Any]
    exceptions: dict[str, BaseException]
    error: BaseException | None
    started_at: float
    finished_at: float | None
    #: Why each node ran or was reused (runs with a cache or a re-run request).
    reasons: dict[str, NodeReason] = field(default_factory=dict)
    #: Why a SKIPPED node was skipped, where one cause decided it: a capability denial
    #: under ``on_denied="skip"`` names what was missing. Skips are not failures, so
    #: they are never in ``errors``/``exceptions``.
    skip_reasons: dict[str, str] = field(default_factory=dict)
    #: Nodes read back from durable storage by ``resume``: they ended before the restart
    #: (their state, output and attempts are the committed ones) and did not run again.
    restored: frozenset[str] = field(default_factory=frozenset)
    workflow: str = field(init=False)
    errors: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.workflow = self.definition.name
        self.errors = {k: str(e) for k, e in self.exceptions.items()}
        self.reasons = dict(self.reasons)

    @property
    def reused(self) -> list[str]:
        """Nodes whose result came from the cache or the last run: their handler did not run."""
        reused = CacheReason.REUSED  # an enum member read once, not per node
        return [n for n, v in self.reasons.items() if v.reason is reused]

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (None while running)."""
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def succeeded(self) -> bool:
        """Whether the instance ended SUCCEEDED."""
        return self.state is InstanceState.SUCCEEDED

    def counts(self) -> dict[str, int]:
        """Number of nodes per state (only states present)."""
        out: dict[str, int] = {}
        for s in self.node_states.values():
            out[s.value] = out.get(s.value, 0) + 1
        return out

    def check(self) -> "InstanceResult":
        """Return self if the instance succeeded, else raise its error."""
        if self.state is not InstanceState.SUCCEEDED:
            if self.error is not None:
                raise self.error
            raise RuntimeError(f"instance {self.instance_id} is {self.state.value}")
        return self

    def __getitem__(self, node_name: str) -> Any:
        try:
            return self.results[node_name]
        except KeyError:
            raise NoResultError(self._why_no_result(node_name), node=node_name,
                                state=getattr(self.node_states.get(node_name), "value", None)
                                ) from None

    def _why_no_result(self, name: str) -> str:
        state = self.node_states.get(name)
        if state is None:
            return (f"workflow {self.workflow!r} has no node {name!r} "
                    f"(nodes: {', '.join(sorted(self.node_states)[:10])})")
        why = {
            NodeState.FAILED: f"it failed: {self.errors.get(name, 'no error recorded')}",
            NodeState.SKIPPED: f"it was skipped ({self.skip_reasons.get(name, _SKIPPED)})",
            NodeState.UPSTREAM_FAILED: "a node it depends on failed"
            + (f" ({', '.join(self._failed_upstream(name))})"
               if self._failed_upstream(name) else ""),
        }.get(state, f"it is {state.value}")
        return f"node {name!r} has no result: {why}"

    def _failed_upstream(self, name: str) -> list[str]:
        d = self.definition
        try:
            preds = d.predecessors(name)
        except LionError:
            return []
        return [p.name for p in preds
                if self.node_states.get(p.name) in (NodeState.FAILED, NodeState.UPSTREAM_FAILED)]

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return (f"InstanceResult({self.workflow!r}, {self.instance_id}, {self.state.value}; "
                f"{counts})")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)


class _DictOnRead:
    """A field that holds a mapping as given and reads as a plain dict (made on first read).

    A 10k-node result costs three dicts of 10k entries; most callers read one
    node or none, so the dicts are built when the field is first read.
    """

    def __init__(self, name: str) -> None:
        self.name = f"_{name}"

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name]
        if type(value) is not dict:
            value = obj.__dict__[self.name] = dict(value)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


# Installed after @dataclass has written __init__, which then assigns through them.
for _name in ("node_states", "attempts", "results"):
    setattr(InstanceResult, _name, _DictOnRead(_name))
