"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._history import AttemptRecord, AttemptRows, HistoryRecorder, InstanceRecord

__all__ = ["AttemptRecord", "AttemptRows", "HistoryRecorder", "InstanceRecord"]
warnings.warn("lion_nb.engine.history is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
