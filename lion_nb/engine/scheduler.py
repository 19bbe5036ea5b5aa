"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._scheduler import (Priority, ScheduledTask, SchedulerConfig, SchedulerStatistics,
                         SchedulingPolicy, WorkflowScheduler)

__all__ = ["Priority", "ScheduledTask", "SchedulerConfig", "SchedulerStatistics",
           "SchedulingPolicy", "WorkflowScheduler"]
warnings.warn("lion_nb.engine.scheduler is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
