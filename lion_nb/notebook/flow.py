"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._flow import Flow, Step

__all__ = ["Flow", "Step"]
warn_moved(__name__)
