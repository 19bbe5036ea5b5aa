"""RunView driven by real runs: final state matches the engine, updates stay under the cap."""

from __future__ import annotations

import asyncio
import threading
import time
from html.parser import HTMLParser

from lion_nb.engine import WorkflowExecutor
from lion_nb.engine import EventKind as K
from lion_nb.engine import ExecEvent
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import RunView


def etl(fail: bool):
    b = WorkflowBuilder("etl <script>x</script>")
    a, t, l, side = Node("extract"), Node("transform", retry=2), Node("load"), Node("side")
    b.add_nodes(a, t, l, side).connect(a, t, "result.rows > 0").connect(t, l).connect(a, side)
    return b.build()


async def executor_for(fail: bool, delay: float = 0.0):
    ex = WorkflowExecutor()
    await ex.start()
    calls = {"n": 0}

    async def extract(ctx):
        await asyncio.sleep(delay)
        return {"rows": 3}

    def transform(ctx):
        calls["n"] += 1
        if fail or calls["n"] < 2:
            raise ValueError("<img src=x onerror=alert(1)> bad row")
        return 6

    ex.add_handler("extract", extract)
    ex.add_handler("transform", transform)
    ex.add_handler("load", lambda ctx: None)
    ex.add_handler("side", lambda ctx: None)
    return ex


def assert_matches_engine(view: RunView, result) -> None:
    assert {k: str(v) for k, v in view.states.items()} == \
        {k: v.value for k, v in result.node_states.items()}
    assert view.attempts == result.attempts
    assert view.instance_state == result.state.value
    assert view.progress.value == len(result.definition.nodes) == view.progress.max
    for state, n in result.counts().items():
        assert f"{state} {n:,}" in view.stats.value


async def test_view_follows_a_failing_run_to_the_engines_final_state(frontend):
    ex = await executor_for(fail=True)
    view = RunView(ex)
    result = await ex.run(etl(True))
    assert result.state.value == "failed"
    assert_matches_engine(view, result)
    assert view.progress.bar_style == "danger"
    assert "transform" in view.failures.value and "attempt 3" in view.failures.value
    assert "&lt;img src=x onerror=alert(1)&gt;" in view.failures.value
    assert "<script>" not in view.title.value
    await view.drawn()  # the final picture renders off the loop
    svg = bytes(view.picture.value)
    assert svg.startswith(b"<?xml") and b"failed" in svg
    await ex.stop()


async def test_view_of_a_successful_run_ends_green_with_retry_shown(frontend):
    ex = await executor_for(fail=False)
    view = RunView(ex)
    # No picture yet: the Image is hidden, not an empty (broken-image) icon.
    assert view.picture.value == b"" and view.picture.layout.display == "none"
    result = await ex.run(etl(False))
    assert result.succeeded
    assert_matches_engine(view, result)
    assert view.progress.bar_style == "success"
    assert view.attempts["transform"] == 2
    await view.drawn()
    assert b"attempt 2/3" in bytes(view.picture.value)
    assert view.picture.layout.display is None
    await ex.stop()


async def test_view_attached_to_a_finished_instance_shows_it(frontend):
    ex = await executor_for(fail=True)
    result = await ex.run(etl(True))
    view = RunView(ex, result.instance_id)
    assert_matches_engine(view, result)
    assert view.progress.bar_style == "danger"
    await ex.stop()


async def test_node_states_come_from_the_engine_never_from_stray_events(frontend):
    # The view reads node states from the engine: stale, contradictory or out-of-order
    # events on the stream (a threaded runner, another publisher) paint nothing.
    ex = WorkflowExecutor()
    await ex.start()
    gate, started = asyncio.Event(), asyncio.Event()

    async def wait(ctx):
        started.set()
        await gate.wait()

    ex.add_handler("extract", wait)
    for name in ("transform", "load", "side"):
        ex.add_handler(name, lambda ctx: None)
    view = RunView(ex, picture=False)
    iid = await ex.execute_workflow(etl(False))  # held at "extract": nothing else runs
    await started.wait()
    assert view.instance_id == iid
    for ev in [ExecEvent(K.NODE_STARTED, 0, iid, "load", 1),
               ExecEvent(K.NODE_FAILED, 0, iid, "load", 1, {"error": "boom"}),
               ExecEvent(K.NODE_SUCCEEDED, 0, iid, "load", 1),
               ExecEvent(K.NODE_STARTED, 0, iid, "side", 2),
               ExecEvent(K.NODE_RETRIED, 0, iid, "side", 1),     # late event of attempt 1
               ExecEvent(K.NODE_SUCCEEDED, 0, iid, "side", 2)]:
        ex.observe.emit(ev)
    view.flush()
    assert view.states == {"extract": "running", "transform": "pending", "load": "pending",
                           "side": "pending"}
    assert view.attempts == {"extract": 1, "transform": 0, "load": 0, "side": 0}
    assert view.counts == {"running": 1, "pending": 3} and not view.problems
    assert view.progress.bar_style == "info" and "1/4" not in view.progress.description
    gate.set()
    result = await ex.wait(iid)
    await asyncio.sleep(0)
    assert_matches_engine(view, result)
    await ex.stop()


