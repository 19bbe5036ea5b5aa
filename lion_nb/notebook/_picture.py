"""Pictures that display themselves: SVG when a renderer works, else text + escaped DOT.

``picture(obj)`` accepts a WorkflowDefinition or an instance result/snapshot
and returns a :class:`Picture`; the renderers registered for the "workflow"
and "instance" display kinds are this same path, so ``definition`` alone in a
cell and ``picture(definition)`` look identical::

    picture(definition)                       # inline SVG
    picture(result, full=True).svg            # every node of a big run
    picture(definition, node_style=lambda node, state: {"shape": "ellipse"})
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from typing import Any

from ..errors import UnsupportedSourceError
from ._dot import instance_overlay, shown_states
from ._html import picture_html
from ._legend import with_legend
from ._render import INSTALL_HINT, RenderOutcome, render_svg
from ._style import STATE_ORDER
from ._text import counted, html_text, truncate

__all__ = ["Picture", "describe", "picture"]

_LIST_LIMIT = 40


def _state(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _is_instance(obj: Any) -> bool:
    return getattr(obj, "_display_kind", None) == "instance" or (
        hasattr(obj, "definition") and hasattr(obj, "node_states"))


def describe(obj: Any) -> str:
    """A plain-text summary of a definition, instance or saga (names cleaned and truncated)."""
    from ._saga_picture import describe_saga, is_saga

    if is_saga(obj):
        return describe_saga(obj)
    instance = _is_instance(obj)
    definition = obj.definition if instance else obj
    states, reasons = shown_states(obj) if instance else ({}, {})
    attempts = dict(getattr(obj, "attempts", None) or {}) if instance else {}
    errors = dict(getattr(obj, "errors", None) or {}) if instance else {}
    n, m = len(definition.nodes), len(definition.edges)
    if instance:
        counts = Counter(_state(s) for s in states.values())
        tally = ", ".join(f"{s} {counts[s]}" for s in STATE_ORDER if counts.get(s))
        ident = getattr(obj, "instance_id", None) or getattr(obj, "id", "")
        head = (f"Instance of {truncate(definition.name)!r} {truncate(ident, 40)} — "
                f"{_state(getattr(obj, 'state', None))}; {counted(n, 'node')}: "
                f"{tally or 'no states'}")
    else:
        head = (f"Workflow {truncate(definition.name)!r} — {counted(n, 'node')}, "
                f"{counted(m, 'edge')}")
    lines = [head]
    for i, node in enumerate(definition.nodes[:_LIST_LIMIT]):
        preds = []
        for k in definition.in_edges[i]:
            src = truncate(definition.nodes[definition.edge_source[k]].name, 30)
            cond = definition.edges[k].condition
            preds.append(f"{src} [if {truncate(cond.label, 40)}]" if cond else src)
        line = f"  {truncate(node.name)}"
        if preds:
            line += "  ← " + ", ".join(preds)
        if instance and node.name in states:
            line += f"  : {_state(states[node.name])}"
            if attempts.get(node.name, 0) > 1:
                line += f" (attempt {attempts[node.name]})"
            if node.name in errors:
                line += f" — {truncate(errors[node.name], 120)}"
            reason = reasons.get(node.name, "")
            detail = reason.partition(": ")[2] if reason.startswith("reused") else reason
            if detail:
                line += f" ({truncate(detail, 60)})"
        elif node.retry.max_attempts > 1:
            line += f"  (up to {node.retry.max_attempts} attempts)"
        lines.append(line.replace("\n", " "))
    if n > _LIST_LIMIT:
        lines.append(f"  … and {n - _LIST_LIMIT:,} more nodes")
    return "\n".join(lines)


class Picture:
    """The DOT source and (lazily) the SVG of a definition or instance; displays itself."""

    def __init__(self, obj: Any, **options: Any) -> None:
        from ._dot import instance_dot, workflow_dot
        from ._saga_picture import is_saga, saga_dot

        self.subject = obj
        self.options = options
        if not (is_saga(obj) or _is_instance(obj) or hasattr(obj, "out_edges")):
            raise UnsupportedSourceError(
                "a picture shows a workflow definition, an instance result or snapshot, or a "
                f"saga definition or instance, not {type(obj).__name__}", source=obj)
        build = saga_dot if is_saga(obj) else instance_dot if _is_instance(obj) else workflow_dot
        self.graph = build(obj, **options)
        self.dot: str = self.graph.source

    @cached_property
    def outcome(self) -> RenderOutcome:
        """The render outcome (SVG or the problems met), computed once."""
        return render_svg(self.dot)

    @cached_property
    def svg(self) -> str | None:
        """The SVG text with its legend, or None when no renderer worked."""
        svg = self.outcome.svg
        return None if svg is None else with_legend(svg, self._legend_states())

    def _legend_states(self) -> list[Any]:
        obj = self.subject
        if getattr(obj, "_display_kind", None) == "saga_instance":
            return [step.status for step in obj.steps.values()]
        states = self.options.get("states")
        if states is None and _is_instance(obj):
            states = instance_overlay(obj)["states"]
        return list((states or {}).values())

    def text(self) -> str:
        """The plain-text summary."""
        return describe(self.subject)

    def fallback_html(self) -> str:
        """Escaped HTML: the summary, the install hint, and the DOT source to paste elsewhere."""
        problems = "; ".join(self.outcome.problems)
        return ('<div class="lion-nb-fallback">'
                f"<pre>{html_text(self.text())}</pre>"
                f"<p><b>{html_text(INSTALL_HINT)}</b></p>"
                f"<p><small>{html_text(problems)}</small></p>"
                "<details><summary>DOT source</summary>"
                f"<pre>{html_text(self.dot)}</pre></details></div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.mimebundle(include, exclude)

    def mimebundle(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The MIME bundle Jupyter shows: the SVG, or the text fallback with the DOT source."""
        text = self.text()
        if self.svg is not None:
            # text/html first in JupyterLab's order: the same SVG, shown untrusted too.
            bundle = {"image/svg+xml": self.svg, "text/html": picture_html(self.svg, text),
                      "text/plain": text}
        else:
            bundle = {"text/html": self.fallback_html(),
                      "text/plain": f"{text}\n\n{INSTALL_HINT}\n\n{self.dot}"}
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle

    def __repr__(self) -> str:
        return f"Picture({self.text().splitlines()[0]})"


def picture(obj: Any, **options: Any) -> Picture:
    """A Picture of a definition or instance; options go to ``workflow_dot``."""
    return Picture(obj, **options)
