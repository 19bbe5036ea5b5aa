"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._picture import Picture, describe, picture

__all__ = ["Picture", "describe", "picture"]
warn_moved(__name__)
