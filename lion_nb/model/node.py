"""Deprecated: import these names from ``lion_nb.model``."""

import warnings

from ._edge import Edge
from ._node import Node, Priority, TriggerRule
from ._retry import RetryPolicy

__all__ = ["Edge", "Node", "Priority", "RetryPolicy", "TriggerRule"]
warnings.warn("lion_nb.model.node is deprecated: import from lion_nb.model",
              DeprecationWarning, stacklevel=2)
