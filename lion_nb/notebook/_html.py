"""HTML pieces of the live views; every piece of user text is escaped here, nowhere else."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

from ._hotspots import hotspots, svg_size
from ._style import STATE_ORDER, style_for
from ._text import html_text

__all__ = ["BAR_COLOURS", "bar_html", "chip", "failures_html", "figure_html", "items_html",
           "picture_html", "progress_html", "snapshot_html", "stats_html", "table_html",
           "title_html", "ZOOM_WIDTH"]

#: Bar colours of the progress styles ipywidgets uses (info, success, danger, warning).
BAR_COLOURS = {"info": "#54aeff", "success": "#2da44e", "danger": "#cf222e",
               "warning": "#d4a72c", "": "#54aeff"}

_CELL = "padding:1px 8px;text-align:left"


def chip(state: str, text: str | None = None) -> str:
    """A badge in the STATE_STYLE colours of ``state``, showing ``text`` (default: the state)."""
    st = style_for(state)
    label = html_text(state if text is None else text, 80)
    glyph = f"{st.glyph} " if st.glyph else ""
    return (f'<span style="background:{st.fill};border:1px solid {st.border};'
            f'color:{st.font};padding:0 4px;border-radius:3px">{glyph}{label}</span>')


def figure_html(label: str, value: str, alarm: bool = False) -> str:
    """``label value`` with the value bold (in the "failed" colours when ``alarm``); escaped."""
    # Red text alone fails WCAG AA on one theme or the other: the alarm brings its own
    # light background, as chips do, so it reads the same in JupyterLab Light and Dark.
    st = style_for("failed")
    colour = (f";color:{st.font};background:{st.fill};padding:0 3px;border-radius:3px"
              if alarm else "")
    return (f"<span style='margin-right:12px'>{html_text(label)} "
            f"<b style='font-variant-numeric:tabular-nums{colour}'>{html_text(value)}</b></span>")


def bar_html(value: int, scale: int, colour: str = "#54aeff", width: int = 160) -> str:
    """A horizontal bar ``value/scale`` of ``width`` pixels (no user text)."""
    px = 0 if scale <= 0 else round(width * min(value, scale) / scale)
    return (f"<span style='display:inline-block;width:{width}px;background:#f6f8fa;"
            f"border:1px solid #d0d7de;height:10px'><span style='display:block;width:{px}px;"
            f"height:10px;background:{colour}'></span></span>")


def table_html(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A compact table; header cells are escaped, row cells must be escaped HTML already."""
    head = "".join(f"<th style='{_CELL}'>{html_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{body}</table>"


def items_html(items: Sequence[str], ordered: bool = False, empty: str = "") -> str:
    """A list of already escaped HTML items (``empty`` text when there are none)."""
    if not items:
        return f"<small>{html_text(empty)}</small>" if empty else ""
    tag = "ol" if ordered else "ul"
    return f"<{tag} style='margin:2px 0'>{''.join(f'<li>{i}</li>' for i in items)}</{tag}>"


def title_html(name: str | None, state: str | None, instance_id: str | None) -> str:
    """Workflow name, instance state and id."""
    if name is None:
        return "<b>waiting for a run…</b>"
    ident = f" <small>{html_text(instance_id, 40)}</small>" if instance_id else ""
    return f"<b>{html_text(name, 80)}</b> — {html_text(state or 'pending')}{ident}"


def stats_html(counts: Mapping[str, int], elapsed: float) -> str:
    """One chip per state present, then the elapsed time."""
    chips = [chip(s, f"{s} {counts[s]:,}") for s in STATE_ORDER if counts.get(s, 0) > 0]
    return f"{' '.join(chips)} &nbsp; <small>elapsed {elapsed:.1f}s</small>"


def failures_html(nodes: Sequence[str], states: Mapping[str, str],
                  attempts: Mapping[str, int], errors: Mapping[str, str], limit: int,
                  total: int, note: str = "") -> str:
    """A list of nodes in trouble (failed, upstream failed, retrying) with their errors."""
    tail = f"<p><small>{html_text(note)}</small></p>" if note else ""
    if not nodes:
        return tail
    items = []
    for n in nodes[:limit]:
        tries = f" (attempt {attempts[n]})" if attempts.get(n, 0) > 1 else ""
        error = errors.get(n)
        detail = f": <code>{html_text(error, 200)}</code>" if error else ""
        items.append(f"<li><b>{html_text(n, 60)}</b> {html_text(states.get(n, ''))}"
                     f"{tries}{detail}</li>")
    if total > limit:
        items.append(f"<li>… {total - limit:,} more</li>")
    return f"<ul style='margin:2px 0'>{''.join(items)}</ul>{tail}"


#: Pictures wider than this (CSS px) are shown fitted to the output's width, and a click
#: opens them at their natural size.
ZOOM_WIDTH = 960

# The card the pictures sit on: white in every theme, because their colours (state fills,
# dark text) are chosen for white.
_CARD = "background:#ffffff;padding:4px;border-radius:4px;box-sizing:border-box"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%"


def _framed(img: str, svg: str, size: tuple[float, float] | None, fit: bool) -> str:
    """``img`` in a frame as big as the image, with a titled box over each node (or bar).

    An ``<img>`` shows none of its SVG's ``<title>`` tooltips. A client-side image map
    cannot bring them back: JupyterLab's sanitizer renames the map's id and drops its
    name, so ``usemap`` finds nothing in an untrusted notebook. Empty boxes placed in
    percent of the frame over each node do survive it (``title``, absolute position),
    and they scale with the image when it is fitted to a narrow output.
    """
    boxes = []
    if size is not None:
        width, height = size
        for spot in hotspots(svg):
            left, top, right, bottom = spot.box
            place = (f"left:{_percent(left, width)};top:{_percent(top, height)};"
                     f"width:{_percent(right - left, width)};"
                     f"height:{_percent(bottom - top, height)}")
            boxes.append(f'<span class="lion-nb-tip" title="{html_text(spot.title, 2000)}" '
                         f'style="position:absolute;{place}"></span>')
    limit = "max-width:100%;" if fit else ""
    return ('<div class="lion-nb-picture-frame" style="position:relative;'
            f'display:inline-block;{limit}vertical-align:top">{img}{"".join(boxes)}</div>')


def picture_html(svg: str, title: str = "") -> str:
    """An SVG as an ``<img>`` data URI on a white card, with a tooltip per node.

    JupyterLab shows ``image/svg+xml`` only in trusted notebooks and strips inline
    ``<svg>`` from the HTML of untrusted ones, but keeps an ``<img>`` with a data URI:
    this is what a clone, GitHub or nbviewer shows. ``title`` is the image's tooltip;
    each node (or timeline bar) has its own, from the SVG. A picture wider than
    ``ZOOM_WIDTH`` is fitted to the output's width; clicking it opens its natural size
    below (scroll to pan), clicking again closes it: a ``<details>`` element, so it
    works untrusted, where no script runs.
    """
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    first = title.splitlines()[0] if title else "picture"

    def img(kind: str, fit: bool) -> str:
        scale = "max-width:100%;height:auto" if fit else "max-width:none"
        return (f'<img class="{kind}" src="data:image/svg+xml;base64,{data}" '
                f'alt="{html_text(first, 200)}" title="{html_text(title, 4000)}" '
                f'style="display:block;{scale}">')

    size = svg_size(svg)
    fitted = (f'<div class="lion-nb-picture-card" style="{_CARD};display:inline-block;'
              f'max-width:100%">{_framed(img("lion-nb-picture", True), svg, size, True)}</div>')
    if size is None or size[0] <= ZOOM_WIDTH:
        return fitted
    width, height = (round(v) for v in size)
    hint = (f"⤢ {width:,}×{height:,} px, fitted to the width: click the picture for its "
            "natural size (scroll to pan), click again to close it")
    natural = _framed(img("lion-nb-picture-natural", False), svg, size, False)
    return (f'<details class="lion-nb-zoom" style="max-width:100%">'
            f'<summary title="{html_text(hint)}" style="display:block;list-style:none;'
            f'cursor:zoom-in">{fitted}<div><small>{html_text(hint)}</small></div></summary>'
            f'<div class="lion-nb-picture-card lion-nb-natural" style="{_CARD};'
            f'overflow:auto;max-height:900px;max-width:100%">{natural}</div></details>')


def progress_html(value: int, maximum: int, bar_style: str, description: str) -> str:
    """A progress widget's look in plain HTML: the bar in its style's colour, then its text."""
    colour = BAR_COLOURS.get(bar_style or "", BAR_COLOURS["info"])
    bar = bar_html(value, max(maximum, 1), colour, 240)
    return f"{bar} <small>{html_text(description)}</small>"


def snapshot_html(parts: Iterable[str]) -> str:
    """A view's state as static HTML (what a saved notebook shows where widgets cannot).

    ``parts`` are HTML made by the helpers above, already escaped.
    """
    body = "".join(f"<div>{part}</div>" for part in parts if part)
    return f"<div class='lion-nb-snapshot'>{body}</div>"
