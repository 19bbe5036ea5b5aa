"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._event_view import EventView

__all__ = ["EventView"]
warn_moved(__name__)
