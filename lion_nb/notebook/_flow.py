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

``Flow("etl", cache=True)`` reuses, run after run, every step whose code and
inputs did not change; re-running the cell that defines a step replaces it.
``flow.run(rerun=["extract"])`` forces steps, ``flow.run(start_from="transform")``
takes the other steps' results from the last run (no cache needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping

from .. import _display
from ..engine import Cache, ExecutorConfig, HistoryRecorder, WorkflowExecutor
from ..errors import CacheConfigError, DefinitionError, LionError, UnknownNodeError
from ..model import Condition, Node, WorkflowBuilder, WorkflowDefinition

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
    """A notebook-friendly workflow builder: ``@flow.step`` functions become nodes.

    Each step goes into one WorkflowBuilder as it is declared (validated there,
    at the decorator); the definition is built once, when first needed after a
    change. ``after=`` names only steps declared before, so no cycle can form.
    """

    def __init__(self, name: str, *, executor: Any = None, config: Any = None,
                 cache: Cache | str | os.PathLike[str] | bool | None = None) -> None:
        self._builder = WorkflowBuilder(name)  # validates the name now, where the mistake is
        self.name = name
        self.steps: dict[str, Step] = {}
        self._nodes: dict[str, Node] = {}
        self._names: dict[int, str] = {}  # id(handler function) -> step name
        self._definition: WorkflowDefinition | None = None
        self._shared = executor
        self._config = config
        self._own: Any = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self.runs: list[Any] = []
        self._history = HistoryRecorder()  # spans every executor this Flow creates
        self._handed_to: Any = None  # the executor that has the handlers of ...
        self._handed = 0  # ... this many steps
        if cache is True:
            cache = Cache()
        elif isinstance(cache, (str, os.PathLike)):
            cache = Cache(cache)
        elif not (cache is None or cache is False or isinstance(cache, Cache)):
            raise CacheConfigError(f"cache is True, a path or a Cache, not {cache!r}",
                                   field="cache")
        self._cache: Cache | None = cache if isinstance(cache, Cache) else None

    # --- declaring --------------------------------------------------------------------

    def step(self, fn: Handler | None = None, *, name: str | None = None,
             after: Any = (), when: Any = None, retries: int = 0,
             **node_options: Any) -> Any:
        """Declare a step; use bare (``@flow.step``) or with options (``@flow.step(after=f)``).

        ``after``: steps (functions or names) this one depends on; ``when``: an
        edge condition (expression or callable) on each of them; ``retries``
        and any other keyword go to :class:`lion_nb.model.Node`.
        """
        if fn is None:
            return lambda f: self._declare_here(f, name, after, when, retries, node_options)
        return self._declare_here(fn, name, after, when, retries, node_options)

    def _declare_here(self, f: Handler, name: str | None, after: Any, when: Any,
                      retries: int, node_options: dict[str, Any]) -> Handler:
        """Declare a step; a refusal is raised from the user's line, not 7-11 frames deep."""
        try:
            return self._declare(f, name, after, when, retries, node_options)
        except LionError as exc:
            # The message names the culprit; the frames below this one (the builder, the
            # expression compiler) would only bury the user's own line under ours.
            raise exc.with_traceback(None) from exc.__cause__

    def _declare(self, f: Handler, name: str | None, after: Any, when: Any, retries: int,
                 node_options: dict[str, Any]) -> Handler:
        if not callable(f):
            raise DefinitionError(f"@flow.step decorates a function, not {type(f).__name__}",
                                  step=f)
        step_name = name or getattr(f, "__name__", None)
        if not step_name:
            raise DefinitionError("this callable has no __name__; pass name=...", step=f)
        old = self.steps.get(step_name)
        if old is not None and not _same_function(old.handler, f):
            raise DefinitionError(f"flow {self.name!r} already has a step {step_name!r}",
                                  step=step_name)
        preds = [self._resolve(a) for a in _as_tuple(after)]
        if len(preds) > 1:
            preds = list(dict.fromkeys(preds))
        if when is not None and not preds:
            raise DefinitionError(f"step {step_name!r}: when= needs after=", step=step_name)
        options = {"retry": retries, **node_options} if retries or node_options else {}
        if old is not None:  # the same function defined again: its cell was re-run
            return self._redeclare(old, f, tuple(preds), when, options)
        # Everything that can fail happens before the builder is touched, so a refused
        # step leaves nothing behind.
        node = Node(step_name, **options)
        nodes = self._nodes
        condition = None if when is None else Condition(when)
        builder = self._builder
        builder.add_node(node)
        for p in preds:  # known ends, new pairs, pointing backwards: cannot fail
            builder.connect(nodes[p], node, condition)
        self.steps[step_name] = Step(step_name, f, tuple(preds), when, options)
        nodes[step_name] = node
        self._names[id(f)] = step_name
        self._definition = None
        return f

    def _redeclare(self, old: Step, f: Handler, preds: tuple[str, ...], when: Any,
                   options: dict[str, Any]) -> Handler:
        """Replace a step in place; the definition is rebuilt only if its shape changed."""
        step = Step(old.name, f, preds, when, options)
        if (preds, options, when) != (old.after, old.options, old.when):
            steps = {n: (step if n == old.name else s) for n, s in self.steps.items()}
            builder, nodes = WorkflowBuilder(self.name), {}
            for s in steps.values():  # replayed in order: a refusal changes nothing
                nodes[s.name] = node = Node(s.name, **s.options)
                builder.add_node(node)
                for p in s.after:
                    if p not in nodes:
                        raise DefinitionError(f"step {s.name!r} comes after {p!r}, which is "
                                              "declared later", step=s.name)
                    builder.connect(nodes[p], node, s.when)
            self._builder, self._nodes, self._definition = builder, nodes, None
        self.steps[old.name] = step
        self._names[id(f)] = old.name
        self._handed_to = None  # hand every handler over again, the new one included
        return f

    def _resolve(self, ref: Any) -> str:
        if type(ref) is str and ref in self.steps:  # a step's name: the common case
            return ref
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

    @property
    def definition(self) -> WorkflowDefinition:
        """The WorkflowDefinition these steps make (built once per change, by WorkflowBuilder)."""
        if self._definition is None:
            if not self.steps:
                raise DefinitionError(f"flow {self.name!r} has no steps yet", workflow=self.name)
            self._definition = self._builder.build()
        return self._definition

    # --- running ------------------------------------------------------------------------

    async def executor(self) -> Any:
        """The executor runs happen on: the one given, or one this Flow owns per event loop."""
        if self._shared is not None:
            ex = self._shared
        else:
            loop = asyncio.get_running_loop()
            if self._own is None or self._own_loop is not loop:
                # An executor's scheduler binds to the loop it first runs on;
                # a new loop (another asyncio.run) gets a new executor. History is
                # recorded once, by the Flow's recorder, which outlives executors.
                config = self._config or ExecutorConfig(require_json_results=False)
                config = dataclasses.replace(config, record_history=False)
                self._own = WorkflowExecutor(config=config)
                self._own_loop = loop
                self._history.detach()
                self._history.attach(self._own.observe)
            ex = self._own
        await ex.start()
        # Steps are only ever added: hand over those this executor has not seen yet.
        seen = self._handed if self._handed_to is ex else 0
        steps = list(self.steps.values())
        for step in steps[seen:]:
            ex.add_handler(step.name, step.handler)
        self._handed_to, self._handed = ex, len(steps)
        return ex

    async def run(self, *, inputs: Mapping[str, Any] | None = None, view: bool = False,
                  check: bool = False, **kwargs: Any) -> Any:
        """Run the flow once and return the InstanceResult; ``view=True`` shows a RunView.

        ``check=True`` raises the run's error (WorkflowFailedError) if it failed;
        other keywords go to ``WorkflowExecutor.execute_workflow``: ``rerun=[...]``
        runs steps whatever the cache says (and what follows them),
        ``start_from=`` takes every other step's result from this flow's last run.
        """
        definition = self.definition
        ex = await self.executor()
        if view:
            from IPython.display import display

            from ._run_view import RunView
            display(RunView(ex))
        if self._cache is not None:
            kwargs.setdefault("cache", self._cache)
        if kwargs.get("start_from"):
            kwargs.setdefault("previous", self.last)
        result = await ex.wait(await ex.execute_workflow(definition, inputs=inputs, **kwargs))
        self.runs.append(result)
        return result.check() if check else result

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
    def cache(self) -> Cache | None:
        """The cache of this flow's runs (None: results are not reused)."""
        if self._cache is not None:
            return self._cache
        executor = self._shared if self._shared is not None else self._own
        return getattr(executor, "cache", None)

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


def _same_function(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` defined again (a re-run cell): same module and qualname."""
    return (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == \
        (getattr(new, "__module__", None), getattr(new, "__qualname__", None))


def _as_tuple(value: Any) -> tuple[Any, ...] | list[Any]:
    if type(value) is tuple or type(value) is list:  # the common case, before slow ABCs
        return value
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or callable(value):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)
