"""Incremental re-runs (issue 19): results reused by code version and inputs, with a reason.

Through WorkflowExecutor, so what Flow builds on is pinned without the notebook layer.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
import threading
import warnings
from collections import Counter

import pytest

from lion_nb.clock import FakeClock
from lion_nb.engine import (Cache, CacheReason, ExecutorConfig, WorkflowExecutor,
                            code_version)
from lion_nb.engine import SchedulerConfig, WorkflowScheduler
from lion_nb.errors import (CacheConfigError, CacheCorruptWarning, CapabilityDeniedError,
                            RerunError, UnknownNodeError)
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import MemoryStorage, NodeState, SqliteStorage

R = CacheReason


def chain(*names, name="etl", **options):
    """a -> b -> c ...; every node's handler key is its name; options per node name."""
    nodes = [Node(n, **options.get(n, {})) for n in names]
    b = WorkflowBuilder(name).add_nodes(*nodes)
    for x, y in zip(nodes, nodes[1:]):
        b.connect(x, y)
    return b.build()


class Calls(Counter):
    """Counts handler calls by node name.

    The handlers close over the bound ``update`` method, not the counter: closed-over
    data is part of a handler's code version, so a handler closing over the counts
    would change version every time it ran.
    """

    def register(self, executor, names, value=None):
        """One counting handler per node name; returns self."""
        for n in names:
            executor.add_handler(n, self.handler(value=n if value == "name" else value))
        return self

    def handler(self, value=None):
        bump = self.update

        async def h(ctx):
            bump([ctx.node_name])
            prev = [ctx.results[k] for k in sorted(ctx.results)]
            return {"node": ctx.node_name, "prev": prev, "value": value}
        return h


@pytest.fixture
async def make_executor():
    made = []

    async def make(**config):
        clock = config.pop("clock", None)
        scheduler = WorkflowScheduler(SchedulerConfig(clock=clock)) if clock else None
        ex = WorkflowExecutor(scheduler, config=ExecutorConfig(**config))
        await ex.start()
        made.append(ex)
        return ex
    yield make
    for ex in made:
        await ex.stop()


def reasons(result):
    return {n: v.reason for n, v in result.reasons.items()}


async def test_unchanged_code_and_inputs_are_reused_and_say_so(make_executor):
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abc")
    wf = chain("a", "b", "c")
    first = await ex.run(wf)
    assert reasons(first) == {"a": R.FIRST_RUN, "b": R.FIRST_RUN, "c": R.FIRST_RUN}
    second = await ex.run(wf)
    assert reasons(second) == {"a": R.REUSED, "b": R.REUSED, "c": R.REUSED}
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert second.results == first.results
    assert set(second.node_states.values()) == {NodeState.SUCCEEDED}
    assert second.reused == ["a", "b", "c"]


async def test_changed_handler_runs_with_its_descendants_and_not_its_ancestors(make_executor):
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abc")
    wf = chain("a", "b", "c")
    await ex.run(wf)

    bump = calls.update

    async def b_edited(ctx):  # different code, different result
        bump("b")
        return {"edited": True}
    ex.add_handler("b", b_edited)
    again = await ex.run(wf)
    assert reasons(again) == {"a": R.REUSED, "b": R.CODE_CHANGED, "c": R.INPUT_CHANGED}
    assert again.reasons["c"].detail == "b"
    assert calls == {"a": 1, "b": 2, "c": 2}


async def test_code_change_with_the_same_result_leaves_dependants_reused(make_executor):
    # Keys hold the fingerprints of the inputs a node receives (data versions), so a
    # refactor that returns the same value does not re-run what depends on it.
    ex = await make_executor(cache=True)
    ex.add_handler("a", lambda ctx: 1)
    calls = Calls()
    ex.add_handler("b", calls.handler())
    wf = chain("a", "b")
    await ex.run(wf)
    ex.add_handler("a", lambda ctx: int("1"))
    again = await ex.run(wf)
    assert reasons(again) == {"a": R.CODE_CHANGED, "b": R.REUSED}


