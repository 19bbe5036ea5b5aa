"""Instance and node state machines that refuse illegal transitions.

The executor keeps node states as small ints in a list (one per node index)
and checks every move against a precomputed table; StateMachineManager ties
that to storage so committed states survive a crash when storage is durable.
"""

from __future__ import annotations

import enum
from typing import Iterable

from ..errors import IllegalTransitionError
from ._storage import MemoryStorage, Storage

__all__ = ["CODE", "INSTANCE_TERMINAL", "LEGAL", "NODE_ORDER", "InstanceState", "NodeState",
           "NodeStates", "StateMachineManager", "check_instance_transition"]


class NodeState(enum.StrEnum):
    """Where a node of one instance is."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"


class InstanceState(enum.StrEnum):
    """Where an instance (one run of a workflow) is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_N = NodeState
NODE_ORDER: tuple[NodeState, ...] = tuple(NodeState)
INSTANCE_TERMINAL = frozenset({InstanceState.SUCCEEDED, InstanceState.FAILED,
                               InstanceState.CANCELLED})

_NODE_MOVES: dict[NodeState, frozenset[NodeState]] = {
    # PENDING -> FAILED: a condition on an incoming edge could not be evaluated.
    _N.PENDING: frozenset({_N.QUEUED, _N.SKIPPED, _N.UPSTREAM_FAILED, _N.CANCELLED,
                           _N.FAILED}),
    # QUEUED -> FAILED/SKIPPED: refused at dispatch (capability denied, deadline missed).
    _N.QUEUED: frozenset({_N.RUNNING, _N.FAILED, _N.SKIPPED, _N.CANCELLED}),
    _N.RUNNING: frozenset({_N.SUCCEEDED, _N.FAILED, _N.RETRYING, _N.SKIPPED, _N.CANCELLED}),
    _N.RETRYING: frozenset({_N.QUEUED, _N.CANCELLED}),
}
_INSTANCE_MOVES: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.PENDING: frozenset({InstanceState.RUNNING, InstanceState.FAILED,
                                      InstanceState.CANCELLED}),
    InstanceState.RUNNING: INSTANCE_TERMINAL,
}

# Integer codes and a flat legality table: the executor's hot path indexes it.
CODE = {s: i for i, s in enumerate(NODE_ORDER)}
_K = len(NODE_ORDER)
_LEGAL = bytearray(_K * _K)
for _src, _dsts in _NODE_MOVES.items():
    for _dst in _dsts:
        _LEGAL[CODE[_src] * _K + CODE[_dst]] = 1
#: ``LEGAL[src_code * len(NODE_ORDER) + dst_code]`` is 1 for an allowed move (hot paths).
LEGAL = bytes(_LEGAL)


def check_instance_transition(instance_id: str, src: InstanceState, dst: InstanceState) -> None:
    """Raise IllegalTransitionError unless an instance may move ``src -> dst``."""
    if dst not in _INSTANCE_MOVES.get(src, ()):
        raise IllegalTransitionError(
            f"instance {instance_id}: illegal transition {src.value} -> {dst.value}",
            entity=instance_id, from_state=src, to_state=dst)


class NodeStates:
    """The node states of one instance, as int codes, with legality checks."""

    __slots__ = ("codes", "names", "instance_id")

    def __init__(self, names: Iterable[str], instance_id: str) -> None:
        self.names = list(names)
        self.codes = bytearray(len(self.names))  # all PENDING (code 0)
        self.instance_id = instance_id

    def move(self, i: int, dst: NodeState) -> None:
        """Move node ``i`` to ``dst`` or raise IllegalTransitionError naming it."""
        d = CODE[dst]
        s = self.codes[i]
        if not _LEGAL[s * _K + d]:
            raise IllegalTransitionError(
                f"node {self.names[i]!r} of instance {self.instance_id}: illegal transition "
                f"{NODE_ORDER[s].value} -> {dst.value}", entity=self.names[i],
                from_state=NODE_ORDER[s], to_state=dst)
        self.codes[i] = d

    def restore(self, i: int, state: NodeState) -> None:
        """Set a state read back from a checkpoint (no transition check)."""
        self.codes[i] = CODE[state]

    def __getitem__(self, i: int) -> NodeState:
        return NODE_ORDER[self.codes[i]]

    def as_dict(self) -> dict[str, NodeState]:
        """Node name -> state."""
        return {n: NODE_ORDER[c] for n, c in zip(self.names, self.codes)}


class StateMachineManager:
    """Names the storage that committed instance and node states go to.

    With a non-durable storage (MemoryStorage) nothing is written per node:
    state lives in the executor's tables. With a durable one, every finished
    node is committed atomically with the states it decided.
    """

    def __init__(self, storage: Storage | None = None) -> None:
        self.storage = storage if storage is not None else MemoryStorage()

    @property
    def durable(self) -> bool:
        """Whether committed state survives the process."""
        return bool(getattr(self.storage, "durable", False))

