"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._sqlite_storage import SqliteStorage

__all__ = ["SqliteStorage"]
warnings.warn("lion_nb.state.sqlite_storage is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
