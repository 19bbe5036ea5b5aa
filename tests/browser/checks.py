"""Judge a page report (see reader.js): what would a person see that is wrong?

Each check reads one kind of output and returns :class:`Problem` rows; an
empty list means the notebook looks right. Expectations come from the kernel's
side: ``lion_nb`` output metadata when present, else a ``nodes=N edges=M`` line
the cell printed before its picture, else the picture's own ``text/plain``
summary. What is checked against them is what the browser drew::

    problems = find_problems(run.report)
    assert not problems, explain(run.path, problems)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lion_nb.notebook import STATE_STYLE, TERMINAL_STATES

__all__ = [
    "FIRST_SCREEN",
    "WIDGET_MIME",
    "Problem",
    "broken_image_problems",
    "declared_counts",
    "explain",
    "find_problems",
    "outputs_of",
    "printed_marker",
]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STDERR_MIME = "application/vnd.jupyter.stderr"

# What the widget manager writes when it cannot show a view (ipywidgets 8 in
# JupyterLab 4), and what an output that is still waiting for its view shows.
_WIDGET_ERRORS = ("Error displaying widget", "Error creating widget",
                  "Click to show javascript error", "Failed to load model class",
                  "Failed to load view class", "Class .* not found in module")
_PLACEHOLDERS = ("Loading widget", "Loading…", "Loading...")
_MIN_WIDGET_HEIGHT = 4.0  # px: an empty box, as Dask's progress bar once was in JupyterLab

# The first line of lion_nb's text summary of a picture (display.describe).
_DEFINITION = re.compile(r"^Workflow .* — ([\d,]+) nodes, ([\d,]+) edges$")
_INSTANCE = re.compile(r"^Instance of .* — [^;]*; ([\d,]+) nodes:")
_SAGA_STEPS = re.compile(r" — ([\d,]+) steps$")
_SAGA_LISTED = re.compile(r"^  \d+\. ")
# What a tutorial prints just before a picture to declare it: "nodes=4 edges=3 legend=1".
_MARKER = re.compile(r"\bnodes=(\d+) edges=(\d+)(?: legend=(\d+))?")
# A collapsed picture's band: "layer 3 · 40 nodes" or "layers 0–4 · 1,000 nodes".
_BAND = re.compile(r"^(layers? [\d–-]+) · ([\d,]+) nodes$")
_EDGE_COUNT = re.compile(r"^([\d,]+) edges?$")
_PROGRESS_LABEL = re.compile(r"^\s*([\d,]+)\s*/\s*([\d,]+)\s*$")
# A view's text form: "RunView(run-…, succeeded, 4/4 done)", "SagaView(trip-1, failed, …)".
_VIEW_REPR = re.compile(r"^(RunView|SagaView)\((.*)\)$", re.S)
_FINISHED = re.compile(r"\b(succeeded|failed|cancelled|completed|compensated|aborted)\b")
#: px below the top of an error output within which the handler's line must show: what a
#: laptop screen shows of a notebook under the cell that failed.
FIRST_SCREEN = 600

# (fill, border) -> state: fills alone are ambiguous (pending and skipped share one).
_STATE_OF_COLOURS = {(s.fill.lower(), s.border.lower()): name for name, s in STATE_STYLE.items()}


@dataclass(frozen=True)
class Problem:
    """One thing a person would see go wrong: where, what kind, and in words."""

    cell: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"cell {self.cell}: [{self.kind}] {self.message}"


def explain(path: str, problems: Iterable[Problem]) -> str:
    """A failure message listing every problem of one notebook."""
    lines = [f"{path}: what a person would see go wrong in JupyterLab:"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def outputs_of(report: dict[str, Any]) -> Iterable[tuple[int, dict, dict]]:
    """(cell index, model side, DOM side) of every output of every code cell."""
    for cell in report["cells"]:
        for out in cell["outputs"]:
            yield cell["index"], out["model"], out["dom"] or {}


# --- expectations declared by the kernel side ------------------------------------------

def _listed_edges(text_plain: str, nodes: int) -> int | None:
    """Edges counted from describe()'s per-node lines ("name  ← a, b [if cond]  : state").

    Only when the listing is complete (describe() lists at most 40 nodes) and no
    name could make the count ambiguous; otherwise None (edges not checked).
    """
    lines = text_plain.splitlines()[1:]
    if len(lines) != nodes:
        return None
    edges = 0
    for line in lines:
        if "  ← " not in line:
            continue
        preds = line.split("  ← ", 1)[1]
        preds = re.split(r"  [:(]", preds, maxsplit=1)[0]
        preds = re.sub(r" \[if [^\]]*\]", "", preds)
        if "  " in preds:
            return None
        edges += len(preds.split(", "))
    return edges


def declared_counts(model: dict[str, Any], marker: dict[str, int] | None = None
                    ) -> dict[str, Any] | None:
    """Nodes and edges (edges may be None) a DAG picture must show, or None if not one.

    Sources, most explicit first: output metadata ``{"lion_nb": {"nodes": n, "edges":
    m}}`` (under the image/svg+xml key or at the top); a ``nodes=N edges=M`` line the
    cell printed before the picture (``marker``); the first line of lion_nb's text
    summary, which every picture carries as ``text/plain``.
    """
    meta = model.get("metadata") or {}
    tagged = (meta.get("image/svg+xml") or {}).get("lion_nb") or meta.get("lion_nb")
    if isinstance(tagged, dict) and "nodes" in tagged:
        return {"nodes": int(tagged["nodes"]), "edges": tagged.get("edges"),
                "legend": tagged.get("legend"), "kind": "metadata"}
    if marker is not None:
        return {**marker, "kind": "printed"}
    text = model.get("text_plain") or ""
    first = text.splitlines()[0] if text else ""
    if m := _DEFINITION.match(first):
        return {"nodes": _int(m[1]), "edges": _int(m[2]), "legend": None, "kind": "workflow"}
    if m := _INSTANCE.match(first):
        nodes = _int(m[1])
        return {"nodes": nodes, "edges": _listed_edges(text, nodes), "legend": None,
                "kind": "instance"}
    if first.startswith("Saga "):
        m = _SAGA_STEPS.search(first)
        steps = _int(m[1]) if m else sum(1 for line in text.splitlines()
                                         if _SAGA_LISTED.match(line))
        return {"nodes": steps, "edges": None, "legend": None, "kind": "saga"}
    return None


def printed_marker(model: dict[str, Any]) -> dict[str, int | None] | None:
    """``nodes=N edges=M [legend=K]`` from a stream output, or None."""
    if model["output_type"] != "stream" or not model.get("text"):
        return None
    m = _MARKER.search(model["text"])
    if m is None:
        return None
    return {"nodes": int(m[1]), "edges": int(m[2]),
            "legend": int(m[3]) if m[3] is not None else None}


# --- the checks --------------------------------------------------------------------------

def _check_ran(report: dict[str, Any]) -> list[Problem]:
    out = []
    if report.get("kernel") == "dead":
        out.append(Problem(-1, "kernel-dead", "the kernel died during the run"))
    for cell in report["cells"]:
        if cell["type"] != "code":
            continue
        if not cell["executionCount"]:
            out.append(Problem(cell["index"], "not-run",
                               f"never ran (an earlier cell failed?): {cell['source'][:60]!r}"))
        if cell["domOutputs"] != len(cell["outputs"]):
            out.append(Problem(cell["index"], "dom-mismatch",
                               f"the kernel sent {len(cell['outputs'])} outputs, "
                               f"the page shows {cell['domOutputs']}"))
    return out


def _check_errors(cell: int, model: dict, dom: dict) -> list[Problem]:
    out = []
    if model["output_type"] == "error":
        out.append(Problem(cell, "error", f"{model['ename']}: {model['evalue']}"))
    elif dom.get("mime") == STDERR_MIME and "Traceback (most recent call last)" in dom["text"]:
        out.append(Problem(cell, "traceback", "stderr shows a traceback: "
                           + dom["text"].strip().splitlines()[-1][:200]))
    if "Cannot display an untrusted" in dom.get("text", ""):
        out.append(Problem(cell, "untrusted", "JupyterLab refused to display an output"))
    return out


def _check_widget(cell: int, model: dict, dom: dict) -> list[Problem]:
    if WIDGET_MIME not in model["mimes"]:
        return []
    text = dom.get("text", "")
    if dom.get("widgetError"):
        return [Problem(cell, "widget-error", f"widget shows an error: {text.strip()[:200]!r}")]
    for pattern in _WIDGET_ERRORS:
        if re.search(pattern, text):
            return [Problem(cell, "widget-error", f"widget not shown: {text.strip()[:200]!r}")]
    for placeholder in _PLACEHOLDERS:
        if placeholder in text:
            return [Problem(cell, "widget-empty", f"widget still shows {placeholder!r}")]
    if not dom.get("hasWidget") or dom.get("widgetHeight", 0) < _MIN_WIDGET_HEIGHT:
        return [Problem(cell, "widget-empty",
                        f"widget view is an empty box ({dom.get('widgetHeight', 0):.0f}px high)")]
    return []


def _svg_images(dom: dict) -> list[dict]:
    # A wide picture's natural-size copy (opened by a click) is the same picture.
    return [img for img in dom.get("images", []) if ("svg" in img or img.get("kind") == "data")
            and not img.get("zoomCopy")]


def _bands(svg: dict) -> list[tuple[str, int]] | None:
    """(head, node count) of each band of a collapsed picture, or None if not collapsed."""
    bands = []
    for node in svg["nodes"]:
        if node["title"] == "legend":
            continue
        m = _BAND.match(node["text"][0]) if node["text"] else None
        if m is None:
            return None
        bands.append((m[1], _int(m[2])))
    return bands or None


def _legends(svg: dict) -> list[dict]:
    """The legends a picture draws: lion_nb's swatch rows under the graph (g.lion-nb-legend,
    outside the layout), or an older picture's "legend" record node."""
    return list(svg.get("legends", [])) + [
        {"text": n["text"], "swatches": None} for n in svg.get("nodes", [])
        if n["title"] == "legend"]


