"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._observe import EventKind, ExecEvent, ObserveStream, Subscription

__all__ = ["EventKind", "ExecEvent", "ObserveStream", "Subscription"]
warnings.warn("lion_nb.engine.observe is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
