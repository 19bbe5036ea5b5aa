"""Engine: scheduler, node context and results, the executor, history and the observe stream."""

from ._cache import Cache
from ._cache_reason import CacheReason, NodeReason
from ._code_version import code_version
from ._executor_config import ExecutorConfig
from ._result import InstanceResult
from ._run import RunProgress
from .context import NodeContext, NodeResult
from .durable import StoredInstance, read_instance
from .executor import NodeHandler, Resumable, WorkflowExecutor
from .history import AttemptRecord, HistoryRecorder, InstanceRecord
from .observe import EventKind, ExecEvent, ObserveStream
from .scheduler import SchedulerConfig, SchedulingPolicy, WorkflowScheduler

__all__ = ["AttemptRecord", "Cache", "CacheReason", "EventKind", "ExecEvent", "ExecutorConfig", "HistoryRecorder",
           "InstanceRecord", "InstanceResult", "NodeContext", "NodeHandler", "NodeReason",
           "NodeResult",
           "ObserveStream", "Resumable", "RunProgress", "SchedulerConfig", "SchedulingPolicy", "StoredInstance",
           "WorkflowExecutor", "WorkflowScheduler", "code_version", "read_instance"]
