"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._storage import MemoryStorage, Storage

__all__ = ["MemoryStorage", "Storage"]
warnings.warn("lion_nb.state.storage is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
