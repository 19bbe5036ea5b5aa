"""Where each node, bar or labelled edge of an SVG picture lies, with its tooltip text.

An SVG shown through ``<img>`` (how lion_nb's pictures survive untrusted notebooks)
loses its ``<title>`` tooltips; boxes laid over the image, one per node, bring them
back (see ``picture_html``). Graphviz can say where its nodes are (``-Tcmapx``), but
that is a second layout of every picture, and the timeline is not Graphviz at all;
the SVG already says where each node is, so the boxes are read from it::

    size = svg_size(svg)        # (width, height) in CSS pixels, as an <img> shows it
    for spot in hotspots(svg):  # spot.box: (left, top, right, bottom) in those pixels
        spot.title
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Hotspot", "hotspots", "svg_size"]

_SVG = "{http://www.w3.org/2000/svg}"
_XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"({_NUMBER})[ ,]({_NUMBER})")
_LENGTH = re.compile(rf"^\s*({_NUMBER})\s*(pt|px)?\s*$")
_SCALE = re.compile(rf"scale\(\s*({_NUMBER})(?:[ ,]+({_NUMBER}))?\s*\)")
_TRANSLATE = re.compile(rf"translate\(\s*({_NUMBER})(?:[ ,]+({_NUMBER}))?\s*\)")
_PX_PER_PT = 96 / 72
_SHAPES = {f"{_SVG}{t}" for t in ("path", "polygon", "polyline", "ellipse", "rect", "circle")}
_CHAR_WIDTH = 0.55  # of the font size: Helvetica's average glyph, for text boxes


class Hotspot(NamedTuple):
    """A rectangle of the picture, in CSS pixels at its natural size, and its tooltip."""

    box: tuple[int, int, int, int]
    title: str


def _length(value: str | None) -> float | None:
    m = _LENGTH.match(value or "")
    if m is None:
        return None
    return float(m.group(1)) * (_PX_PER_PT if m.group(2) == "pt" else 1.0)


def _parse(svg: str) -> ET.Element | None:
    try:
        # The SVG is one lion_nb made (Graphviz's or the timeline's): no external entities.
        return ET.fromstring(svg.encode("utf-8"))
    except ET.ParseError:
        return None


def svg_size(svg: str) -> tuple[float, float] | None:
    """The picture's natural size in CSS pixels (``pt`` converted), or None if unknown."""
    root = _parse(svg)
    return None if root is None else _size(root)


def _size(root: ET.Element) -> tuple[float, float] | None:
    width, height = _length(root.get("width")), _length(root.get("height"))
    return None if width is None or height is None else (width, height)


class _Frame(NamedTuple):
    """From user units to pixels: p_px = ((p + translate) * scale - origin) * k."""

    tx: float
    ty: float
    sx: float
    sy: float
    ox: float
    oy: float
    kx: float
    ky: float

    def box(self, xs: list[float], ys: list[float]) -> tuple[int, int, int, int]:
        px = [((x + self.tx) * self.sx - self.ox) * self.kx for x in xs]
        py = [((y + self.ty) * self.sy - self.oy) * self.ky for y in ys]
        return (int(min(px)), int(min(py)), int(max(px) + 0.999), int(max(py) + 0.999))


def _frame(root: ET.Element, graph: ET.Element | None) -> _Frame | None:
    size = _size(root)
    if size is None:
        return None
    view = [float(v) for v in re.findall(_NUMBER, root.get("viewBox") or "")]
    ox, oy, vw, vh = view if len(view) == 4 else (0.0, 0.0, size[0], size[1])
    transform = graph.get("transform", "") if graph is not None else ""
    scale, move = _SCALE.search(transform), _TRANSLATE.search(transform)
    sx = float(scale.group(1)) if scale else 1.0
    sy = float(scale.group(2) or scale.group(1)) if scale else 1.0
    tx = float(move.group(1)) if move else 0.0
    ty = float(move.group(2) or 0.0) if move else 0.0
    return _Frame(tx, ty, sx, sy, ox, oy, size[0] / (vw or 1.0), size[1] / (vh or 1.0))


