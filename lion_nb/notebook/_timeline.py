"""A Gantt chart of a run's node attempts, drawn as plain SVG (no matplotlib needed).

One row per node (in order of first start), one bar per attempt coloured by
its state from STATE_STYLE, the queue wait drawn as a thin line before it::

    timeline(executor)                    # the latest instance in the history
    timeline(records, instance_id="...")  # a given one; .svg holds the text
"""

from __future__ import annotations

import math
from typing import Any

from ._html import picture_html
from ._style import STATE_STYLE, style_for, states_present
from ._tables import history_records
from ._text import html_text, truncate

__all__ = ["Timeline", "timeline", "MAX_ROWS"]

#: Rows drawn at most; the rest are counted in a footer line.
MAX_ROWS = 200
_LABEL_W, _ROW_H, _PAD = 170, 18, 8


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

    def _draw(self) -> str:
        recs = sorted(self.records, key=lambda r: (_get(r, "started_at"), _get(r, "attempt")))
        rows: dict[str, int] = {}
        for r in recs:
            rows.setdefault(str(_get(r, "node")), len(rows))
        shown = min(len(rows), MAX_ROWS)
        starts = [_get(r, "queued_at") or _get(r, "started_at") for r in recs]
        ends = [_get(r, "finished_at") or _get(r, "started_at") for r in recs]
        t0 = min(starts, default=0.0)
        span = max(max(ends, default=0.0) - t0, 1e-6)
        plot_w = self.width - _LABEL_W - 2 * _PAD
        top = 28
        height = top + shown * _ROW_H + 46 + (14 if len(rows) > shown else 0)
        scale = plot_w / span

        def x(t: float) -> float:
            return _LABEL_W + _PAD + (t - t0) * scale

        wf = _get(recs[0], "workflow") if recs else None
        heading = self.title or f"{wf or 'run'} · {self.instance_id or 'no attempts'}"
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
               f'height="{height}" viewBox="0 0 {self.width} {height}" '
               'font-family="Helvetica,Arial,sans-serif" font-size="11">',
               f'<text x="{_PAD}" y="16" font-size="13" font-weight="bold">'
               f'{html_text(heading, 90)}</text>']
        step = _tick_step(span)
        k = 0
        while k * step <= span + 1e-12:
            tx = x(t0 + k * step)
            out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" '
                       f'y2="{top + shown * _ROW_H}" stroke="#d0d7de" stroke-width="0.5"/>')
            out.append(f'<text x="{tx:.1f}" y="{top + shown * _ROW_H + 14}" '
                       f'text-anchor="middle" fill="#57606a">{k * step:g}s</text>')
            k += 1
        for name, row in rows.items():
            if row >= shown:
                break
            y = top + row * _ROW_H
            out.append(f'<text x="{_LABEL_W}" y="{y + 13}" text-anchor="end">'
                       f'{html_text(name, 26)}</text>')
        for r in recs:
            row = rows[str(_get(r, "node"))]
            if row >= shown:
                continue
            out.append(self._bar(r, top + row * _ROW_H, x))
        legend_y = top + shown * _ROW_H + 32
        lx = _LABEL_W + _PAD
        for state in states_present(_get(r, "state") for r in recs):
            st = STATE_STYLE[state]
            out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" '
                       f'fill="{st.fill}" stroke="{st.border}"/>'
                       f'<text x="{lx + 14}" y="{legend_y}">{state}</text>')
            lx += 24 + 7 * len(state)
        if len(rows) > shown:
            out.append(f'<text x="{_PAD}" y="{legend_y + 16}" fill="#57606a">… '
                       f'{len(rows) - shown:,} more nodes not drawn</text>')
        out.append("</svg>")
        return "".join(out)

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
            tip += f" · {dur:.3f}s"
        if _get(r, "error"):
            tip += f"\n{truncate(_get(r, 'error'), 300)}"
        parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{x1 - x0:.1f}" height="12" '
                     f'rx="2" fill="{st.fill}" stroke="{st.border}">'
                     f'<title>{html_text(tip, 400)}</title></rect>')
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
