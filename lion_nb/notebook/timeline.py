"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._timeline import Timeline, timeline

__all__ = ["Timeline", "timeline"]
warn_moved(__name__)
