"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._tables import attempts_frame, history_records, instances_frame

__all__ = ["attempts_frame", "history_records", "instances_frame"]
warn_moved(__name__)