async def test_a_changed_predecessor_result_reruns_its_dependants(make_executor):
    ex = await make_executor(cache=True)
    counter = iter(range(100))
    ex.add_handler("fetch", lambda ctx: next(counter))  # cache=False: runs every time
    calls = Calls()
    ex.add_handler("use", calls.handler())
    ex.add_handler("other", calls.handler())
    b = WorkflowBuilder("etl")
    fetch, use, other = Node("fetch", cache=False), Node("use"), Node("other")
    b.add_nodes(fetch, use, other).connect(fetch, use)
    wf = b.build()
    await ex.run(wf)
    again = await ex.run(wf)
    assert reasons(again) == {"fetch": R.NOT_CACHEABLE, "use": R.INPUT_CHANGED,
                              "other": R.REUSED}
    assert again.reasons["fetch"].detail == "cache=False"
    assert again.reasons["use"].detail == "fetch"
    assert str(again.reasons["use"]) == "input changed: fetch"


async def test_only_the_instance_inputs_a_node_reads_count(make_executor):
    ex = await make_executor(cache=True)
    calls = Calls()
    bump = calls.update

    async def reads_x(ctx):
        bump("x")
        return ctx.inputs["x"] * 2

    ex.add_handler("x", reads_x)
    ex.add_handler("y", calls.handler())
    wf = chain("x", "y")
    await ex.run(wf, inputs={"x": 1, "unrelated": 1})
    same = await ex.run(wf, inputs={"x": 1, "unrelated": 2})
    assert reasons(same) == {"x": R.REUSED, "y": R.REUSED}
    changed = await ex.run(wf, inputs={"x": 2, "unrelated": 2})
    assert changed.reasons["x"] == (R.INPUT_CHANGED, "input 'x'")
    assert changed.reasons["y"] == (R.INPUT_CHANGED, "x")
    assert changed["x"] == 4 and calls["x"] == 2


async def test_config_and_edges_are_part_of_the_key(make_executor):
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abc")
    await ex.run(chain("a", "b", options={}))
    again = await ex.run(chain("a", "b", b={"config": {"k": 1}}))
    assert again.reasons["b"] == (R.INPUT_CHANGED, "config")
    b = WorkflowBuilder("etl")
    a, bb, c = Node("a"), Node("b", config={"k": 1}), Node("c")
    b.add_nodes(a, bb, c).connect(a, bb).connect(c, bb)
    rewired = await ex.run(b.build())
    assert rewired.reasons["b"].reason is R.INPUT_CHANGED  # c's result is a new input


async def test_rerun_forces_a_node_and_what_depends_on_it(make_executor):
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abc")
    wf = chain("a", "b", "c")
    await ex.run(wf)
    forced = await ex.run(wf, rerun=["b"])
    assert reasons(forced) == {"a": R.REUSED, "b": R.FORCED, "c": R.FORCED}
    assert forced.reasons["c"].detail == "downstream of b"
    assert calls == {"a": 1, "b": 2, "c": 2}
    with pytest.raises(UnknownNodeError) as err:
        await ex.execute_workflow(wf, rerun=["nope"])
    assert err.value.node_id == "nope"


