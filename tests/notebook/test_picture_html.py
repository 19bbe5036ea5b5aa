"""Pictures carry an HTML form that JupyterLab shows in untrusted notebooks (issue 18).

JupyterLab refuses ``image/svg+xml`` when a notebook is not trusted (a clone, GitHub,
nbviewer) and strips inline ``<svg>`` from sanitized HTML; an ``<img>`` with a data URI
survives. An ``<img>`` shows no ``<title>`` of its SVG, so a titled box laid over each
node (in percent of the picture) gives it its tooltip; a picture wider than
``ZOOM_WIDTH`` is fitted to the width and opens at its natural size on a click
(``<details>``: no script). The browser suite checks what the page draws and that
hovering reaches each tooltip, untrusted too; this pins the kernel side.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import picture, timeline

ZOOM_WIDTH = 960  # lion_nb.notebook's threshold (px) for fitted pictures with a zoom


class _Tags(HTMLParser):
    """Every start tag of an HTML fragment, in order, with its attributes (unescaped)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.tags if t == tag]


def _svg_of(img: dict[str, str]) -> str:
    prefix = "data:image/svg+xml;base64,"
    assert img["src"].startswith(prefix)
    return base64.b64decode(img["src"][len(prefix):]).decode("utf-8")


def _px(svg: str, attr: str) -> float:
    head = svg[svg.index("<svg"):]
    value = head.split(f'{attr}="', 1)[1].split('"', 1)[0]
    return float(value[:-2]) * 96 / 72 if value.endswith("pt") else float(value.rstrip("px"))


def _tips(tags: _Tags) -> list[tuple[str, dict[str, float]]]:
    """(title, {left, top, width, height} in percent of the picture) of each tooltip box."""
    out = []
    for attrs in tags.all("span"):
        if attrs.get("class") != "lion-nb-tip":
            continue
        place = dict(part.split(":") for part in attrs["style"].split(";"))
        assert place.pop("position") == "absolute"
        out.append((attrs["title"], {k: float(v.rstrip("%")) for k, v in place.items()}))
    return out


def _small():
    a, c = Node("a <b>"), Node("c")
    return WorkflowBuilder("small").add_nodes(a, c).connect(a, c).build()


def test_a_picture_bundle_holds_the_same_svg_as_an_img_data_uri_with_its_summary_as_tooltip():
    bundle = picture(_small())._repr_mimebundle_()
    tags = _Tags(bundle["text/html"])
    [img] = tags.all("img")
    assert _svg_of(img) == bundle["image/svg+xml"]
    assert img["title"] == bundle["text/plain"]  # the node list, on hover
    assert img["alt"] == bundle["text/plain"].splitlines()[0]
    assert "<b>" not in bundle["text/html"].replace("&lt;b&gt;", "")  # user text escaped
    # A white card whatever the theme: the SVG's dark text is drawn for white.
    [card] = [d for d in tags.all("div") if d.get("class") == "lion-nb-picture-card"]
    assert "background:#ffffff" in card["style"] and "max-width:100%" in card["style"]
    assert not tags.all("details")  # small: shown at its natural size, no zoom needed


def test_each_node_gets_a_tooltip_box_over_where_it_is_drawn():
    a, b, c = Node("load \"orders\" <b>"), Node("clean"), Node("report")
    definition = (WorkflowBuilder("tips").add_nodes(a, b, c).connect(a, b).connect(b, c)
                  .build())
    pic = picture(definition, states={a.name: "succeeded", b.name: "failed"},
                  attempts={b.name: 2}, errors={b.name: "ValueError: bad row 7"})
    tags = _Tags(pic.mimebundle()["text/html"])
    tips = _tips(tags)
    assert [t.splitlines()[0] for t, _ in tips] == [a.name, "clean", "report"]
    assert "failed" in tips[1][0] and "ValueError: bad row 7" in tips[1][0]
    assert "attempt 2" in tips[1][0]
    for _, box in tips:
        assert 0 <= box["left"] < box["left"] + box["width"] <= 100.01
        assert 0 <= box["top"] < box["top"] + box["height"] <= 100.01
    # Top to bottom, as the graph is drawn (rankdir TB), and never overlapping.
    tops = [(box["top"], box["top"] + box["height"]) for _, box in tips]
    assert tops[0][1] <= tops[1][0] and tops[1][1] <= tops[2][0]
    # The boxes sit in a frame with the image, which they are placed in percent of.
    [frame] = [d for d in tags.all("div") if d.get("class") == "lion-nb-picture-frame"]
    assert "position:relative" in frame["style"]


def test_a_wide_picture_fits_the_width_and_opens_at_natural_size_on_a_click():
    nodes = [Node(f"a rather long step name {i}") for i in range(14)]
    root = Node("root")
    builder = WorkflowBuilder("wide").add_nodes(root, *nodes)
    for node in nodes:
        builder.connect(root, node)
    pic = picture(builder.build(), full=True)
    assert _px(pic.svg, "width") > ZOOM_WIDTH
    tags = _Tags(pic.mimebundle()["text/html"])
    [details] = tags.all("details")
    assert "open" not in details  # fitted by default
    fitted, natural = tags.all("img")
    assert _svg_of(fitted) == _svg_of(natural) == pic.svg
    assert "max-width:100%" in fitted["style"] and "max-width:none" in natural["style"]
    # Both carry a tooltip per node: the boxes are placed in percent, so they scale.
    assert len(_tips(tags)) == 2 * 15
    [summary] = tags.all("summary")
    assert "natural size" in summary["title"]


def test_the_timeline_shows_untrusted_too_with_a_tooltip_per_bar():
    records = [{"instance_id": "i", "node": "a", "attempt": 1, "state": "succeeded",
                "queued_at": 0.0, "started_at": 0.1, "finished_at": 0.3},
               {"instance_id": "i", "node": "b", "attempt": 1, "state": "failed",
                "queued_at": 0.3, "started_at": 0.3, "finished_at": 0.4, "error": "boom"}]
    bundle = timeline(records)._repr_mimebundle_()
    tags = _Tags(bundle["text/html"])
    [img] = tags.all("img")
    assert _svg_of(img) == bundle["image/svg+xml"]
    titles = [title for title, _ in _tips(tags)]
    assert titles[0].startswith("a · attempt 1 · succeeded")
    assert titles[1].startswith("b · attempt 1 · failed") and "boom" in titles[1]