def _legend_problem(cell: int, where: str, svg: dict) -> list[Problem]:
    """A legend must name the states it explains, each beside a swatch in that state's
    colours (a renderer without HTML labels once printed the node's id, "legend")."""
    out = []
    for legend in _legends(svg):
        named = [state for text in legend["text"] for state in STATE_STYLE
                 if re.search(rf"(^|\s){re.escape(state)}$", text.strip())]
        if not named:
            out.append(Problem(cell, "picture-legend",
                               f"{where!r}: the legend shows {legend['text'][:3]}, "
                               "no state names"))
            continue
        swatches = legend["swatches"]
        if swatches is None:
            continue
        painted = [_STATE_OF_COLOURS.get((s["fill"], s["stroke"])) for s in swatches]
        if len(painted) != len(named) or any(
                p is None or STATE_STYLE[p] != STATE_STYLE[n] for p, n in zip(painted, named)):
            out.append(Problem(cell, "picture-legend",
                               f"{where!r}: the legend's swatches {swatches[:4]} do not match "
                               f"its states {named[:4]}"))
    return out


def _check_picture(cell: int, model: dict, dom: dict,
                   marker: dict[str, Any] | None = None) -> list[Problem]:
    want = declared_counts(model, marker)
    if want is None:
        # Not a DAG (a timeline, a user's SVG): it must still be drawn, untrusted too.
        if "image/svg+xml" in model["mimes"] and not any(
                img["complete"] and img["naturalWidth"] for img in _svg_images(dom)):
            first = (model.get("text_plain") or "").splitlines()[:1]
            return [Problem(cell, "picture-missing",
                            f"{first}: an SVG output the page does not draw")]
        return []
    where = (model.get("text_plain") or "").splitlines()[0][:80]
    if "image/svg+xml" not in model["mimes"]:
        return [Problem(cell, "picture-missing",
                        f"{where!r}: the kernel sent no SVG (no Graphviz renderer worked?)")]
    images = _svg_images(dom)
    if len(images) != 1:
        return [Problem(cell, "picture-missing",
                        f"{where!r}: the page shows {len(images)} SVG images, expected 1")]
    img = images[0]
    if not img["complete"] or not img["naturalWidth"]:
        return [Problem(cell, "picture-broken", f"{where!r}: the browser could not draw the SVG")]
    svg = img.get("svg") or {}
    if "parseError" in svg or "nodes" not in svg:
        return [Problem(cell, "picture-broken",
                        f"{where!r}: SVG does not parse: {svg.get('parseError', 'unreadable')}")]
    nodes = [n for n in svg["nodes"] if n["title"] != "legend"]
    edges = svg["edges"]
    bands = _bands(svg)
    out = _legend_problem(cell, where, svg)
    if bands is not None and want["nodes"] > len(nodes):
        # Collapsed by layer: the bands must account for every node, and the edge
        # labels for every edge between bands (all of them when each band is one layer).
        shown = sum(n for _, n in bands)
        labelled = sum(_int(m[1]) for e in edges for t in e["text"]
                       if (m := _EDGE_COUNT.match(t)))
        if shown != want["nodes"]:
            out.append(Problem(cell, "picture-count",
                               f"{where!r}: bands hold {shown} nodes, declared {want['nodes']}"))
        single_layers = all(head.startswith("layer ") for head, _ in bands)
        if want["edges"] is not None and (labelled > want["edges"] or (
                single_layers and labelled != want["edges"])):
            out.append(Problem(cell, "picture-count", f"{where!r}: band edges say {labelled}, "
                               f"declared {want['edges']}"))
        return out
    titles = [n["title"] for n in nodes]
    if len(nodes) != want["nodes"] or len(set(titles)) != len(titles):
        out.append(Problem(cell, "picture-count", f"{where!r}: the SVG shows {len(nodes)} "
                           f"nodes, declared {want['nodes']}"))
    if want["edges"] is not None and len(edges) != want["edges"]:
        out.append(Problem(cell, "picture-count", f"{where!r}: the SVG shows {len(edges)} "
                           f"edges, declared {want['edges']}"))
    legends = len(_legends(svg))
    if want.get("legend") is not None and legends != want["legend"]:
        out.append(Problem(cell, "picture-count", f"{where!r}: the SVG shows {legends} "
                           f"legends, declared {want['legend']}"))
    return out