async def test_every_lookup_path_builds_the_same_keys(make_executor):
    # A run without a re-run request decides on an inlined path; rerun= and a TTL take
    # the general one. An entry made on either must serve the other: a node with two
    # predecessors (None and non-None results), a root, and an unrelated node.
    clock = FakeClock()
    ex = await make_executor(cache=True, clock=clock)
    calls = Calls().register(ex, "abcd")
    ex.add_handler("n", lambda ctx: None)
    b = WorkflowBuilder("etl")
    a, bb, c, d, n = (Node(x) for x in "abcdn")
    b.add_nodes(a, bb, c, d, n).connect(a, c).connect(bb, c).connect(n, c)
    wf = b.build()
    await ex.run(wf)  # inlined path: every entry made there
    general = await ex.run(wf, rerun=["d"])  # general path for every node
    assert reasons(general) == {"a": R.REUSED, "b": R.REUSED, "c": R.REUSED, "d": R.FORCED,
                                "n": R.REUSED}
    assert reasons(await ex.run(wf)) == dict.fromkeys("abcdn", R.REUSED)  # d's new entry
    b = WorkflowBuilder("etl")
    a, bb, c, d, n = (Node(x, cache_ttl=60) for x in "abcdn")
    b.add_nodes(a, bb, c, d, n).connect(a, c).connect(bb, c).connect(n, c)
    assert reasons(await ex.run(b.build())) == dict.fromkeys("abcdn", R.REUSED)
    assert calls == {"a": 1, "b": 1, "c": 1, "d": 2}


async def test_a_changed_root_reruns_only_what_joins_it(make_executor):
    # Reuse is settled in topological order before the join rule sees a node; a node
    # with a predecessor that runs waits for it, whatever its other inputs did.
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abcde", value="name")
    b = WorkflowBuilder("etl")
    a, bb, c, d, e = (Node(x) for x in "abcde")
    b.add_nodes(a, bb, c, d, e).connect(a, c).connect(bb, c).connect(c, d).connect(bb, e)
    wf = b.build()
    first = await ex.run(wf)
    events = []
    with ex.observe.subscribe(events.append):
        ex.add_handler("a", Calls.handler(calls, value="edited"))
        again = await ex.run(wf)
    assert reasons(again) == {"a": R.CODE_CHANGED, "b": R.REUSED, "c": R.INPUT_CHANGED,
                              "d": R.INPUT_CHANGED, "e": R.REUSED}
    assert again.reasons["c"].detail == "a" and again["c"]["prev"][1] == first["b"]
    assert calls == {"a": 2, "b": 1, "c": 2, "d": 2, "e": 1}
    ended = [(ev.kind.value, ev.node) for ev in events if ev.node in ("a", "b", "e")
             and ev.kind.value in ("node_queued", "node_succeeded")]
    assert ended[:3] == [("node_succeeded", "b"), ("node_succeeded", "e"),
                         ("node_queued", "a")]


async def test_nodes_declared_after_their_dependants_are_reused_in_dependency_order(
        make_executor):
    ex = await make_executor(cache=True)
    calls = Calls().register(ex, "abc", value="name")
    b = WorkflowBuilder("etl")
    c, bb, a = Node("c"), Node("b"), Node("a")
    b.add_nodes(c, bb, a).connect(a, bb).connect(bb, c)  # every edge points backwards
    wf = b.build()
    first = await ex.run(wf)
    again = await ex.run(wf)
    assert again.reused == ["c", "b", "a"]  # the definition's order
    assert again.results == first.results and calls == {"a": 1, "b": 1, "c": 1}
    ex.add_handler("b", Calls.handler(calls, value="edited"))
    edited = await ex.run(wf)
    assert reasons(edited) == {"a": R.REUSED, "b": R.CODE_CHANGED, "c": R.INPUT_CHANGED}


async def test_a_helper_edited_between_runs_reruns_the_same_handler_object(
        make_executor, tmp_path, monkeypatch):
    # Code versions of unchanged handler objects are carried from run to run: the
    # helpers they call must still be read again every run.
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cachereuse_helpers.py").write_text("def clean(x):\n    return x + 1\n")
    (tmp_path / "cachereuse_handler.py").write_text(
        "import cachereuse_helpers\n\n"
        "def step(ctx):\n    return cachereuse_helpers.clean(len(ctx.results))\n")
    import cachereuse_handler
    import cachereuse_helpers
    ex = await make_executor(cache=True)
    for name in "abc":
        ex.add_handler(name, cachereuse_handler.step)
    wf = chain("a", "b", "c")
    assert (await ex.run(wf))["c"] == 2
    assert reasons(await ex.run(wf)) == dict.fromkeys("abc", R.REUSED)
    (tmp_path / "cachereuse_helpers.py").write_text("def clean(x):\n    return x + 20\n")
    importlib.reload(cachereuse_helpers)
    again = await ex.run(wf)
    assert reasons(again) == dict.fromkeys("abc", R.CODE_CHANGED)
    assert again["c"] == 21
    assert reasons(await ex.run(wf)) == dict.fromkeys("abc", R.REUSED)


