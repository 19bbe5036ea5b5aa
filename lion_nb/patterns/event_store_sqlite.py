"""Deprecated module: import SqliteEventStore from :mod:`lion_nb.patterns.events`."""

import warnings

from .events import SqliteEventStore

__all__ = ["SqliteEventStore"]
warnings.warn("lion_nb.patterns.event_store_sqlite is deprecated; import from "
              "lion_nb.patterns.events", DeprecationWarning, stacklevel=2)