def _check_run_view(cell: int, model: dict, dom: dict) -> list[Problem]:
    """A finished RunView: the bar full, n/n done, every node painted in a final state.

    Live, the bar is a progress widget and the picture an image; once finished, the view
    leaves a static snapshot (reader.js reads its bar and inline SVG into the same rows).
    """
    if not (model.get("text_plain") or "").startswith("RunView("):
        return []
    out = []
    bars = dom.get("progress", [])
    if len(bars) != 1:
        return [Problem(cell, "runview-progress", f"{len(bars)} progress bars, expected 1")]
    bar = bars[0]
    m = _PROGRESS_LABEL.match(bar["label"])
    total = _int(m[2]) if m else None
    size = bar["height"] if bar["vertical"] else bar["width"]
    if m is None or total == 0 or _int(m[1]) != total or size.strip() != "100%":
        out.append(Problem(cell, "runview-progress",
                           f"progress shows {bar['label']!r} at {size or '?'}, not n/n at 100%"))
    images = [img for img in dom.get("images", []) if "svg" in img]
    for img in images:
        svg = img["svg"]
        if "nodes" not in svg or not img["naturalWidth"]:
            out.append(Problem(cell, "runview-picture", "the live picture is not drawn"))
            continue
        out.extend(_legend_problem(cell, "RunView", svg))
        painted = [(n["title"], _STATE_OF_COLOURS.get((n["fill"], n["stroke"]), "unknown"))
                   for n in svg["nodes"] if n["title"] != "legend"]
        unfinished = [(t, s) for t, s in painted if s not in TERMINAL_STATES]
        if unfinished:
            out.append(Problem(cell, "runview-colours",
                               f"nodes not in a final state: {unfinished[:8]}"))
        if total is not None and _bands(svg) is None and len(painted) != total:
            out.append(Problem(cell, "runview-picture",
                               f"the live picture shows {len(painted)} nodes, progress {total}"))
    return out


