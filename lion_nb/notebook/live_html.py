"""The small HTML fragments live views show; every piece of user text is escaped here."""

from __future__ import annotations

from typing import Mapping, Sequence

from .style import STATE_ORDER, STATE_STYLE
from .text import html_text

__all__ = ["title_html", "stats_html", "failures_html", "state_chip"]


def title_html(name: str | None, state: str | None, instance_id: str | None) -> str:
    """Workflow name, instance state and id."""
    if name is None:
        return "<b>waiting for a run…</b>"
    ident = f" <small>{html_text(instance_id, 40)}</small>" if instance_id else ""
    return f"<b>{html_text(name, 80)}</b> — {html_text(state or 'pending')}{ident}"


def state_chip(state: str, count: int) -> str:
    """A coloured ``glyph state count`` badge in STATE_STYLE colours."""
    st = STATE_STYLE[state]
    return (f'<span style="background:{st.fill};border:1px solid {st.border};'
            f'color:{st.font};padding:0 4px;border-radius:3px">{st.glyph} {state} '
            f"{count:,}</span>")


def stats_html(counts: Mapping[str, int], elapsed: float) -> str:
    """One chip per state present, then the elapsed time."""
    chips = [state_chip(s, counts[s]) for s in STATE_ORDER if counts.get(s, 0) > 0]
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