async def test_instance_events_from_a_worker_thread_are_handed_to_the_loop(frontend):
    ex = await executor_for(fail=False)
    view = RunView(ex, picture=False)
    seen = []
    real = view._instance_event
    view._instance_event = lambda ev: (seen.append(threading.get_ident()), real(ev))
    d = etl(False)
    iid = await ex.execute_workflow(d)  # started on the loop: the view latched on
    seen.clear()
    thread = threading.Thread(target=view._on_instance_event,
                              args=(ExecEvent(K.INSTANCE_FINISHED, 0.0, iid),))
    thread.start()
    thread.join()
    assert seen == []  # not applied on the worker thread ...
    await asyncio.sleep(0.01)
    assert seen == [threading.get_ident()]  # ... but on the loop's
    await ex.wait(iid)
    await ex.stop()


async def test_updates_per_second_stay_under_the_cap_for_a_10k_node_run(frontend):
    n, width = 10_000, 50
    b = WorkflowBuilder("big")
    nodes = [Node(f"n{i}", handler="step") for i in range(n)]
    b.add_nodes(*nodes)
    for i in range(width, n):
        b.connect(nodes[i - width], nodes[i])
    ex = WorkflowExecutor()
    await ex.start()

    async def step(ctx):
        await asyncio.sleep(0.0002)  # stretch the run over a few seconds of wall time

    ex.add_handler("step", step)
    view = RunView(ex)
    start = time.monotonic()
    result = await ex.run(b.build())
    elapsed = time.monotonic() - start
    assert result.succeeded
    assert_matches_engine(view, result)
    ids = {name: getattr(w, "comm").comm_id for name, w in
           [("progress", view.progress), ("stats", view.stats), ("picture", view.picture)]}
    # 10 text flushes a second (+1 for the forced final one), 2 pictures a second (+1).
    assert frontend.per_second_peak(ids["progress"]) <= 11
    assert frontend.per_second_peak(ids["stats"]) <= 11
    assert frontend.per_second_peak(ids["picture"]) <= 3
    assert view.flushes <= 10 * elapsed + 3
    assert len(frontend.messages) < 200 * (elapsed + 1)
    await ex.stop()


async def test_view_html_is_inert(frontend):
    bad = "<script>alert(1)</script><img src=x onerror=alert(1)>"
    ex = WorkflowExecutor()
    await ex.start()

    def boom(ctx):
        raise ValueError(bad)

    ex.add_handler(bad, boom)
    view = RunView(ex)
    await ex.run(WorkflowBuilder(bad).add_node(Node(bad)).build())

    class Scan(HTMLParser):
        tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            assert not any(k.startswith("on") for k, _ in attrs)

    s = Scan()
    for html in (view.title.value, view.failures.value, view.stats.value):
        s.feed(html)
    assert "failed" in view.failures.value
    assert "script" not in s.tags and "img" not in s.tags
    await ex.stop()


async def test_runview_links_the_dask_dashboard_when_a_runner_has_one():
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.notebook import RunView

    class Runner:  # what RunView reads of a DaskRunner
        dashboard_link = "http://127.0.0.1:8787/status?x=<b>"

        def accepts(self, node):
            return False

    view = RunView(WorkflowExecutor(config=ExecutorConfig(runner=Runner())), picture=False)
    assert 'href="http://127.0.0.1:8787/status?x=&lt;b&gt;"' in view.dashboard.value
    assert RunView(WorkflowExecutor(), picture=False).dashboard is None
    # Through jupyter-server-proxy (Binder, JupyterHub) the link is a path on this server.
    Runner.dashboard_link = "/user/ada/proxy/8787/status"
    view = RunView(WorkflowExecutor(config=ExecutorConfig(runner=Runner())), picture=False)
    assert 'href="/user/ada/proxy/8787/status"' in view.dashboard.value
    for bad in ("javascript:alert(1)", "//evil.example/status"):
        Runner.dashboard_link = bad
        assert RunView(WorkflowExecutor(config=ExecutorConfig(runner=Runner())),
                       picture=False).dashboard is None