async def test_start_from_takes_upstream_results_from_the_last_run_without_a_cache(
        make_executor):
    ex = await make_executor()  # no cache configured
    calls = Calls().register(ex, "abcd", value="name")
    b = WorkflowBuilder("etl")
    a, bb, c, d = (Node(n) for n in "abcd")
    b.add_nodes(a, bb, c, d).connect(a, bb).connect(bb, c).connect(a, d)
    wf = b.build()
    with pytest.raises(RerunError) as err:
        await ex.execute_workflow(wf, start_from="b")
    assert err.value.node == "b"
    first = await ex.run(wf)
    assert first.reasons == {}
    again = await ex.run(wf, start_from="b")
    assert calls == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert reasons(again) == {"a": R.REUSED, "b": R.FORCED, "c": R.FORCED, "d": R.REUSED}
    assert again.reasons["a"].detail == "from the last run"
    assert again.results == first.results


async def test_ttl_expires_an_entry(make_executor):
    clock = FakeClock()
    ex = await make_executor(cache=True, clock=clock)
    calls = Calls().register(ex, "ab")
    wf = chain("a", "b", a={"cache_ttl": 60})
    await ex.run(wf)
    await clock.advance(30)
    assert reasons(await ex.run(wf)) == {"a": R.REUSED, "b": R.REUSED}
    await clock.advance(31)
    late = await ex.run(wf)
    assert late.reasons["a"] == (R.EXPIRED, "older than 60s")
    assert late.reasons["b"].reason is R.REUSED  # same result, same input
    assert calls == {"a": 2, "b": 1}


async def test_clear_and_per_node_invalidation(make_executor):
    cache = Cache()
    ex = await make_executor(cache=cache)
    calls = Calls().register(ex, "ab")
    wf = chain("a", "b")
    await ex.run(wf)
    assert len(cache) == 2
    assert cache.invalidate("b", workflow="etl") == 1
    assert reasons(await ex.run(wf)) == {"a": R.REUSED, "b": R.FIRST_RUN}
    cache.clear()
    assert len(cache) == 0
    assert reasons(await ex.run(wf)) == {"a": R.FIRST_RUN, "b": R.FIRST_RUN}


async def test_unhashable_closure_is_not_cacheable_unless_given_a_version(make_executor):
    ex = await make_executor(cache=True)
    lock = threading.Lock()

    def handler(ctx):
        with lock:
            return 1

    ex.add_handler("a", handler)
    wf = chain("a")
    await ex.run(wf)
    again = await ex.run(wf)
    assert again.reasons["a"].reason is R.NOT_CACHEABLE
    assert "'lock'" in again.reasons["a"].detail and "version=" in again.reasons["a"].detail
    pinned = chain("a", a={"version": "1"})
    await ex.run(pinned)
    assert (await ex.run(pinned)).reasons["a"].reason is R.REUSED


async def test_unhashable_result_is_cached_in_memory_but_its_dependants_are_not(
        make_executor):
    ex = await make_executor(cache=True, require_json_results=False)

    class Model:
        pass

    ex.add_handler("fit", lambda ctx: Model())
    ex.add_handler("score", lambda ctx: 1)
    wf = chain("fit", "score")
    first = await ex.run(wf)
    again = await ex.run(wf)
    assert again.reasons["fit"].reason is R.REUSED and again["fit"] is first["fit"]
    assert again.reasons["score"].reason is R.NOT_CACHEABLE
    assert "'fit'" in again.reasons["score"].detail


