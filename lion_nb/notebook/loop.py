"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._loop import nesting_applied, run

__all__ = ["nesting_applied", "run"]
warn_moved(__name__)