async def test_a_finished_view_leaves_a_static_snapshot_in_the_notebook(frontend, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    shell = InteractiveShell.instance()
    published = []
    monkeypatch.setattr(shell.display_pub, "publish",
                        lambda data, metadata=None, transient=None, update=False, **kw:
                        published.append((data, (transient or {}).get("display_id"), update)))
    ex = await executor_for(fail=True)
    view = RunView(ex)
    display(view)
    first, display_id, update = published[0]
    assert display_id and not update
    assert "application/vnd.jupyter.widget-view+json" in first and "text/html" in first
    result = await ex.run(etl(True))
    await view.drawn()
    data, same_id, update = published[-1]
    assert same_id == display_id and update  # the widget's output is replaced in place ...
    assert set(data) == {"text/html", "text/plain"}  # ... by HTML that needs no kernel
    html = data["text/html"]
    picture = 'src="data:image/svg+xml;base64,'  # an <img>: shown in untrusted notebooks too
    assert "failed" in html and f"{len(result.definition.nodes)}/" in html and picture in html

    class Tags(HTMLParser):
        seen: list[tuple[str, list]] = []

        def handle_starttag(self, tag, attrs):
            self.seen.append((tag, attrs))

    tags = Tags()
    tags.feed(html)
    # The only image is the picture as a data URI (an SVG in an <img> runs no script).
    assert not [t for t, attrs in tags.seen
                if t == "script" or any(k.startswith("on") for k, _ in attrs) or (
                    t == "img" and not dict(attrs)["src"].startswith("data:image/svg+xml;"))]
    await ex.stop()


async def test_header_shows_running_state_retry_and_estimate_mid_run(frontend):
    # Mid-run the header names the real state, the retry under way (attempt n of m),
    # the progress and an estimate; the failed first attempt stays listed until the end.
    ex = WorkflowExecutor()
    await ex.start()
    gate = asyncio.Event()
    tries = {"n": 0}

    async def flaky(ctx):
        tries["n"] += 1
        if tries["n"] == 1:
            raise ValueError("first try fails")
        await gate.wait()

    ex.add_handler("flaky", flaky)
    ex.add_handler("quick", lambda ctx: None)
    b = WorkflowBuilder("hdr")
    quick = [Node(f"q{i}", handler="quick") for i in range(3)]
    b.add_nodes(*quick, Node("fetch", handler="flaky", retry=2))
    view = RunView(ex, picture=False, text_interval=0.01)
    iid = await ex.execute_workflow(b.build())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if view.states.get("fetch") == "running" and view.attempts.get("fetch") == 2 \
                and view.counts.get("succeeded") == 3:
            break
    view.flush()
    header = view.title.value
    assert "pending" not in header and "running" in header
    assert "retrying fetch 2/3" in header
    assert "3/4 done" in header and "left" in header
    assert "fetch" in view.failures.value and "first try fails" in view.failures.value
    gate.set()
    await ex.wait(iid)
    await asyncio.sleep(0.05)
    assert view.closed
    header = view.title.value
    assert "finished" in header and "retrying" not in header and "left" not in header
    assert "4/4 done" in header and "done · 0 µs" not in header  # elapsed in seconds
    await ex.stop()


async def test_failures_expand_to_the_handlers_line_and_blame_a_conditions_edge(frontend):
    ex = WorkflowExecutor()
    await ex.start()

    def broken(ctx):
        return {"rows": 1} / 0  # the user's line

    ex.add_handler("broken", broken)
    ex.add_handler("src", lambda ctx: {"rows": 3})
    ex.add_handler("dst", lambda ctx: None)
    b = WorkflowBuilder("tb")
    src, dst = Node("src"), Node("dst")
    b.add_nodes(Node("broken"), src, dst).connect(src, dst, "result.missing > 0")
    view = RunView(ex, picture=False)
    result = await ex.run(b.build())
    assert not result.succeeded
    html = view.failures.value
    assert "<details>" in html and "traceback of <b>broken</b>" in html
    block = html[html.index("traceback of <b>broken</b>"):]
    # The handler's own frame comes first: no engine frame before the user's line.
    pre = block[block.index("<pre"):block.index("</pre>")]
    assert pre.index("in broken") < pre.index("/ 0")
    assert "lion_nb" not in pre.split("in broken")[0]
    # The condition's error names the edge and its source, and says the target never ran.
    assert "the condition on edge &#x27;src&#x27; -&gt; &#x27;dst&#x27;" in html
    assert "never ran" in html
    await ex.stop()


async def test_a_view_asks_the_engine_for_no_event_per_node(frontend):
    # The engine builds no event per node for a view: it reads the run's state per tick.
    from lion_nb.engine import ExecutorConfig

    per_node = {K.NODE_QUEUED, K.NODE_STARTED, K.NODE_SUCCEEDED, K.NODE_FAILED,
                K.NODE_SKIPPED, K.NODE_UPSTREAM_FAILED, K.NODE_CANCELLED}
    for history in (False, True):
        ex = WorkflowExecutor(config=ExecutorConfig(record_history=history))
        await ex.start()
        wanted, sinks = ex.observe.wanted, dict(ex.observe.sinks)
        view = RunView(ex, picture=False)
        assert ex.observe.wanted - wanted <= {K.NODE_RETRIED, K.NODE_RESTORED,
                                              K.NODES_REUSED, K.INSTANCE_STARTED,
                                              K.INSTANCE_FINISHED}
        assert not ex.observe.wanted & per_node if not history else True
        # History keeps its direct path (no event built) for every per-node kind.
        assert {k: ex.observe.sinks.get(k) for k in per_node} == \
            {k: sinks.get(k) for k in per_node}
        view.close()
        await ex.stop()


async def test_a_retry_and_a_failure_show_mid_run_in_a_big_run(frontend):
    # 3,000 nodes: the view reads states per tick, so a failed first attempt, a node that
    # failed for good (with its traceback) and the retry under way all show mid-run.
    ex = WorkflowExecutor()
    await ex.start()
    gate, tries = asyncio.Event(), {"n": 0}

    async def flaky(ctx):
        tries["n"] += 1
        if tries["n"] == 1:
            raise ValueError("first try fails")
        await gate.wait()

    def bad(ctx):
        raise KeyError("no such column")

    ex.add_handler("flaky", flaky)
    ex.add_handler("bad", bad)
    ex.add_handler("quick", lambda ctx: None)
    b = WorkflowBuilder("big-retry")
    quick = [Node(f"q{i}", handler="quick") for i in range(2_998)]
    b.add_nodes(*quick, Node("fetch", handler="flaky", retry=2), Node("broken", handler="bad"))
    view = RunView(ex, picture=False, text_interval=0.01)
    iid = await ex.execute_workflow(b.build())
    for _ in range(500):
        await asyncio.sleep(0.01)
        if view.counts.get("succeeded") == 2_998 and view.counts.get("failed") == 1 \
                and view.attempts.get("fetch") == 2 and view.states["fetch"] == "running":
            break
    view.flush()
    header = view.title.value
    assert "running" in header and "retrying fetch 2/3" in header and "2,999/3,000 done" in header
    listed = view.failures.value
    assert "first try fails" in listed and "no such column" in listed
    assert "traceback of <b>broken</b>" in listed  # expandable before the run ends
    assert view.progress.bar_style == "danger" and not view.closed
    gate.set()
    result = await ex.wait(iid)
    await asyncio.sleep(0)
    assert view.closed
    assert_matches_engine(view, result)
    assert "retrying" not in view.title.value and list(view.problems) == ["broken"]
    await ex.stop()


async def test_a_view_follows_an_instance_run_by_another_executor(frontend, tmp_path):
    # An instance run elsewhere (here another executor on the same SQLite file) is read
    # from the follower's polled snapshot: states mid-run, and the final state at the end.
    from lion_nb.state import SqliteStorage, StateMachineManager

    def executor() -> WorkflowExecutor:
        return WorkflowExecutor(state_manager=StateMachineManager(
            SqliteStorage(tmp_path / "runs.db")))

    worker, watcher = executor(), executor()
    await worker.start()
    await watcher.start()
    gate, started = asyncio.Event(), asyncio.Event()

    async def held(ctx):
        started.set()
        await gate.wait()
        return {"rows": 3}

    worker.add_handler("extract", held)
    for name in ("transform", "load", "side"):
        worker.add_handler(name, lambda ctx: 2)
    iid = await worker.execute_workflow(etl(False))
    await started.wait()
    view = RunView(watcher, picture=False, text_interval=0.01)
    await watcher.follow(iid, interval=0.02)
    for _ in range(300):
        await asyncio.sleep(0.01)
        if view.states.get("extract") == "running":
            break
    assert view.instance_id == iid and view.states["extract"] == "running"
    assert view.counts == {"running": 1, "pending": 3}
    gate.set()
    result = await watcher.wait(iid, timeout=30)
    for _ in range(100):
        if view.closed:
            break
        await asyncio.sleep(0.01)
    assert result.succeeded and view.closed
    assert_matches_engine(view, result)
    await worker.stop()
    await watcher.stop()