def _points(shape: ET.Element) -> tuple[list[float], list[float]]:
    tag = shape.tag[len(_SVG):]
    if tag in ("ellipse", "circle"):
        cx, cy = float(shape.get("cx", 0)), float(shape.get("cy", 0))
        rx = float(shape.get("rx", shape.get("r", 0)))
        ry = float(shape.get("ry", shape.get("r", 0)))
        return [cx - rx, cx + rx], [cy - ry, cy + ry]
    if tag == "rect":
        x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
        return [x, x + float(shape.get("width", 0))], [y, y + float(shape.get("height", 0))]
    pairs = _PAIR.findall(shape.get("points") or shape.get("d") or "")
    return [float(a) for a, _ in pairs], [float(b) for _, b in pairs]


def _text_box(text: ET.Element) -> tuple[list[float], list[float]]:
    """A text's approximate box: its glyphs' average width, one font size high."""
    x, y = float(text.get("x", 0)), float(text.get("y", 0))
    size = float(text.get("font-size", 11))
    width = _CHAR_WIDTH * size * len("".join(text.itertext()))
    anchor = text.get("text-anchor", "start")
    left = x - width / 2 if anchor == "middle" else x - width if anchor == "end" else x
    return [left, left + width], [y - size, y + size * 0.25]


def _texts(group: ET.Element) -> str:
    lines = ("".join(t.itertext()).strip() for t in group.iter(f"{_SVG}text"))
    return "\n".join(line for line in lines if line)


def _graphviz_spots(graph: ET.Element, frame: _Frame) -> list[Hotspot]:
    nodes: list[Hotspot] = []
    edges: list[Hotspot] = []
    for group in graph.iter(f"{_SVG}g"):
        kind = group.get("class")
        if kind not in ("node", "edge"):
            continue
        link = next((a for a in group.iter(f"{_SVG}a") if a.get(_XLINK_TITLE)), None)
        if kind == "edge":
            # An edge's line would cover the nodes around it: only a labelled edge with a
            # tooltip of its own (say, a condition that raised) gets an area, its label's.
            labels = list(group.iter(f"{_SVG}text"))
            if link is None or not labels:
                continue
            boxes = [_text_box(t) for t in labels]
        else:
            boxes = [_points(s) for s in group.iter() if s.tag in _SHAPES]
        xs = [x for bx, _ in boxes for x in bx]
        ys = [y for _, by in boxes for y in by]
        if not xs or not ys:
            continue
        title = link.get(_XLINK_TITLE, "") if link is not None else _texts(group)
        (nodes if kind == "node" else edges).append(Hotspot(frame.box(xs, ys), title))
    # Nodes first: where an edge label's area overlaps a node, the first area wins.
    return nodes + edges


def _titled_spots(root: ET.Element, frame: _Frame) -> Iterator[Hotspot]:
    # Shapes and texts carrying their own <title> (the timeline's bars and group labels).
    for el in root.iter():
        title = el.find(f"{_SVG}title")
        if title is None or el.tag not in _SHAPES | {f"{_SVG}text"}:
            continue
        xs, ys = _text_box(el) if el.tag == f"{_SVG}text" else _points(el)
        if xs and ys:
            yield Hotspot(frame.box(xs, ys), "".join(title.itertext()))


def hotspots(svg: str) -> list[Hotspot]:
    """Nodes (and labelled edges with a tooltip) of a Graphviz SVG, or titled shapes of any
    other SVG, with their tooltips; empty when the SVG cannot be read."""
    root = _parse(svg)
    if root is None:
        return []
    graph = next((g for g in root.iter(f"{_SVG}g") if g.get("class") == "graph"), None)
    frame = _frame(root, graph)
    if frame is None:
        return []
    spots = _graphviz_spots(graph, frame) if graph is not None else _titled_spots(root, frame)
    return [s for s in spots if s.title]