async def test_a_result_changed_in_place_is_detected_and_the_node_runs(make_executor):
    ex = await make_executor(cache=True)
    ex.add_handler("a", lambda ctx: {"rows": [1, 2]})

    def mutate(ctx):
        ctx.results["a"]["rows"].append(3)  # a handler that edits its input in place
        return len(ctx.results["a"]["rows"])
    ex.add_handler("b", mutate)
    wf = chain("a", "b")
    await ex.run(wf)
    with pytest.warns(CacheCorruptWarning) as caught:
        again = await ex.run(wf)
    assert caught[0].message.node == "a"
    assert again.reasons["a"] == (R.CORRUPT, "result changed in place")
    assert again["a"] == {"rows": [1, 2, 3]} or again["a"] == {"rows": [1, 2]}


async def test_a_cached_result_never_skips_the_capability_check(make_executor):
    from lion_nb.security import Authority
    authority = Authority.generate()
    ex = await make_executor(cache=True, authority=authority)
    calls = Calls()
    ex.add_handler("read", calls.handler())
    wf = chain("read", read={"requires": ["db:read:orders"]})
    granted = [authority.mint("db:read:orders")]
    ok = await ex.run(wf, grants=granted)
    assert ok.reasons["read"].reason is R.FIRST_RUN
    reused = await ex.run(wf, grants=granted)
    assert reused.reasons["read"].reason is R.REUSED
    denied = await ex.run(wf, grants=[authority.mint("db:read:customers")])
    assert denied.node_states["read"] is NodeState.FAILED
    assert isinstance(denied.exceptions["read"].__cause__, CapabilityDeniedError)
    assert "read" not in denied.results and calls["read"] == 1


async def test_retries_conditions_and_skips_work_with_reuse(make_executor):
    ex = await make_executor(cache=True)
    attempts = Counter()
    bump = attempts.update

    def flaky(ctx):
        bump("a")
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"total": 5}

    ex.add_handler("a", flaky)
    ex.add_handler("big", lambda ctx: "big")
    ex.add_handler("after_big", lambda ctx: "after")
    ex.add_handler("small", lambda ctx: "small")
    b = WorkflowBuilder("etl")
    a = Node("a", retry=1)
    big, after_big, small = Node("big"), Node("after_big"), Node("small")
    b.add_nodes(a, big, after_big, small)
    b.connect(a, big, "result.total > 10").connect(big, after_big)
    b.connect(a, small, "result.total <= 10")
    wf = b.build()
    first = await ex.run(wf)
    again = await ex.run(wf)
    assert attempts["a"] == 2
    assert again.node_states == first.node_states
    assert again.node_states["big"] is NodeState.SKIPPED
    assert again.node_states["after_big"] is NodeState.SKIPPED
    assert reasons(again) == {"a": R.REUSED, "small": R.REUSED}


async def test_durable_cache_survives_a_new_cache_object(make_executor, tmp_path):
    calls = Calls()
    path = tmp_path / "cache.db"
    for round_ in range(2):
        cache = Cache(path)
        ex = await make_executor(cache=cache)
        for n in "ab":
            ex.add_handler(n, calls.handler())
        result = await ex.run(chain("a", "b"))
        await cache.close()
        expected = R.FIRST_RUN if round_ == 0 else R.REUSED
        assert reasons(result) == {"a": expected, "b": expected}
    assert calls == {"a": 1, "b": 1}


