"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._tables import (capability_audit_frame, deliveries_frame,
                      event_history_frame, saga_history_frame, saga_steps_frame,
                      scheduler_decisions_frame, scheduler_statistics_frame)

__all__ = [
    "capability_audit_frame", "deliveries_frame", "event_history_frame", "saga_history_frame",
    "saga_steps_frame", "scheduler_decisions_frame", "scheduler_statistics_frame",
]
warn_moved(__name__)
