"""Engine: scheduler, node context and results, the executor, history and the observe stream."""

from ._cache import Cache
from ._cache_reason import CacheReason, NodeReason
from ._code_version import code_version
from ._context import NodeContext, NodeResult, ResultKind
from ._durable import (StoredInstance, header_key, lease_key, new_owner_id, node_key,
                       owner_is_dead, read_instance)
from ._executor import NodeHandler, Resumable, WorkflowExecutor
from ._executor_config import ExecutorConfig
from ._history import AttemptRecord, AttemptRows, HistoryRecorder, InstanceRecord
from ._observe import EventKind, ExecEvent, ObserveStream, Subscription
from ._result import InstanceResult
from ._run import RunProgress
from ._scheduler import (Priority, ScheduledTask, SchedulerConfig, SchedulerStatistics,
                         SchedulingPolicy, WorkflowScheduler)

__all__ = ["AttemptRecord", "AttemptRows", "Cache", "CacheReason", "EventKind", "ExecEvent",
           "ExecutorConfig", "HistoryRecorder", "InstanceRecord", "InstanceResult", "NodeContext",
           "NodeHandler", "NodeReason", "NodeResult", "ObserveStream", "Priority", "ResultKind",
           "Resumable", "RunProgress", "ScheduledTask", "SchedulerConfig", "SchedulerStatistics",
           "SchedulingPolicy", "StoredInstance", "Subscription", "WorkflowExecutor",
           "WorkflowScheduler", "code_version", "header_key", "lease_key", "new_owner_id",
           "node_key", "owner_is_dead", "read_instance"]


def __dir__() -> list[str]:
    # The public names; the modules behind them are private (old paths are shims).
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
