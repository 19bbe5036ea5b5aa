"""Deprecated: import these names from ``lion_nb.model``."""

import warnings

from ._definition import WorkflowBuilder, WorkflowDefinition

__all__ = ["WorkflowBuilder", "WorkflowDefinition"]
warnings.warn("lion_nb.model.definition is deprecated: import from lion_nb.model",
              DeprecationWarning, stacklevel=2)
