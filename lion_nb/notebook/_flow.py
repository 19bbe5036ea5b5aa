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
import difflib
import inspect
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

from .. import _display
from ..engine import Cache, ExecutorConfig, HistoryRecorder, WorkflowExecutor
from ..errors import (CacheConfigError, ConfigError, DefinitionError, LionError,
                      UnknownArgumentError, UnknownNodeError)
from ..model import Condition, Node, RetryPolicy, WorkflowBuilder, WorkflowDefinition

__all__ = ["Flow", "Step"]

Handler = Callable[[Any], Any]

# What step() and run() hand on (to Node, to execute_workflow): a typo is refused here,
# naming the step, rather than as a TypeError from a function the user never called.
_NODE_OPTIONS = frozenset(inspect.signature(Node).parameters) - {"id_or_name", "name"}
_RUN_OPTIONS = (frozenset(inspect.signature(WorkflowExecutor.execute_workflow).parameters)
                - {"self", "workflow"})
# Spellings other libraries use, where difflib finds nothing close.
_SPELLINGS = {"id": "name", "node_id": "name", "step_id": "name", "depends_on": "after",
              "upstream": "after", "needs": "after", "condition": "when", "if_": "when",
              "max_retries": "retries", "params": "inputs", "input": "inputs"}


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


class _Steps(Mapping[str, Step]):
    """``flow.steps``: name -> Step in declaration order, read-only, made when looked at.

    A Flow keeps its steps as columns (no object per step for the garbage collector
    to scan while ten thousand are declared); this view shares those columns.
    """

    __slots__ = ("_position", "_handlers", "_after", "_when", "_options")

    def __init__(self, position: dict[str, int], handlers: list[Handler],
                 after: list[tuple[str, ...]], when: dict[int, Any],
                 options: dict[int, dict[str, Any]]) -> None:
        self._position, self._handlers, self._after = position, handlers, after
        self._when, self._options = when, options

    def __getitem__(self, name: str) -> Step:
        i = self._position[name]
        return Step(name, self._handlers[i], self._after[i], self._when.get(i),
                    self._options.get(i, {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self._position)

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, name: object) -> bool:
        return name in self._position

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{n!r}: {self[n]!r}' for n in self._position)}}}"


class Flow:
    """A notebook-friendly workflow builder: ``@flow.step`` functions become nodes.

    Each step is validated as it is declared (at the decorator) and goes into one
    WorkflowBuilder; the definition is built once, when first needed after a
    change. ``after=`` names only steps declared before, so no cycle can form.
    """

    def __init__(self, name: str, *, executor: Any = None, config: Any = None,
                 cache: Cache | str | os.PathLike[str] | bool | None = None) -> None:
        self._builder = WorkflowBuilder(name)  # validates the name now, where the mistake is
        if executor is not None and not isinstance(executor, WorkflowExecutor):
            raise ConfigError(f"Flow {name!r}: executor is a WorkflowExecutor, not "
                              f"{type(executor).__name__}", field="executor")
        if config is not None and not isinstance(config, ExecutorConfig):
            raise ConfigError(f"Flow {name!r}: config is an ExecutorConfig, not "
                              f"{type(config).__name__}", field="config")
        self.name = name
        # The steps, by position (declaration order); options and conditions only where
        # given. Columns, not an object per step: declaring is the front end's hot path.
        self._position: dict[str, int] = {}
        self._handlers: list[Handler] = []
        self._after: list[tuple[str, ...]] = []
        self._when: dict[int, Any] = {}
        self._options: dict[int, dict[str, Any]] = {}
        self._nodes: list[Node] = []
        self._added = 0  # the builder has the first this many steps (the rest: _flushed)
        # id(handler) -> step name, for after=<function>; filled when first needed, up to
        # step number _named (most flows name their steps in after=, or never look).
        self._names: dict[int, str] = {}
        self._named = 0
        self._replaced: list[Handler] = []  # keeps the ids in _names from being reused
        self.steps: Mapping[str, Step] = _Steps(self._position, self._handlers, self._after,
                                                self._when, self._options)
        self._definition: WorkflowDefinition | None = None
        self._shared = executor
        self._config = config
        self._own: Any = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self.runs: list[Any] = []
        self._history = HistoryRecorder()  # spans every executor this Flow creates
        self._handed_to: Any = None  # the executor that has the handlers of ...
        self._handed = 0  # ... this many steps,
        self._rehand: set[int] = set()  # ... except these, re-declared since
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
        # The common case -- a new name, no options, after= naming declared steps (or
        # nothing) -- in this one frame: declaring is the front end's hot loop, and 10,000
        # steps should cost about what the same builder calls cost. Anything else
        # (re-declared, options, functions in after=, mistakes) goes to _declare.
        if fn is None:
            return self._decorator(name, after, when, retries, node_options)
        step_name = name or getattr(fn, "__name__", None)
        position = self._position
        preds = after if type(after) is tuple else tuple(after) if type(after) is list else None
        try:
            if (preds is None or type(step_name) is not str or when is not None or retries
                    or node_options or step_name in position or not callable(fn)):
                return self._declare(fn, step_name, after, when, retries, node_options)
            for ref in preds:  # names of declared steps, each once: kept as given
                if type(ref) is not str or ref not in position:
                    return self._declare(fn, step_name, after, when, retries, node_options)
            if len(preds) > 1 and len(set(preds)) < len(preds):
                return self._declare(fn, step_name, after, when, retries, node_options)
            node = Node(step_name)
        except LionError as exc:
            # The message names the culprit; the frames below this one (the builder, the
            # expression compiler) would only bury the user's own line under ours.
            raise exc.with_traceback(None) from exc.__cause__
        # Such a step cannot be refused by the builder (new name, no id, known distinct
        # predecessors declared before it): it goes in with the others, in bulk, when the
        # definition is next built (one loop per builder call keeps the hot code small).
        nodes = self._nodes
        position[step_name] = len(nodes)
        nodes.append(node)
        self._handlers.append(fn)
        self._after.append(preds)
        self._definition = None
        return fn

    def _declare(self, fn: Handler, step_name: Any, after: Any, when: Any, retries: int,
                 node_options: dict[str, Any]) -> Handler:
        """``step`` in general: options, conditions, functions in after=, a re-declaration."""
        if not callable(fn):
            raise DefinitionError(f"@flow.step decorates a function, not "
                                  f"{type(fn).__name__}", step=fn)
        if not step_name:
            raise DefinitionError("this callable has no __name__; pass name=...", step=fn)
        _check_options(f"step {step_name!r}", node_options, _NODE_OPTIONS | {"retries"},
                       step=step_name)
        if retries and "retry" in node_options:
            raise UnknownArgumentError(f"step {step_name!r}: give retries= or retry=, not both",
                                       step=step_name, argument="retry")
        if not (retries is None or isinstance(retries, RetryPolicy)
                or (type(retries) is int and retries >= 0)):
            raise DefinitionError(f"step {step_name!r}: retries is a number of retries "
                                  f"(int >= 0) or a RetryPolicy, not {retries!r}",
                                  step=step_name, field="retries")
        position = self._position
        old = position.get(step_name)
        if old is not None and not _same_function(self._handlers[old], fn):
            raise DefinitionError(f"flow {self.name!r} already has a step {step_name!r}",
                                  step=step_name)
        preds = self._preds(_as_tuple(after), step_name) if after else ()
        if when is not None and not preds:
            raise DefinitionError(f"step {step_name!r}: when= needs after=", step=step_name)
        options = {"retry": retries, **node_options} if retries or node_options else None
        if old is not None:  # the same function defined again: its cell was re-run
            return self._redeclare(old, fn, preds, when, options)
        # Everything that can fail happens before the builder is touched, so a refused
        # step leaves nothing behind.
        node = Node(step_name) if options is None else Node(step_name, **options)
        condition = None if when is None else Condition(when)
        builder, nodes = self._flushed(), self._nodes
        builder.add_node(node)
        for p in preds:
            builder.connect(nodes[position[p]], node, condition)
        i = position[step_name] = len(nodes)
        self._added += 1
        nodes.append(node)
        self._handlers.append(fn)
        self._after.append(preds)
        if options is not None:
            self._options[i] = options
        if when is not None:
            self._when[i] = when
        self._definition = None
        return fn

    def _decorator(self, name: str | None, after: Any, when: Any, retries: int,
                   node_options: dict[str, Any]) -> Callable[[Handler], Handler]:
        # A method of its own: a closure made in step() would turn step's arguments into
        # cells, paid on every bare declaration too.
        return lambda f: self.step(f, name=name, after=after, when=when, retries=retries,
                                   **node_options)

    def _redeclare(self, i: int, f: Handler, preds: tuple[str, ...], when: Any,
                   options: dict[str, Any] | None) -> Handler:
        """Replace step ``i`` in place; the definition is rebuilt only if its shape changed."""
        old = self._handlers[i]
        if (preds, options, when) != (self._after[i], self._options.get(i), self._when.get(i)):
            self._rebuild(i, preds, when, options)
        if old is not f:
            self._replaced.append(old)
            self._handlers[i] = f
            self._names[id(f)] = self._nodes[i].name
            self._rehand.add(i)
        return f

    def _rebuild(self, i: int, preds: tuple[str, ...], when: Any,
                 options: dict[str, Any] | None) -> None:
        """A new builder with step ``i``'s new shape; a refusal changes nothing."""
        builder, nodes = WorkflowBuilder(self.name), []
        for k, (node, after) in enumerate(zip(self._nodes, self._after)):
            step_when, step_options = self._when.get(k), self._options.get(k)
            if k == i:
                after, step_when, step_options = preds, when, options
                node = Node(node.name, **(step_options or {}))
            nodes.append(node)
            builder.add_node(node)
            for p in after:
                j = self._position[p]
                if j >= k:
                    raise DefinitionError(f"step {node.name!r} comes after {p!r}, which is "
                                          "declared later", step=node.name)
                builder.connect(nodes[j], node, step_when)
        self._builder, self._nodes[:], self._definition = builder, nodes, None
        self._added = len(nodes)
        self._after[i] = preds
        for column, value in ((self._when, when), (self._options, options)):
            if value is None:
                column.pop(i, None)
            else:
                column[i] = value

    def _flushed(self) -> WorkflowBuilder:
        """The builder, given the steps declared since it was last brought up to date."""
        builder, nodes, added = self._builder, self._nodes, self._added
        if added < len(nodes):
            position, after = self._position, self._after
            builder.add_nodes(*nodes[added:])
            for k in range(added, len(nodes)):  # such steps have no condition: see step()
                node = nodes[k]
                for p in after[k]:
                    builder.connect(nodes[position[p]], node)
            self._added = len(nodes)
        return builder

    def _preds(self, refs: Iterable[Any], step: str) -> tuple[str, ...]:
        """The step names ``refs`` (steps or names) stand for, each once, in order."""
        position, found = self._position, dict[str, None]()
        for ref in refs:
            found[ref if type(ref) is str and ref in position
                  else self._resolve(ref, step)] = None
        return tuple(found)

    def _resolve(self, ref: Any, step: str) -> str:
        if isinstance(ref, str):
            if ref not in self._position:
                raise UnknownNodeError(f"flow {self.name!r} has no step {ref!r} (declare "
                                       "steps before the steps that come after them)",
                                       node_id=ref)
            return ref
        if not callable(ref):
            raise DefinitionError(f"step {step!r}: after= takes steps (functions) or step "
                                  f"names, not {ref!r}", step=step, field="after")
        names, handlers = self._names, self._handlers
        for k in range(self._named, len(handlers)):  # the steps declared since last time
            names[id(handlers[k])] = self._nodes[k].name
        self._named = len(handlers)
        step_name = names.get(id(ref))
        if step_name is None:
            raise UnknownNodeError(f"{ref!r} is not a step of flow {self.name!r}",
                                   node_id=getattr(ref, "__name__", repr(ref)))
        return step_name

    # --- the definition ----------------------------------------------------------------

    @property
    def definition(self) -> WorkflowDefinition:
        """The WorkflowDefinition these steps make (built once per change, by WorkflowBuilder)."""
        if self._definition is None:
            if not self._nodes:
                raise DefinitionError(f"flow {self.name!r} has no steps yet", workflow=self.name)
            self._definition = self._flushed().build()
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
        # Steps are only ever added or replaced: hand over what this executor lacks.
        nodes, handlers = self._nodes, self._handlers
        seen = self._handed if self._handed_to is ex else 0
        for i in self._rehand:
            if i < seen:
                ex.add_handler(nodes[i].name, handlers[i])
        for i in range(seen, len(nodes)):
            ex.add_handler(nodes[i].name, handlers[i])
        self._handed_to, self._handed = ex, len(nodes)
        self._rehand.clear()
        return ex

    async def run(self, *, inputs: Mapping[str, Any] | None = None, view: bool = False,
                  check: bool = False, **kwargs: Any) -> Any:
        """Run the flow once and return the InstanceResult; ``view=True`` shows a RunView.

        ``check=True`` raises the run's error (WorkflowFailedError) if it failed;
        other keywords go to ``WorkflowExecutor.execute_workflow``: ``rerun=[...]``
        runs steps whatever the cache says (and what follows them),
        ``start_from=`` takes every other step's result from this flow's last run.
        """
        if kwargs:
            _check_options(f"flow {self.name!r}: run()", kwargs, _RUN_OPTIONS, step=None)
        if not (inputs is None or isinstance(inputs, Mapping)):
            raise ConfigError(f"flow {self.name!r}: inputs is a mapping, not "
                              f"{type(inputs).__name__}", field="inputs")
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
        if not self._nodes:
            return {"text/plain": f"Flow({self.name!r}) with no steps yet"}
        return _display.mimebundle(self.definition, include, exclude)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self.steps)})"


def _check_options(where: str, given: Mapping[str, Any], known: frozenset[str],
                   step: Any) -> None:
    """UnknownArgumentError for the first keyword of ``given`` not in ``known``."""
    for key in given:
        if key not in known:
            right = _SPELLINGS.get(key) or next(
                iter(difflib.get_close_matches(key, sorted(known), n=1)), None)
            hint = f"; did you mean {right}=?" if right else ""
            raise UnknownArgumentError(f"{where}: unknown argument {key}={hint}",
                                       step=step, argument=key, suggestion=right)


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
