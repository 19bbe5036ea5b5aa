"""What a handler receives (NodeContext) and may return (NodeResult)."""

from __future__ import annotations

import enum
import logging
from typing import Any, Callable, Mapping, Protocol

from ..model import Node, WorkflowDefinition

__all__ = ["NodeContext", "NodeResult", "ResultKind"]

_REMOTE_TOKEN_TTL = 300.0  # seconds a token shipped with remote work stays valid


class _Run(Protocol):
    """What a NodeContext reads of the instance it belongs to (InstanceRun provides it)."""

    instance_id: str
    definition: WorkflowDefinition
    grants: Any
    resource_gate: Callable[..., Any]
    scheduler: Any

    def predecessor_results(self, i: int) -> dict[str, Any]: ...

    def yielding_task(self, i: int, started: float) -> Any: ...

    def node_inputs(self, i: int) -> Mapping[str, Any]: ...

    async def publish(self, node: str, topic: str, payload: Any) -> None: ...


class ResultKind(enum.StrEnum):
    """How a handler says it ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIP = "skip"


class NodeResult:
    """A handler's explicit outcome: ``NodeResult.success(node_id, output)`` and friends.

    Returning a plain value is the same as ``success`` with that output; raising
    is the same as ``failure`` with the exception.
    """

    __slots__ = ("kind", "node_id", "output", "error")

    def __init__(self, kind: ResultKind, node_id: Any, output: Any = None,
                 error: BaseException | str | None = None) -> None:
        self.kind = kind
        self.node_id = node_id
        self.output = output
        self.error = error

    @classmethod
    def success(cls, node_id: Any, output: Any = None) -> "NodeResult":
        """The node succeeded with ``output`` (must be JSON-serializable by default)."""
        return cls(ResultKind.SUCCESS, node_id, output)

    @classmethod
    def failure(cls, node_id: Any, error: BaseException | str) -> "NodeResult":
        """The node failed (it is retried if its retry policy allows)."""
        return cls(ResultKind.FAILURE, node_id, None, error)

    @classmethod
    def skip(cls, node_id: Any, reason: str = "") -> "NodeResult":
        """The node decided not to run; its outgoing edges are inactive."""
        return cls(ResultKind.SKIP, node_id, reason or None)

    def __repr__(self) -> str:
        shown = self.output if self.error is None else self.error
        return f"NodeResult.{self.kind.value}({shown!r})"


class NodeContext:
    """Everything a handler may use: ids, config, predecessor results, resources, yielding.

    ``results`` maps predecessor names to their outputs (only predecessors
    that succeeded); ``inputs`` are the instance's inputs; ``attempt`` starts at
    1; ``idempotency_key`` is stable across retries and resumes, so a handler
    can make its side effects idempotent.
    """

    __slots__ = ("_run", "_index", "_task", "attempt", "_logger", "worker")

    def __init__(self, run: _Run, index: int, task: Any, attempt: int) -> None:
        # ``task``: the attempt's ScheduledTask, or (dispatched as a plain FIFO call) the
        # monotonic time of its dispatch, from which ``yield_now`` makes one when first asked.
        self._run = run
        self._index = index
        self._task = task
        self.attempt = attempt
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.worker: str | None = None  # set by a runner that ran the attempt elsewhere

    @property
    def instance_id(self) -> str:
        """The running instance."""
        return self._run.instance_id

    @property
    def node(self) -> Node:
        """The node being run."""
        return self._run.definition.nodes[self._index]

    @property
    def current_node_id(self) -> Any:
        """The id of the node being run."""
        return self._run.definition.nodes[self._index].id

    @property
    def node_name(self) -> str:
        """The name of the node being run."""
        return self._run.definition.nodes[self._index].name

    @property
    def config(self) -> Mapping[str, Any]:
        """The node's configuration (read-only)."""
        return self._run.definition.nodes[self._index].config

    @property
    def inputs(self) -> Mapping[str, Any]:
        """The inputs given to ``execute_workflow`` (read-only)."""
        return self._run.node_inputs(self._index)

    @property
    def results(self) -> dict[str, Any]:
        """Outputs of the predecessors that succeeded, by node name."""
        return self._run.predecessor_results(self._index)

    @property
    def grant_tokens(self) -> tuple[str, ...]:
        """This node's tokens for remote runners: one per declared requirement, short-lived.

        A node that declared no ``requires`` gets none; the others get tokens
        narrowed to exactly what they declared, expiring within five minutes.
        """
        grants, requires = self._run.grants, self.node.requires
        if grants is None or not requires:
            return ()
        narrowed = grants.narrow(requires, expires_in=_REMOTE_TOKEN_TTL, node=self.node_name)
        return tuple(t.serialize() for t in narrowed.tokens)

    @property
    def idempotency_key(self) -> str:
        """``"<instance>:<node>"``: the same for every attempt and after resume."""
        return f"{self._run.instance_id}:{self.node_name}"

    @property
    def logger(self) -> "logging.LoggerAdapter[logging.Logger]":
        """A logger whose records carry the instance and node."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger("lion_nb.node"),
                {"instance_id": self.instance_id, "node": self.node_name})
        return self._logger

    def resource(self, name: str, action: str, scope: str | None = None) -> Any:
        """The registered resource ``name``, if this node holds a grant for ``action`` on it."""
        return self._run.resource_gate(self.node, name, action, scope)

    async def yield_now(self) -> None:
        """Cooperative preemption point: let a more urgent task run if the time slice is up."""
        task = self._task
        if type(task) is float:
            task = self._task = self._run.yielding_task(self._index, task)
        if task is not None:
            await self._run.scheduler.yield_point(task)

    async def publish(self, topic: str, payload: Any) -> None:
        """Publish an event (headers name this instance and node) through the executor's sink."""
        await self._run.publish(self.node_name, topic, payload)

    def __repr__(self) -> str:
        return f"NodeContext(instance={self.instance_id}, node={self.node_name!r}, " \
               f"attempt={self.attempt})"
