"""Engine: scheduler, node context and results, the executor, history and the observe stream."""

from .context import NodeContext, NodeResult
from .executor import ExecutorConfig, NodeHandler, WorkflowExecutor
from .history import AttemptRecord, HistoryRecorder, InstanceRecord
from .observe import EventKind, ExecEvent, ObserveStream
from .result import InstanceResult
from .scheduler import SchedulerConfig, SchedulingPolicy, WorkflowScheduler

__all__ = ["NodeContext", "NodeResult", "ExecutorConfig", "NodeHandler", "WorkflowExecutor",
           "AttemptRecord", "HistoryRecorder", "InstanceRecord", "EventKind", "ExecEvent",
           "ObserveStream", "InstanceResult", "SchedulerConfig", "SchedulingPolicy",
           "WorkflowScheduler"]