def _check_saga_view(cell: int, model: dict, dom: dict) -> list[Problem]:
    """A SagaView lists compensated steps in the reverse of their forward order.

    reader.js reads the steps (forward order, with status) and the compensation
    path off the page, from the SagaView's layout: a table with "step" and
    "status" columns, and the ordered list under "Compensation path".
    """
    if not (model.get("text_plain") or "").startswith("SagaView("):
        return []
    saga = dom.get("saga")
    if not saga or not saga.get("steps"):
        return [Problem(cell, "saga-layout", "no step/status table found in the SagaView")]
    compensated = [s["step"] for s in saga["steps"] if s["status"] == "compensated"]
    path = saga.get("compensation")
    if compensated and path is None:
        return [Problem(cell, "saga-layout", "steps are compensated but no compensation "
                        "path is shown")]
    if path is not None and path != compensated[::-1]:
        return [Problem(cell, "saga-order", f"compensation shown as {path}, expected "
                        f"{compensated[::-1]} (reverse of the forward order)")]
    return []


def _check_contrast(cell: int, model: dict, dom: dict) -> list[Problem]:
    """Text that fails WCAG AA (4.5:1, large text 3:1) against what is behind it, as
    computed in the page (reader.js: computed colours, backgrounds composed)."""
    faint = dom.get("contrast") or []
    if not faint:
        return []
    shown = "; ".join(f"{f['text']!r} {f['fg']} on {f['bg']} = {f['ratio']}:1 "
                      f"({f['where']})" for f in faint[:4])
    more = f" (+{len(faint) - 4} more)" if len(faint) > 4 else ""
    return [Problem(cell, "contrast", f"{len(faint)} texts below WCAG AA: {shown}{more}")]


