"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._run_view import RunView

__all__ = ["RunView"]
warn_moved(__name__)