def test_durable_cache_survives_a_process_restart(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor
        from lion_nb.model import Node, WorkflowBuilder

        def extract(ctx):
            return {{"rows": [1, 2, 3]}}

        def total(ctx):
            return sum(ctx.results["extract"]["rows"])

        async def main():
            a, b = Node("extract"), Node("total")
            wf = WorkflowBuilder("job").add_nodes(a, b).connect(a, b).build()
            cache = Cache({str(tmp_path / "c.db")!r})
            async with WorkflowExecutor(config=ExecutorConfig(cache=cache)) as ex:
                ex.add_handler("extract", extract)
                ex.add_handler("total", total)
                result = await ex.run(wf)
            await cache.close()
            print(result["total"], sorted(v.reason.value for v in result.reasons.values()))

        asyncio.run(main())
    """))
    outs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    assert [o.returncode for o in outs] == [0, 0], outs[0].stderr + outs[1].stderr
    assert outs[0].stdout.split() == ["6", "['first_run',", "'first_run']"]
    assert outs[1].stdout.split() == ["6", "['reused',", "'reused']"]


async def test_corrupted_sqlite_entry_warns_and_the_node_runs(make_executor, tmp_path):
    import sqlite3
    path = tmp_path / "cache.db"
    calls = Calls()
    cache = Cache(path)
    ex = await make_executor(cache=cache)
    for n in "ab":
        ex.add_handler(n, calls.handler())
    await ex.run(chain("a", "b"))
    await cache.close()
    with sqlite3.connect(path) as db:  # flip one byte inside each stored record
        for key, body in db.execute("SELECT key, body FROM lion_records").fetchall():
            i = bytes(body).index(b'"node"')
            tampered = bytes(body)[:i] + b"X" + bytes(body)[i + 1:]
            db.execute("UPDATE lion_records SET body = ? WHERE key = ?", (tampered, key))
    cache = Cache(path)
    ex = await make_executor(cache=cache)
    for n in "ab":
        ex.add_handler(n, calls.handler())
    with pytest.warns(CacheCorruptWarning) as caught:
        result = await ex.run(chain("a", "b"))
    assert len(caught) == 2 and all(w.message.key.startswith("cache/") for w in caught)
    assert result.succeeded and reasons(result) == {"a": R.FIRST_RUN, "b": R.FIRST_RUN}
    await cache.close()
    cache = Cache(path)  # the entries rewritten by that run are sound again
    ex = await make_executor(cache=cache)
    for n in "ab":
        ex.add_handler(n, calls.handler())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptWarning)
        assert reasons(await ex.run(chain("a", "b"))) == {"a": R.REUSED, "b": R.REUSED}
    await cache.close()


async def test_an_entry_with_a_bad_checksum_on_any_storage_is_detected(make_executor):
    storage = MemoryStorage()  # no envelope of its own: the entry's checksum catches it
    cache = Cache(storage)
    ex = await make_executor(cache=cache)
    ex.add_handler("a", lambda ctx: {"n": 1})
    await ex.run(chain("a"))
    await cache.flush()
    (key,) = await storage.keys("cache/")
    record = await storage.get(key)
    record["body"]["result"] = {"n": 2}  # tampered, checksum left as it was
    await storage.put(key, record)
    fresh = Cache(storage)
    ex2 = await make_executor(cache=fresh)
    ex2.add_handler("a", lambda ctx: {"n": 1})
    with pytest.warns(CacheCorruptWarning, match="checksum"):
        result = await ex2.run(chain("a"))
    assert result["a"] == {"n": 1} and result.reasons["a"].reason is R.FIRST_RUN


async def test_concurrent_runs_of_one_flow_do_not_corrupt_the_cache(make_executor, tmp_path):
    path = tmp_path / "cache.db"
    cache = Cache(path)
    ex = await make_executor(cache=cache)
    for n in "abcd":
        ex.add_handler(n, Calls().handler())
    wf = chain("a", "b", "c", "d")
    results = await asyncio.gather(*(ex.run(wf, inputs={"i": i}) for i in range(8)))
    assert all(r.succeeded for r in results)
    await cache.close()
    fresh = Cache(path)
    ex2 = await make_executor(cache=fresh)
    for n in "abcd":
        ex2.add_handler(n, Calls().handler())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptWarning)
        again = await ex2.run(wf)
    assert set(reasons(again).values()) == {R.REUSED}
    await fresh.close()


def test_two_processes_writing_one_cache_file_leave_only_sound_entries(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor
        from lion_nb.model import Node, WorkflowBuilder

        async def main(tag):
            nodes = [Node(f"n{{i}}") for i in range(30)]
            b = WorkflowBuilder("shared").add_nodes(*nodes)
            for x, y in zip(nodes, nodes[1:]):
                b.connect(x, y)
            wf = b.build()
            for round_ in range(5):
                cache = Cache({str(tmp_path / "c.db")!r})
                async with WorkflowExecutor(config=ExecutorConfig(cache=cache)) as ex:
                    for node in nodes:
                        ex.add_handler(node.name, lambda ctx, t=tag, r=round_: [t, r])
                    result = await ex.run(wf)
                    assert result.succeeded
                await cache.close()

        asyncio.run(main(sys.argv[1]))
    """))
    procs = [subprocess.Popen([sys.executable, str(script), tag], stderr=subprocess.PIPE,
                              text=True) for tag in ("x", "y")]
    outs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)[-3000:]

    async def check():
        cache = Cache(tmp_path / "c.db")
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheCorruptWarning)
            await cache.load("shared")
        assert len(cache.entries("shared")) == 30
        await cache.close()
    asyncio.run(check())


