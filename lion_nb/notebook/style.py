"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._style import ERROR_STATES, STATE_ORDER, STATE_STYLE, TERMINAL_STATES, StateStyle, style_for

__all__ = [
    "ERROR_STATES", "STATE_ORDER", "STATE_STYLE", "StateStyle", "TERMINAL_STATES", "style_for",
]
warn_moved(__name__)
