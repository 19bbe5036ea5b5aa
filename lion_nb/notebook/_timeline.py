"""A Gantt chart of a run's node attempts, drawn as plain SVG (no matplotlib needed).

One row per node (in order of first start), one bar per attempt coloured by
its state from STATE_STYLE, the queue wait drawn as a thin line before it, the
duration written on bars wide enough to hold it, the axis in µs, ms or s. Above
``MAX_ROWS`` nodes the rows are groups instead: nodes whose names differ only by
numbers (``crunch-1``, ``crunch-2``: ``crunch-#``), split into runs of nodes so
about ``GROUP_ROWS`` rows remain, each drawing the spans its attempts cover per
state, with counts in its label and tooltip. The chart has its own white
background, so it stays legible under a dark theme::

    timeline(executor)                    # the latest instance in the history
    timeline(records, instance_id="...")  # a given one; .svg holds the text
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, NamedTuple

from ._html import picture_html
from ._style import STATE_STYLE, style_for, states_present
from ._tables import history_records
from ._text import format_seconds, html_text, truncate

__all__ = ["GROUP_ROWS", "MAX_ROWS", "Timeline", "timeline"]

#: Up to this many nodes a chart has one row per node; above, rows are groups of nodes.
MAX_ROWS = 200
#: About this many rows in a grouped chart.
GROUP_ROWS = 60
_LABEL_W, _ROW_H, _PAD = 190, 18, 8
_INK, _MUTED = "#1f2328", "#57606a"
_DIGITS = re.compile(r"\d+")
# (unit, seconds per unit) for the axis, from the smallest span up.
_UNITS = ((1e-3, "µs", 1e6), (1.0, "ms", 1e3), (math.inf, "s", 1.0))


class _Lane(NamedTuple):
    """One row of the chart: a node, or a group of nodes drawn as covered spans."""

    label: str
    nodes: int           # 1 for a node's own row
    records: list[Any]


def _get(record: Any, name: str) -> Any:
    value = record.get(name) if isinstance(record, dict) else getattr(record, name, None)
    return getattr(value, "value", value)


def _tick_step(span: float) -> float:
    # 1-2-5 steps giving about six ticks: readable whatever the run's length.
    raw = span / 6 or 1.0
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


class Timeline:
    """The SVG Gantt chart of one instance's attempts; displays itself."""

    def __init__(self, records: list[Any], *, instance_id: str | None = None,
                 width: int = 820, title: str | None = None) -> None:
        if instance_id is None and records:
            instance_id = _get(records[-1], "instance_id")
        self.instance_id = instance_id
        self.records = [r for r in records if _get(r, "instance_id") == instance_id
                        and _get(r, "started_at") is not None]
        self.width = width
        self.title = title
        self.svg = self._draw()

    def _lanes(self, recs: list[Any]) -> list[_Lane]:
        by_node: dict[str, list[Any]] = {}
        for r in recs:
            by_node.setdefault(str(_get(r, "node")), []).append(r)
        if len(by_node) <= MAX_ROWS:
            return [_Lane(name, 1, rs) for name, rs in by_node.items()]
        # Group nodes whose names differ only by numbers, in order of first start; a
        # big group is cut into runs of nodes so the chart keeps about GROUP_ROWS rows.
        families: dict[str, list[str]] = {}
        for name in by_node:
            families.setdefault(_DIGITS.sub("#", name), []).append(name)
        if len(families) > GROUP_ROWS:  # no shared patterns: runs of nodes in start order
            families = {"nodes": list(by_node)}
        per_lane = max(1, math.ceil(len(by_node) / GROUP_ROWS))
        lanes = []
        for family, names in families.items():
            for k in range(0, len(names), per_lane):
                part = names[k:k + per_lane]
                label = family if len(names) <= per_lane else \
                    f"{family} {k + 1:,}–{k + len(part):,}"
                lanes.append(_Lane(label, len(part), [r for n in part for r in by_node[n]]))
        return lanes

    def _draw(self) -> str:
        recs = sorted(self.records, key=lambda r: (_get(r, "started_at"), _get(r, "attempt")))
        lanes = self._lanes(recs)
        shown = min(len(lanes), MAX_ROWS)
        starts = [_get(r, "queued_at") or _get(r, "started_at") for r in recs]
        ends = [_get(r, "finished_at") or _get(r, "started_at") for r in recs]
        t0 = min(starts, default=0.0)
        span = max(max(ends, default=0.0) - t0, 1e-6)
        plot_w = self.width - _LABEL_W - 2 * _PAD
        top = 28
        height = top + shown * _ROW_H + 46 + (14 if len(lanes) > shown else 0)
        scale = plot_w / span

        def x(t: float) -> float:
            return _LABEL_W + _PAD + (t - t0) * scale

        wf = _get(recs[0], "workflow") if recs else None
        heading = self.title or f"{wf or 'run'} · {self.instance_id or 'no attempts'}"
        grouped = any(lane.nodes > 1 for lane in lanes)
        if grouped:
            heading += f" · {sum(lane.nodes for lane in lanes):,} nodes in {len(lanes)} groups"
        # An opaque background and explicit ink: legible under a dark notebook theme too.
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
               f'height="{height}" viewBox="0 0 {self.width} {height}" '
               f'font-family="Helvetica,Arial,sans-serif" font-size="11" fill="{_INK}">',
               f'<rect width="{self.width}" height="{height}" fill="#ffffff"/>',
               f'<text x="{_PAD}" y="16" font-size="13" font-weight="bold">'
               f'{html_text(heading, 110)}</text>']
        step = _tick_step(span)
        per_unit, unit = next((m, u) for limit, u, m in _UNITS if span < limit)
        k = 0
        while k * step <= span + 1e-12:
            tx = x(t0 + k * step)
            out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" '
                       f'y2="{top + shown * _ROW_H}" stroke="#d0d7de" stroke-width="0.5"/>')
            out.append(f'<text x="{tx:.1f}" y="{top + shown * _ROW_H + 14}" '
                       f'text-anchor="middle" fill="{_MUTED}">'
                       f'{round(k * step * per_unit, 9):g} {unit}</text>')
            k += 1
        for row, lane in enumerate(lanes[:shown]):
            y = top + row * _ROW_H
            if lane.nodes == 1:
                out.append(f'<text x="{_LABEL_W}" y="{y + 13}" text-anchor="end">'
                           f'{html_text(lane.label, 30)}</text>')
                out.extend(self._bar(r, y, x) for r in lane.records)
            else:
                out.append(self._group(lane, y, x, 1.0 / scale))
        legend_y = top + shown * _ROW_H + 32
        lx = _LABEL_W + _PAD
        for state in states_present(_get(r, "state") for r in recs):
            st = STATE_STYLE[state]
            out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" '
                       f'fill="{st.fill}" stroke="{st.border}"/>'
                       f'<text x="{lx + 14}" y="{legend_y}">{state}</text>')
            lx += 24 + 7 * len(state)
        if len(lanes) > shown:
            out.append(f'<text x="{_PAD}" y="{legend_y + 16}" fill="{_MUTED}">… '
                       f'{len(lanes) - shown:,} more rows not drawn</text>')
        out.append("</svg>")
        return "".join(out)

    @staticmethod
    def _group(lane: _Lane, y: float, x: Any, pixel: float) -> str:
        """A group's row: per state, the spans its attempts cover (merged under a pixel)."""
        states: Counter[str] = Counter(str(_get(r, "state")) for r in lane.records)
        tip = f"{lane.label}: {lane.nodes:,} nodes, {len(lane.records):,} attempts · " + \
            " · ".join(f"{s} {n:,}" for s, n in states.most_common())
        parts = [f'<text x="{_LABEL_W}" y="{y + 13}" text-anchor="end">'
                 f'<title>{html_text(tip, 400)}</title>{html_text(lane.label, 24)} '
                 f'<tspan fill="{_MUTED}">({lane.nodes:,})</tspan></text>']
        for state in states:
            spans = sorted((_get(r, "started_at"), _get(r, "finished_at") or
                            _get(r, "started_at")) for r in lane.records
                           if str(_get(r, "state")) == state)
            merged: list[list[float]] = []
            for a, b in spans:
                if merged and a <= merged[-1][1] + pixel:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            st = style_for(state)
            for a, b in merged:
                x0 = x(a)
                parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" '
                             f'width="{max(x(b) - x0, 1.5):.1f}" height="12" fill="{st.fill}" '
                             f'stroke="{st.border}" stroke-width="0.6">'
                             f'<title>{html_text(tip, 400)}</title></rect>')
        return "".join(parts)

    @staticmethod
    def _bar(r: Any, y: float, x: Any) -> str:
        start, end = _get(r, "started_at"), _get(r, "finished_at")
        queued, state = _get(r, "queued_at"), _get(r, "state")
        st = style_for(state)
        x0 = x(start)
        x1 = max(x(end if end is not None else start), x0 + 1.5)
        parts = []
        if queued is not None and queued < start:
            parts.append(f'<line x1="{x(queued):.1f}" y1="{y + 9}" x2="{x0:.1f}" y2="{y + 9}" '
                         f'stroke="{st.border}" stroke-dasharray="2,2"/>')
        dur = (end - start) if end is not None else None
        tip = f"{_get(r, 'node')} · attempt {_get(r, 'attempt')} · {state}"
        if dur is not None:
            tip += f" · {format_seconds(dur)}"
        if _get(r, "error"):
            tip += f"\n{truncate(_get(r, 'error'), 300)}"
        parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{x1 - x0:.1f}" height="12" '
                     f'rx="2" fill="{st.fill}" stroke="{st.border}">'
                     f'<title>{html_text(tip, 400)}</title></rect>')
        if dur is not None and x1 - x0 >= 48:  # room for "150.9 ms" inside the bar
            parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y + 12.5}" font-size="9" '
                         f'text-anchor="middle" fill="{st.font}" pointer-events="none">'
                         f'{format_seconds(dur)}</text>')
        return "".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"image/svg+xml": self.svg, "text/html": picture_html(self.svg, repr(self)),
                "text/plain": repr(self)}

    def __repr__(self) -> str:
        nodes = len({str(_get(r, "node")) for r in self.records})
        ident = None if self.instance_id is None else str(self.instance_id)
        return (f"Timeline({ident!r}: {len(self.records)} attempts "
                f"of {nodes} nodes)")


def timeline(source: Any, *, instance_id: str | None = None, width: int = 820,
             title: str | None = None) -> Timeline:
    """The Gantt chart of ``instance_id`` (default: the last recorded instance)."""
    return Timeline(history_records(source), instance_id=instance_id, width=width, title=title)
