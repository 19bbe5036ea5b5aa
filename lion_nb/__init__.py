"""lion_nb: a Jupyter-first workflow engine — DAGs, scheduling, checkpoints, events, sagas.

    from lion_nb import WorkflowBuilder, Node, WorkflowExecutor
    a, b = Node("extract"), Node("load")
    flow = WorkflowBuilder("etl").add_nodes(a, b).connect(a, b).build()
    executor = WorkflowExecutor()
    executor.add_handler("extract", lambda ctx: {"rows": 3})
    executor.add_handler("load", lambda ctx: ctx.results["extract"]["rows"])
    await executor.start()
    result = await executor.run(flow)      # top-level await in Jupyter
"""

from __future__ import annotations

from typing import Any

from . import notebook as _notebook  # registers the display renderers (cheap, lazy)
from .engine import ExecutorConfig, NodeResult, WorkflowExecutor
from .engine import Priority, SchedulerConfig, SchedulingPolicy, WorkflowScheduler
from .errors import LionError
from .model import Edge, Node, RetryPolicy, TriggerRule, WorkflowBuilder, WorkflowDefinition

__version__ = "0.1.0"

__all__ = [
    "Edge", "ExecutorConfig", "LionError", "Node", "NodeResult", "Priority", "RetryPolicy",
    "SchedulerConfig", "SchedulingPolicy", "TriggerRule", "WorkflowBuilder",
    "WorkflowDefinition", "WorkflowExecutor", "WorkflowScheduler", "__version__",
]


def __getattr__(name: str) -> Any:
    # Notebook conveniences (Flow, run, RunView, ...) resolve lazily from lion_nb.notebook.
    try:
        return getattr(_notebook, name)
    except AttributeError:
        raise AttributeError(f"module 'lion_nb' has no attribute {name!r}") from None