def _check_static(cell: int, model: dict, dom: dict) -> list[Problem]:
    """A finished view must have replaced its widget with a static snapshot: a saved
    notebook has no kernel, and a widget there reads "Error displaying widget: model
    not found"."""
    m = _VIEW_REPR.match(model.get("text_plain") or "")
    if m is None:
        return []
    finished = bool(_FINISHED.search(m[2]))
    if finished and WIDGET_MIME in model["mimes"]:
        return [Problem(cell, "view-not-static", f"{m[1]} finished ({m[2][:60]!r}) but its "
                        "output is still a widget: a saved notebook shows 'model not found'")]
    if WIDGET_MIME not in model["mimes"] and not dom.get("snapshot"):
        return [Problem(cell, "view-no-snapshot", f"{m[1]} shows no static snapshot")]
    return []


def _check_tooltips(cell: int, model: dict, dom: dict) -> list[Problem]:
    """A picture shown through ``<img>`` (its SVG's titles lost) carries a titled box
    over each node: one per node, its title starting with the node's name, lying on the
    image, and reached by hovering its centre (the browser hit-tests the box there)."""
    out = []
    for img in dom.get("images", []):
        if img.get("kind") != "data" or "svg" not in img:
            continue  # a live widget's blob, or not an SVG
        nodes = [n for n in img["svg"].get("nodes", []) if n["title"] != "legend"]
        tips = img.get("tooltips")
        where = "zoomed picture" if img.get("zoomCopy") else "picture"
        if tips is None or tips["missing"]:
            if nodes:
                out.append(Problem(cell, "picture-tooltips", f"a {where} of {len(nodes)} "
                                   "nodes has no tooltips: hovering a node shows nothing"))
            continue
        areas = tips["areas"]
        firsts = [a["title"].split("\n", 1)[0] for a in areas]
        missing = [n["text"][0] for n in nodes if n["text"] and not any(
            f.startswith(n["text"][0].split("…", 1)[0].rstrip()) for f in firsts)]
        if len(areas) < len(nodes) or missing:
            out.append(Problem(cell, "picture-tooltips", f"{len(areas)} tooltips for "
                               f"{len(nodes)} nodes; none for {missing[:4]}"))
        astray = [a["title"][:30] for a in areas if not a["onImage"]]
        missed = [(a["title"][:30], a["hitTag"]) for a in areas
                  if img.get("shown") and a["inView"] and not a["hit"]]
        if astray or missed:
            out.append(Problem(cell, "picture-tooltips", f"tooltips off the picture "
                               f"{astray[:3]}, or hovering does not reach them {missed[:3]}"))
    return out


