"""HTML pieces of the live views; every piece of user text is escaped here, nowhere else."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

from ._style import STATE_ORDER, style_for
from ._text import html_text

__all__ = ["BAR_COLOURS", "bar_html", "chip", "failures_html", "figure_html", "items_html",
           "picture_html", "progress_html", "snapshot_html", "stats_html", "table_html",
           "title_html"]

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


def picture_html(svg: str, title: str = "") -> str:
    """An SVG as an ``<img>`` data URI on a white card, with ``title`` as its tooltip.

    JupyterLab shows ``image/svg+xml`` only in trusted notebooks and strips inline
    ``<svg>`` from the HTML of untrusted ones, but keeps an ``<img>`` with a data URI:
    this is what a clone, GitHub or nbviewer shows. The card is white in every theme
    because the pictures' colours (state fills, dark text) are chosen for white.
    """
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    first = title.splitlines()[0] if title else "picture"
    return (f'<img class="lion-nb-picture" src="data:image/svg+xml;base64,{data}" '
            f'alt="{html_text(first, 200)}" title="{html_text(title, 4000)}" '
            'style="background:#ffffff;padding:4px;border-radius:4px;max-width:100%;'
            'height:auto">')


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