def test_code_version_follows_closures_and_module_helpers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cachehelpers_mod.py").write_text("def clean(x):\n    return x + 1\n")
    (tmp_path / "cachehandler_mod.py").write_text(
        "import cachehelpers_mod\n\nSCALE = 2\n\n"
        "def scale(x):\n    return x * SCALE\n\n"
        "def handler(ctx):\n    return scale(cachehelpers_mod.clean(1))\n")
    import cachehandler_mod
    import cachehelpers_mod
    before = code_version(cachehandler_mod.handler)
    assert code_version(cachehandler_mod.handler) == before
    (tmp_path / "cachehelpers_mod.py").write_text("def clean(x):\n    return x + 2\n")
    importlib.reload(cachehelpers_mod)
    assert code_version(cachehandler_mod.handler) != before  # a helper of a helper module
    after_helper = code_version(cachehandler_mod.handler)
    cachehandler_mod.SCALE = 3
    assert code_version(cachehandler_mod.handler) != after_helper  # global data it reads

    def outer(k):
        def inner(ctx):
            return k
        return inner
    assert code_version(outer(1)) == code_version(outer(1))
    assert code_version(outer(1)) != code_version(outer(2))

    def commented(ctx):
        return 1

    def commented_again(ctx):
        # a comment changes nothing that runs
        return 1
    commented_again.__code__ = commented_again.__code__.replace(co_name="commented")
    assert code_version(commented) == code_version(commented_again)


def test_code_version_is_stable_across_processes(tmp_path):
    (tmp_path / "stable_mod.py").write_text(
        "KEYS = frozenset({'a', 'b', 'c', 'd'})\n\n"
        "def handler(ctx):\n    return 'a' in {'a', 'b', 'c'} and sorted(KEYS)\n")
    code = ("import sys; sys.path.insert(0, %r); import stable_mod; "
            "from lion_nb.engine import code_version; print(code_version(stable_mod.handler))"
            % str(tmp_path))
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed},
                           timeout=60).stdout.strip() for seed in ("1", "2", "3")}
    assert len(seen) == 1 and len(next(iter(seen))) == 32


def test_cache_settings_are_checked():
    with pytest.raises(CacheConfigError) as err:
        Cache(ttl=0)
    assert err.value.field == "ttl"
    with pytest.raises(CacheConfigError):
        Cache(storage=42)
    with pytest.raises(CacheConfigError):
        Cache(namespace="a/b")


