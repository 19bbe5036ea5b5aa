"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._scheduler_view import SchedulerDecision, SchedulerView

__all__ = ["SchedulerDecision", "SchedulerView"]
warn_moved(__name__)
