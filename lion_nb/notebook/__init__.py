"""The notebook layer: inline pictures, pandas tables, timelines, live views, Flow.

Importing it is cheap: it registers display renderers and nothing heavy
(graphviz, pandas, ipywidgets load on first use)::

    import lion_nb.notebook as nb
    definition                      # displays as SVG (system dot or WebAssembly);
                                    # so do instances, saga definitions and saga instances
    nb.picture(definition, full=True)
    nb.attempts_frame(executor)     # one row per node attempt, proper dtypes
    nb.timeline(executor)           # Gantt chart of a run's attempts, as SVG
    nb.RunView(executor)            # live widgets following the next run
    nb.SchedulerView(scheduler)     # queue depths, slots, waits, policy; also SagaView, EventView
    nb.deliveries_frame(broker)     # and saga_steps_frame, capability_audit_frame, ...
    flow = nb.Flow("etl")           # decorator builder; await flow.run() / flow.run_sync()
    nb.run(coro)                    # sync helper: scripts and inside Jupyter's loop
"""

from __future__ import annotations

import importlib
from typing import Any

from .. import _display

__all__ = [
    "STATE_STYLE", "StateStyle",
    "workflow_dot", "instance_dot", "render_svg", "RenderOutcome",
    "Picture", "picture", "describe",
    "attempts_frame", "instances_frame",
    "Timeline", "timeline",
    "RunView", "Flow", "Step", "run",
    "SchedulerView", "SagaView", "EventView",
    "event_history_frame", "deliveries_frame", "saga_history_frame", "saga_steps_frame",
    "capability_audit_frame", "scheduler_statistics_frame", "scheduler_decisions_frame",
]

# Public name -> submodule; resolved on first access so `import lion_nb` stays fast.
_LAZY = {
    "STATE_STYLE": "style", "StateStyle": "style",
    "workflow_dot": "dot", "instance_dot": "dot",
    "render_svg": "render", "RenderOutcome": "render",
    "Picture": "display", "picture": "display", "describe": "display",
    "attempts_frame": "tables", "instances_frame": "tables",
    "Timeline": "timeline", "timeline": "timeline",
    "RunView": "live", "Flow": "flow", "Step": "flow", "run": "loop",
    "SchedulerView": "scheduler_view", "SagaView": "saga_view", "EventView": "event_view",
    "event_history_frame": "tables_more", "deliveries_frame": "tables_more",
    "saga_history_frame": "tables_more", "saga_steps_frame": "tables_more",
    "capability_audit_frame": "tables_more", "scheduler_statistics_frame": "tables_more",
    "scheduler_decisions_frame": "tables_more",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _workflow_bundle(obj: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    from .display import workflow_bundle
    return workflow_bundle(obj, include, exclude)


def _instance_bundle(obj: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    from .display import instance_bundle
    return instance_bundle(obj, include, exclude)


def _saga_bundle(obj: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    from .display import saga_bundle
    return saga_bundle(obj, include, exclude)


_display.register("workflow", _workflow_bundle)
_display.register("instance", _instance_bundle)
_display.register("saga_definition", _saga_bundle)
_display.register("saga_instance", _saga_bundle)