CRASH_CHILD = """
import asyncio, os, sys
from lion_nb.engine import Cache, ExecutorConfig, WorkflowExecutor
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.state import FileStorage, SqliteStorage

where, backend, path = sys.argv[1], sys.argv[2], sys.argv[3]


def crash(step):
    if step == where:
        os._exit(17)  # the process dies inside the cache's one write, at that step


async def main():
    nodes = [Node(n, version="1") for n in ("a", "b", "c")]
    b = WorkflowBuilder("crashy").add_nodes(*nodes)
    b.connect(nodes[0], nodes[1]).connect(nodes[1], nodes[2])
    storage = SqliteStorage(path) if backend == "sqlite" else FileStorage(path)
    storage.step_hook = crash
    ex = WorkflowExecutor(config=ExecutorConfig(cache=Cache(storage)))
    await ex.start()
    for n in ("a", "b", "c"):
        ex.add_handler(n, lambda ctx: [ctx.node_name, sorted(ctx.results)])
    await ex.run(b.build())
    os._exit(18)  # right after: wait() returned, so the entries were written


asyncio.run(main())
"""


@pytest.mark.parametrize("backend, where, expected", [
    ("sqlite", "before_commit", R.FIRST_RUN),     # stopped right before the write: no entry
    ("sqlite", "after", R.REUSED),                # right after it: every entry
    ("files", "journal_committed", R.REUSED),     # after the commit point: rolled forward
    ("files", "record_applied", R.REUSED),        # torn while applying: rolled forward
    ("files", "after", R.REUSED),
])
async def test_a_crash_at_the_cache_write_leaves_a_sound_cache(make_executor, tmp_path,
                                                               backend, where, expected):
    from lion_nb.state import FileStorage
    path = str(tmp_path / ("c.db" if backend == "sqlite" else "cache"))
    script = tmp_path / "child.py"
    script.write_text(CRASH_CHILD)
    child = subprocess.run([sys.executable, str(script), where, backend, path],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == (18 if where == "after" else 17), child.stderr
    storage = SqliteStorage(path) if backend == "sqlite" else FileStorage(path)
    cache = Cache(storage)
    ex = await make_executor(cache=cache)
    for n in "abc":
        ex.add_handler(n, lambda ctx: [ctx.node_name, sorted(ctx.results)])
    b = WorkflowBuilder("crashy").add_nodes(*(Node(n, version="1") for n in "abc"))
    b.connect("a", "b").connect("b", "c")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptWarning)
        result = await ex.run(b.build())
    assert reasons(result) == {"a": expected, "b": expected, "c": expected}
    assert result["c"] == ["c", ["b"]]
    await storage.close()


async def test_durable_cache_on_postgresql(make_executor, pg_dsn):
    from lion_nb.state import PostgresStorage
    calls = Calls()
    for round_ in range(2):
        storage = PostgresStorage(pg_dsn)
        cache = Cache(storage)
        ex = await make_executor(cache=cache)
        calls.register(ex, "ab")
        try:
            result = await ex.run(chain("a", "b"))
        finally:
            await storage.close()
        expected = R.FIRST_RUN if round_ == 0 else R.REUSED
        assert reasons(result) == {"a": expected, "b": expected}
    assert calls == {"a": 1, "b": 1}


async def test_a_durable_instance_commits_its_reused_nodes_too(tmp_path):
    from lion_nb.state import StateMachineManager
    storage = SqliteStorage(tmp_path / "state.db")
    ex = WorkflowExecutor(state_manager=StateMachineManager(storage),
                          config=ExecutorConfig(cache=True))
    await ex.start()
    try:
        calls = Calls().register(ex, "abc")
        wf = chain("a", "b", "c")
        await ex.run(wf)
        again = await ex.run(wf)
        assert reasons(again) == {"a": R.REUSED, "b": R.REUSED, "c": R.REUSED}
        assert calls == {"a": 1, "b": 1, "c": 1}
        assert again.succeeded and again.results["c"] == (await ex.run(wf)).results["c"]
        assert again.instance_id not in await ex.resumable()  # it ended, durably
    finally:
        await ex.stop()
        await storage.close()
