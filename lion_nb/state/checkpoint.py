"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._checkpoint import CheckpointInfo, CheckpointManager

__all__ = ["CheckpointInfo", "CheckpointManager"]
warnings.warn("lion_nb.state.checkpoint is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
