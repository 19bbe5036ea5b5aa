"""Deprecated: import these names from ``lion_nb.model``."""

import warnings

from ._ids import EdgeId, InstanceId, NodeId, WorkflowId

__all__ = ["EdgeId", "InstanceId", "NodeId", "WorkflowId"]
warnings.warn("lion_nb.model.ids is deprecated: import from lion_nb.model",
              DeprecationWarning, stacklevel=2)
