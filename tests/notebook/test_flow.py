"""Flow builds the same WorkflowDefinition as WorkflowBuilder and runs on WorkflowExecutor."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lion_nb.engine import WorkflowExecutor
from lion_nb.errors import (CycleError, DefinitionError, LionError, UnknownNodeError,
                            WorkflowFailedError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import Flow
from lion_nb.notebook import attempts_frame


def etl_flow() -> Flow:
    flow = Flow("etl")

    @flow.step
    async def extract(ctx):
        return {"rows": 3}

    @flow.step(after=extract, when="result.rows > 0", retries=2)
    def transform(ctx):
        return ctx.results["extract"]["rows"] * 2

    @flow.step(after=[transform, "extract"], timeout=5)
    def load(ctx):
        return sorted(ctx.results)

    return flow


def test_flow_builds_the_same_definition_as_workflow_builder():
    flow = etl_flow()
    b = WorkflowBuilder("etl")
    e, t, l = Node("extract"), Node("transform", retry=2), Node("load", timeout=5)
    b.add_nodes(e, t, l).connect(e, t, "result.rows > 0").connect(t, l).connect(e, l)
    assert flow.definition.fingerprint() == b.build().fingerprint()
    assert flow.definition.node("transform").retry.max_attempts == 3


async def test_flow_runs_with_top_level_await_on_a_real_executor():
    flow = etl_flow()
    run = await flow.run()
    assert run.succeeded
    assert run["transform"] == 6 and run["load"] == ["extract", "transform"]
    assert isinstance(await flow.executor(), WorkflowExecutor)
    assert list(attempts_frame(flow)["node"]) == ["extract", "transform", "load"]
    assert flow.last is run


async def test_flow_can_use_a_shared_executor():
    ex = WorkflowExecutor()
    flow = Flow("shared", executor=ex)

    @flow.step
    def only(ctx):
        return 1

    run = await flow.run()
    assert run.succeeded and flow.history is ex.history and len(ex.history.records) == 1
    await ex.stop()


def test_flow_displays_itself():
    bundle = etl_flow()._repr_mimebundle_()
    assert "image/svg+xml" in bundle and "result.rows &gt; 0" in bundle["image/svg+xml"]
    assert Flow("empty")._repr_mimebundle_() == {"text/plain": "Flow('empty') with no steps yet"}


def test_mistakes_are_reported_at_the_decorator():
    flow = Flow("bad")

    @flow.step
    def a(ctx):
        return 1

    with pytest.raises(UnknownNodeError):
        @flow.step(after="nope")
        def b(ctx):
            return 1

    with pytest.raises(DefinitionError):
        @flow.step(name="a")
        def again(ctx):
            return 1

    with pytest.raises(LionError):  # a bad condition is refused where it is written
        @flow.step(after=a, when="__import__('os')")
        def c(ctx):
            return 1

    assert list(flow.steps) == ["a"]  # failed declarations leave nothing behind
    with pytest.raises(DefinitionError):
        Flow("")
    assert CycleError  # cycles cannot be declared: steps only point backwards
    with pytest.raises(DefinitionError, match="decorates a function"):
        flow.step(42)


def test_declaring_steps_does_not_rebuild_the_definition():
    flow = Flow("many")
    previous = None
    for i in range(300):
        flow.step(lambda ctx: None, name=f"s{i}", after=previous)
        previous = f"s{i}"
    definition = flow.definition
    assert len(definition) == 300 and flow.definition is definition  # built once
    flow.step(lambda ctx: None, name="tail", after=previous)
    assert flow.definition is not definition and len(flow.definition) == 301


async def test_a_flow_run_records_history_once_and_check_raises_its_error():
    flow = Flow("fails")

    @flow.step
    def boom(ctx):
        raise ValueError("no")

    with pytest.raises(WorkflowFailedError):
        await flow.run(check=True)
    ex = await flow.executor()
    assert len(flow.history.records) == 1
    assert ex.history.records == []  # the executor the Flow owns does not record twice


def test_run_sync_works_in_a_plain_script_twice():
    script = textwrap.dedent("""
        import asyncio
        original = asyncio.run
        from lion_nb.notebook import Flow, run
        flow = Flow("script")

        @flow.step
        def one(ctx):
            return 1

        @flow.step(after=one)
        async def two(ctx):
            return ctx.results["one"] + 1

        assert flow.run_sync()["two"] == 2
        assert flow.run_sync()["two"] == 2   # a second asyncio.run, a second loop
        async def answer():
            return 42
        assert run(answer()) == 42
        assert asyncio.run is original, "no patching outside a running loop"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_sync_helpers_work_inside_a_running_loop():
    # In a subprocess: nest_asyncio2 patches asyncio process-wide once applied.
    script = textwrap.dedent("""
        import asyncio
        original = asyncio.run
        import lion_nb.notebook as nb
        assert asyncio.run is original

        flow = nb.Flow("nested")

        @flow.step
        def one(ctx):
            return 1

        async def main():
            from lion_nb.notebook import nesting_applied
            assert not nesting_applied()
            async def seven():
                await asyncio.sleep(0)
                return 7
            assert nb.run(seven()) == 7          # sync call inside a running loop
            assert nesting_applied()
            assert flow.run_sync()["one"] == 1   # the Flow's executor lives on this loop
            assert (await flow.run())["one"] == 1
            return "ok"

        print(asyncio.run(main()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_a_failed_run_renders_the_handlers_line_first_in_ipython():
    flow = Flow("etl")

    @flow.step
    def parse(ctx):
        rows = ["1", "x"]
        return [int(r) for r in rows]  # the user's line

    with pytest.raises(WorkflowFailedError) as info:
        await flow.run(check=True)
    lines = info.value._render_traceback_()  # what IPython shows for it
    text = "\n".join(lines)
    assert lines[0].startswith("WorkflowFailedError: ") and "'parse'" in lines[0]
    assert "node 'parse' raised ValueError: invalid literal for int()" in text
    assert "in parse" in text and "the user's line" in text
    assert "lion_nb" not in text.replace("lion_nb.errors", "")  # no engine frames
    assert "asyncio" not in text


def test_a_refused_step_is_raised_from_the_users_line():
    # A typo in after= or a bad condition: the traceback starts at the decorated line and
    # holds no frame of the builder or the expression compiler.
    import traceback

    from lion_nb.errors import ConditionError

    flow = Flow("frames")

    @flow.step
    def extract(ctx):
        return 1

    for error, options in ((UnknownNodeError, {"after": "extrct"}),
                           (ConditionError, {"after": extract, "when": "result >>> 0"})):
        with pytest.raises(error) as info:
            @flow.step(**options)
            def transform(ctx):
                return 2
        frames = traceback.extract_tb(info.value.__traceback__)
        assert frames[0].name == "test_a_refused_step_is_raised_from_the_users_line"
        assert len(frames) <= 3, [f"{f.filename}:{f.name}" for f in frames]
        assert not any("model" in f.filename or "condition" in f.filename for f in frames)
    assert list(flow.steps) == ["extract"]


async def test_a_re_declared_step_replaces_its_handler_and_keeps_the_definition():
    flow = Flow("edit")

    @flow.step
    def extract(ctx):
        return 1

    @flow.step(after=extract)
    def load(ctx):
        return ctx.results["extract"] + 1

    assert (await flow.run())["load"] == 2
    definition = flow.definition

    @flow.step  # the cell re-run with an edit: same name, same place, new code
    def extract(ctx):  # noqa: F811
        return 10

    assert flow.definition is definition  # same shape: nothing rebuilt
    assert flow.steps["extract"].handler is extract
    assert (await flow.run())["load"] == 11  # the executor got the new handler

    @flow.step(after=extract, retries=1)  # a new shape: rebuilt, same order
    def load(ctx):  # noqa: F811
        return ctx.results["extract"] + 2

    assert flow.definition is not definition
    assert flow.definition.node("load").retry.max_attempts == 2
    assert (await flow.run())["load"] == 12 and list(flow.steps) == ["extract", "load"]


def test_steps_is_a_read_only_view_in_declaration_order():
    flow = etl_flow()
    steps = flow.steps
    assert list(steps) == ["extract", "transform", "load"] and len(steps) == 3
    assert "load" in steps and "nope" not in steps
    load = steps["load"]
    assert load.after == ("transform", "extract") and load.options == {"retry": 0, "timeout": 5}
    assert steps["transform"].when == "result.rows > 0"
    assert steps["transform"].options == {"retry": 2}
    with pytest.raises(TypeError):
        steps["x"] = load  # type: ignore[index]

    @flow.step(after=["load", "load", load.handler])  # repeats name one edge
    def report(ctx):
        return None

    assert flow.steps["report"].after == ("load",)


def test_a_shape_change_may_only_point_backwards():
    flow = Flow("order")

    @flow.step
    def a(ctx):
        return 1

    @flow.step
    def b(ctx):
        return 2

    with pytest.raises(DefinitionError, match="declared later"):
        @flow.step(after="b")  # a again, now after b: b comes later
        def a(ctx):  # noqa: F811
            return 1

    assert flow.steps["a"].after == () and len(flow.definition.edge_source) == 0


def test_plain_and_optioned_steps_mixed_build_the_same_definition_as_the_builder():
    # Plain steps go into the builder in bulk, later; steps with options or conditions go
    # in at once: mixed, the definition keeps declaration order, edges and conditions.
    flow = Flow("mixed")
    flow.step(lambda ctx: 1, name="a")
    flow.step(lambda ctx: 2, name="b", after=["a"])
    flow.step(lambda ctx: 3, name="c", after=("a", "b"), when="result is not None")
    flow.step(lambda ctx: 4, name="d", after=["c", "b"])
    flow.step(lambda ctx: 5, name="e", after="d", retries=2)
    flow.step(lambda ctx: 6, name="f", after=["e", "a"])
    nodes = {n: Node(n, retry=2) if n == "e" else Node(n) for n in "abcdef"}
    builder = WorkflowBuilder("mixed").add_nodes(*nodes.values())
    for s, t, when in (("a", "b", None), ("a", "c", "result is not None"),
                       ("b", "c", "result is not None"), ("c", "d", None), ("b", "d", None),
                       ("d", "e", None), ("e", "f", None), ("a", "f", None)):
        builder.connect(nodes[s], nodes[t], when)
    expected, got = builder.build(), flow.definition
    assert [n.name for n in got.nodes] == [n.name for n in expected.nodes]
    assert got.node("e").retry == expected.node("e").retry
    edges = {(e.source, e.target, None if e.condition is None else e.condition.expression)
             for e in got.edges}
    want = {(e.source, e.target, None if e.condition is None else e.condition.expression)
            for e in expected.edges}
    names = {n.id: n.name for n in got.nodes}
    want_names = {n.id: n.name for n in expected.nodes}
    assert {(names[s], names[t], c) for s, t, c in edges} == \
        {(want_names[s], want_names[t], c) for s, t, c in want}
    with pytest.raises(LionError):  # a refused step after plain ones leaves them whole
        flow.step(lambda ctx: 7, name="g", after=["f", "nope"], retries=1)
    assert len(flow.definition) == 6 and list(flow.steps)[-1] == "f"


# --- arguments a step, a Flow or a run does not take (tidy5, issue 13/18) ---------------------

def _extract(ctx):
    return 1


@pytest.mark.parametrize("options,argument,hint", [
    ({"id": "x"}, "id", "name="),
    ({"depends_on": "a"}, "depends_on", "after="),
    ({"retires": 2}, "retires", "retries="),
    ({"timout": 5}, "timout", "timeout="),
    ({"zzz": 1}, "zzz", None),
])
def test_an_unknown_step_keyword_is_a_lion_error_naming_step_and_argument(options, argument,
                                                                          hint):
    from lion_nb.errors import UnknownArgumentError

    flow = Flow("kw")
    for declare in (lambda: flow.step(_extract, **options),
                    lambda: flow.step(**options)(_extract)):
        with pytest.raises(UnknownArgumentError) as info:
            declare()
        err = info.value
        assert isinstance(err, DefinitionError) and isinstance(err, TypeError)
        assert err.step == "_extract" and err.argument == argument
        assert "_extract" in str(err) and f"{argument}=" in str(err)
        assert (hint in str(err)) if hint else "did you mean" not in str(err)
        assert "Node.__new__" not in str(err)
    assert list(flow.steps) == []


@pytest.mark.parametrize("options,field", [
    ({"after": 3}, "after"), ({"after": [None]}, "after"),
    ({"retries": "2"}, "retries"), ({"retries": -1}, "retries"), ({"retries": 2.5}, "retries"),
    ({"retry": "x"}, "retry"), ({"timeout": "5"}, "timeout"), ({"timeout": True}, "timeout"),
    ({"requires": 3}, "requires"), ({"resources": 3}, "resources"),
    ({"config": 3}, "config"), ({"handler": 3}, "handler"),
])
def test_a_wrongly_typed_step_option_is_a_definition_error_naming_the_step(options, field):
    flow = Flow("types")
    flow.step(lambda ctx: 0, name="a")
    with pytest.raises(DefinitionError) as info:
        flow.step(_extract, **options)
    assert getattr(info.value, "field", None) == field
    assert "'_extract'" in str(info.value)
    assert list(flow.steps) == ["a"]


def test_retries_and_retry_together_are_refused():
    from lion_nb.errors import UnknownArgumentError

    with pytest.raises(UnknownArgumentError, match="not both"):
        Flow("both").step(_extract, retries=2, retry=3)


def test_flow_settings_of_the_wrong_type_are_config_errors():
    from lion_nb.errors import ConfigError

    for kwargs, field in (({"executor": 3}, "executor"), ({"config": {"a": 1}}, "config")):
        with pytest.raises(ConfigError) as info:
            Flow("settings", **kwargs)
        assert info.value.field == field


@pytest.mark.parametrize("kwargs,error,culprit", [
    ({"rerunn": ["a"]}, "UnknownArgumentError", "rerun="),
    ({"inputs": 3}, "ConfigError", "inputs"),
    ({"rerun": 3}, "DefinitionError", "rerun"),
    ({"start_from": 3}, "DefinitionError", "start_from"),
])
def test_bad_run_arguments_are_lion_errors(kwargs, error, culprit):
    import lion_nb.errors as errors

    flow = Flow("runs")
    flow.step(_extract)
    with pytest.raises(getattr(errors, error)) as info:
        flow.run_sync(**kwargs)
    assert culprit in str(info.value)
