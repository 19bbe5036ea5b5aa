"""Workflow model: ids, nodes, edges, conditions, definitions and the builder. Pure data."""

from ._condition import Condition, Expression
from ._definition import WorkflowBuilder, WorkflowDefinition
from ._edge import Edge
from ._ids import EdgeId, InstanceId, NodeId, WorkflowId
from ._node import Node, Priority, TriggerRule
from ._retry import RetryPolicy

__all__ = ["Condition", "Edge", "EdgeId", "Expression", "InstanceId", "Node", "NodeId", "Priority",
           "RetryPolicy", "TriggerRule", "WorkflowBuilder", "WorkflowDefinition", "WorkflowId"]


def __dir__() -> list[str]:
    # The public names; the modules behind them are private (old paths are shims).
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
