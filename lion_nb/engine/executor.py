"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._executor import ExecutorConfig, NodeHandler, Resumable, WorkflowExecutor

__all__ = ["ExecutorConfig", "NodeHandler", "Resumable", "WorkflowExecutor"]
warnings.warn("lion_nb.engine.executor is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
