"""Deprecated: import these names from ``lion_nb.patterns``."""

import warnings

from ._triggers import WorkflowTrigger, connect_broker

__all__ = ["WorkflowTrigger", "connect_broker"]
warnings.warn("lion_nb.patterns.triggers is deprecated: import from lion_nb.patterns",
              DeprecationWarning, stacklevel=2)
