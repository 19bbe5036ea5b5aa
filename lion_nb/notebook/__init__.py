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

import importlib as _importlib
import typing as _typing

from .. import _display

if _typing.TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports on use
    from ._dot import instance_dot, workflow_dot
    from ._event_view import DeliveryTrouble, EventView
    from ._flow import Flow, Step
    from ._loop import nesting_applied, run
    from ._picture import Picture, describe, picture
    from ._render import (INSTALL_HINT, RENDERERS, RenderFailed, RenderOutcome,
        clear_picture_cache, render_svg)
    from ._run_view import RunView
    from ._saga_view import SagaTransition, SagaView
    from ._scheduler_view import SchedulerDecision, SchedulerView
    from ._style import STATE_STYLE, TERMINAL_STATES, StateStyle
    from ._tables import (attempts_frame, capability_audit_frame, deliveries_frame,
        event_history_frame, instances_frame, saga_history_frame, saga_steps_frame,
        scheduler_decisions_frame, scheduler_statistics_frame)
    from ._timeline import Timeline, timeline

__all__ = [
    "DeliveryTrouble", "EventView", "Flow", "INSTALL_HINT", "Picture", "RENDERERS",
    "RenderFailed", "RenderOutcome", "RunView", "STATE_STYLE", "SagaTransition", "SagaView",
    "SchedulerDecision", "SchedulerView", "StateStyle", "Step", "TERMINAL_STATES", "Timeline",
    "attempts_frame",
    "capability_audit_frame", "clear_picture_cache", "deliveries_frame", "describe",
    "event_history_frame", "instance_dot", "instances_frame", "nesting_applied", "picture",
    "render_svg", "run", "saga_history_frame", "saga_steps_frame", "scheduler_decisions_frame",
    "scheduler_statistics_frame", "timeline", "workflow_dot",
]

# Public name -> private module; resolved on first access so `import lion_nb` stays fast.
_LAZY = {
    "instance_dot": "_dot", "workflow_dot": "_dot",
    "DeliveryTrouble": "_event_view", "EventView": "_event_view",
    "Flow": "_flow", "Step": "_flow",
    "nesting_applied": "_loop", "run": "_loop",
    "Picture": "_picture", "describe": "_picture", "picture": "_picture",
    "INSTALL_HINT": "_render", "RENDERERS": "_render", "RenderFailed": "_render",
    "RenderOutcome": "_render", "clear_picture_cache": "_render", "render_svg": "_render",
    "RunView": "_run_view",
    "SagaTransition": "_saga_view", "SagaView": "_saga_view",
    "SchedulerDecision": "_scheduler_view", "SchedulerView": "_scheduler_view",
    "STATE_STYLE": "_style", "StateStyle": "_style", "TERMINAL_STATES": "_style",
    "attempts_frame": "_tables", "capability_audit_frame": "_tables",
    "deliveries_frame": "_tables", "event_history_frame": "_tables",
    "instances_frame": "_tables", "saga_history_frame": "_tables",
    "saga_steps_frame": "_tables", "scheduler_decisions_frame": "_tables",
    "scheduler_statistics_frame": "_tables",
    "Timeline": "_timeline", "timeline": "_timeline",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The public names (loaded or not); submodules are private, shims deprecated.
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})


def _bundle(obj: _typing.Any, include: _typing.Any = None,
            exclude: _typing.Any = None) -> dict[str, _typing.Any]:
    # Definitions, instances and sagas display through one path: picture(obj).
    from ._picture import Picture
    return Picture(obj).mimebundle(include, exclude)


for _kind in ("workflow", "instance", "saga_definition", "saga_instance"):
    _display.register(_kind, _bundle)