_PER_OUTPUT = (_check_errors, _check_widget, _check_run_view, _check_saga_view,
               _check_contrast, _check_static, _check_tooltips)


def _check_handler_lines(cell: dict) -> list[Problem]:
    """A failing cell that marks its handler's line must show that line in its error
    output within the first screen (FIRST_SCREEN px), not under the engine's frames."""
    failed = any(o["model"]["output_type"] == "error" for o in cell["outputs"])
    if not failed:
        return []
    out = []
    for line in cell.get("handlerLines") or []:
        at = line["at"]
        if at is None:
            out.append(Problem(cell["index"], "error-no-handler-line",
                               f"the error does not show the handler's line {line['needle']!r}"))
        elif at["top"] > FIRST_SCREEN:
            out.append(Problem(cell["index"], "error-buried",
                               f"the handler's line {line['needle']!r} shows {at['top']:.0f}px "
                               f"down the error (first screen: {FIRST_SCREEN}px)"))
    return out


def broken_image_problems(broken: Iterable[dict[str, Any]]) -> list[Problem]:
    """Images seen with the broken-image icon at any moment (driver.NotebookRun)."""
    return [Problem(img["cell"], "image-broken",
                    f"an image showed the broken-image icon ({img['src'] or 'no src'!r}, "
                    f"{img['width']:.0f}x{img['height']:.0f}px)") for img in broken]


def find_problems(report: dict[str, Any],
                  broken_images: Iterable[dict[str, Any]] = ()) -> list[Problem]:
    """Every problem the page report (and the images seen broken while live) shows."""
    problems = _check_ran(report) + broken_image_problems(broken_images)
    for cell in report["cells"]:
        problems.extend(_check_handler_lines(cell))
        marker = None  # a printed "nodes=N edges=M" waits for the cell's next picture
        for out in cell["outputs"]:
            model, dom = out["model"], out["dom"] or {}
            for check in _PER_OUTPUT:
                problems.extend(check(cell["index"], model, dom))
            if (found := printed_marker(model)) is not None:
                marker = found
            elif "image/svg+xml" in model["mimes"] or declared_counts(model):
                problems.extend(_check_picture(cell["index"], model, dom, marker))
                marker = None
        if marker is not None:
            problems.append(Problem(cell["index"], "picture-missing",
                                    f"the cell declared a picture ({marker}) but shows none"))
    return sorted(problems, key=lambda p: p.cell)
