"""Workflow model: ids, nodes, edges, conditions, definitions and the builder. Pure data."""

from .condition import Condition
from .definition import WorkflowBuilder, WorkflowDefinition
from .ids import EdgeId, InstanceId, NodeId, WorkflowId
from .node import Edge, Node, Priority, RetryPolicy, TriggerRule

__all__ = ["Condition", "WorkflowBuilder", "WorkflowDefinition", "EdgeId", "InstanceId",
           "NodeId", "WorkflowId", "Edge", "Node", "Priority", "RetryPolicy", "TriggerRule"]
