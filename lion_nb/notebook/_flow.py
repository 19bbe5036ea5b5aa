"""Flow: declare a workflow's nodes and handlers in one place, with decorators.

A Flow builds an ordinary WorkflowDefinition through WorkflowBuilder and runs
it on an ordinary WorkflowExecutor -- it is a front end, not a second engine::

    flow = Flow("etl")

    @flow.step
    async def extract(ctx):
        return {"rows": 3}

    @flow.step(after=extract, when="result.rows > 0", retries=2)
    def transform(ctx):
        return ctx.results["extract"]["rows"] * 2

    flow                          # displays the DAG
    run = await flow.run()        # top-level await in Jupyter
    run = flow.run_sync()         # or from synchronous code
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable, Mapping

from .. import _display

__all__ = ["Flow", "Step"]

Handler = Callable[[Any], Any]


class Step:
    """One declared step: its node options, handler and predecessors."""

    __slots__ = ("name", "handler", "after", "when", "options")

    def __init__(self, name: str, handler: Handler, after: tuple[str, ...], when: Any,
                 options: dict[str, Any]) -> None:
        self.name = name
        self.handler = handler
        self.after = after
        self.when = when
        self.options = options

    def __repr__(self) -> str:
        return f"Step({self.name!r}, after={list(self.after)})"


class Flow:
    """A notebook-friendly workflow builder: ``@flow.step`` functions become nodes."""

    def __init__(self, name: str, *, executor: Any = None, config: Any = None) -> None:
        from ..model import WorkflowBuilder

        WorkflowBuilder(name)  # validates the name now, where the mistake is
        self.name = name
        self.steps: dict[str, Step] = {}
        self._names: dict[int, str] = {}  # id(handler function) -> step name
        self._definition: Any = None
        self._shared = executor
        self._config = config
        self._own: Any = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self.runs: list[Any] = []
        from ..engine.history import HistoryRecorder
        self._history = HistoryRecorder()  # spans every executor this Flow creates

    # --- declaring --------------------------------------------------------------------

    def step(self, fn: Handler | None = None, *, name: str | None = None,
             after: Any = (), when: Any = None, retries: int = 0,
             **node_options: Any) -> Any:
        """Declare a step; use bare (``@flow.step``) or with options (``@flow.step(after=f)``).

        ``after``: steps (functions or names) this one depends on; ``when``: an
        edge condition (expression or callable) on each of them; ``retries``
        and any other keyword go to :class:`lion_nb.model.Node`.
        """
        def register(f: Handler) -> Handler:
            if not callable(f):
                raise TypeError(f"@flow.step decorates a function, not {type(f).__name__}")
            from ..errors import DefinitionError
            step_name = name or getattr(f, "__name__", None)
            if not step_name:
                raise DefinitionError("this callable has no __name__; pass name=...")
            if step_name in self.steps:
                raise DefinitionError(f"flow {self.name!r} already has a step {step_name!r}")
            preds = tuple(self._resolve(a) for a in _as_tuple(after))
            if when is not None and not preds:
                raise DefinitionError(f"step {step_name!r}: when= needs after=")
            self.steps[step_name] = Step(step_name, f, preds, when,
                                         {"retry": retries, **node_options})
            self._names[id(f)] = step_name
            try:
                self._definition = None
                self._build()  # validates now (cycles, bad conditions) at the decorator
            except Exception:
                del self.steps[step_name]
                self._names.pop(id(f), None)
                self._definition = None
                raise
            return f

        return register(fn) if fn is not None else register

    def _resolve(self, ref: Any) -> str:
        from ..errors import UnknownNodeError
        if isinstance(ref, str):
            if ref not in self.steps:
                raise UnknownNodeError(f"flow {self.name!r} has no step {ref!r} (declare "
                                       "steps before the steps that come after them)",
                                       node_id=ref)
            return ref
        step_name = self._names.get(id(ref))
        if step_name is None:
            raise UnknownNodeError(f"{ref!r} is not a step of flow {self.name!r}",
                                   node_id=getattr(ref, "__name__", repr(ref)))
        return step_name

    # --- the definition ----------------------------------------------------------------

    def _build(self) -> Any:
        from ..model import Node, WorkflowBuilder

        b = WorkflowBuilder(self.name)
        nodes = {}
        for step in self.steps.values():
            nodes[step.name] = Node(step.name, **step.options)
            b.add_node(nodes[step.name])
        for step in self.steps.values():
            for pred in step.after:
                b.connect(nodes[pred], nodes[step.name], step.when)
        self._definition = b.build()
        return self._definition

    @property
    def definition(self) -> Any:
        """The WorkflowDefinition these steps make (built by WorkflowBuilder)."""
        if self._definition is None:
            from ..errors import DefinitionError
            if not self.steps:
                raise DefinitionError(f"flow {self.name!r} has no steps yet")
            self._build()
        return self._definition

    # --- running ------------------------------------------------------------------------

    async def executor(self) -> Any:
        """The executor runs happen on: the one given, or one this Flow owns per event loop."""
        if self._shared is not None:
            ex = self._shared
        else:
            loop = asyncio.get_running_loop()
            if self._own is None or self._own_loop is not loop:
                from ..engine import ExecutorConfig, WorkflowExecutor
                # An executor's scheduler binds to the loop it first runs on;
                # a new loop (another asyncio.run) gets a new executor.
                config = self._config or ExecutorConfig(require_json_results=False)
                self._own = WorkflowExecutor(config=config)
                self._own_loop = loop
                self._history.attach(self._own.observe)
            ex = self._own
        await ex.start()
        for step in self.steps.values():
            ex.add_handler(step.name, step.handler)
        return ex

    async def run(self, *, inputs: Mapping[str, Any] | None = None, view: bool = False,
                  **kwargs: Any) -> Any:
        """Run the flow once and return the InstanceResult; ``view=True`` shows a RunView."""
        definition = self.definition
        ex = await self.executor()
        if view:
            from IPython.display import display

            from ._run_view import RunView
            display(RunView(ex))
        result = await ex.run(definition, inputs=inputs, **kwargs)
        self.runs.append(result)
        return result

    def run_sync(self, **kwargs: Any) -> Any:
        """``run`` from synchronous code: a script, or a notebook cell without ``await``."""
        from ._loop import run
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a script: this run's loop ends with it, so must its executor
            return run(self._run_and_stop(**kwargs))
        return run(self.run(**kwargs))

    async def _run_and_stop(self, **kwargs: Any) -> Any:
        try:
            return await self.run(**kwargs)
        finally:
            if self._own is not None:
                await self._own.stop()
                self._own = self._own_loop = None

    @property
    def history(self) -> Any:
        """The history recorder of this Flow's runs (``attempts_frame(flow)`` reads it)."""
        return self._shared.history if self._shared is not None else self._history

    @property
    def last(self) -> Any:
        """The result of the latest run (None before the first)."""
        return self.runs[-1] if self.runs else None

    # --- display -----------------------------------------------------------------------

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if not self.steps:
            return {"text/plain": f"Flow({self.name!r}) with no steps yet"}
        return _display.mimebundle(self.definition, include, exclude)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self.steps)})"


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or callable(value):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)
