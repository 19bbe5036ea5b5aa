"""DOT pictures of definitions and instances, built with the ``graphviz`` package.

Every node gets a synthetic id (``n0``, ``n1``, … in definition order); the
user's name only ever appears in an escaped label, so no name can break the
DOT syntax, forge a port (``a:b``) or become an HTML label (``<b>``)::

    g = workflow_dot(definition)                         # a graphviz.Digraph
    g = workflow_dot(definition, states={"load": "failed"}, attempts={"load": 3})
    g = instance_dot(result)                             # states read off the instance

Graphs over ``max_nodes`` nodes are drawn collapsed by topological layer (see
the layers module) unless ``full=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._digraph import new_digraph
from ._layers import layered_dot
from ._style import STATE_STYLE, style_for
from ._text import dot_label

if TYPE_CHECKING:
    import graphviz

    from ..model import Node, WorkflowDefinition

__all__ = ["MAX_NODES", "NodeStyleHook", "instance_dot", "instance_overlay", "with_reasons",
           "workflow_dot"]

#: Above this many nodes a picture is collapsed into layers unless ``full=True``.
MAX_NODES = 300

#: ``hook(node, state_or_None) -> extra Graphviz attributes or None``; applied last.
NodeStyleHook = Callable[["Node", "str | None"], "Mapping[str, str] | None"]


def _state_name(state: object) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


def with_reasons(states: Mapping[str, Any], reasons: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """States with "reused" for the nodes whose result was reused, and the reasons as text."""
    out = dict(states)
    texts = {n: str(r) for n, r in reasons.items()}
    for name, text in texts.items():
        if text.startswith("reused") and _state_name(out.get(name)) == "succeeded":
            out[name] = "reused"
    return out, texts


def instance_overlay(instance: Any) -> dict[str, Mapping[str, Any]]:
    """The ``states``/``attempts``/``errors``/``reasons`` keyword arguments of an instance.

    A node whose result was reused (incremental re-runs) is drawn "reused".
    """
    states, reasons = with_reasons(getattr(instance, "node_states", None) or {},
                                   getattr(instance, "reasons", None) or {})
    return {"states": states, "attempts": dict(getattr(instance, "attempts", None) or {}),
            "errors": dict(getattr(instance, "errors", None) or {}), "reasons": reasons}


def _node_text(node: "Node", state: str | None, attempts: int, reason: str | None = None
               ) -> str:
    lines = [dot_label(node.name)]
    max_attempts = node.retry.max_attempts
    if state is not None:
        glyph = STATE_STYLE[state].glyph if state in STATE_STYLE else ""
        extra = ""
        if attempts > 1:
            extra = f" · attempt {attempts}/{max_attempts}" if max_attempts > 1 \
                else f" · attempt {attempts}"
        lines.append(dot_label(f"{glyph} {state}{extra}".strip()))
        if reason and state in ("succeeded", "failed", "reused"):
            # Why it ran, or where a reused result came from: the picture says what changed.
            detail = reason if state != "reused" else reason.partition(": ")[2]
            if detail:
                lines.append(dot_label(detail, 40))
    elif max_attempts > 1:
        lines.append(f"↻ up to {max_attempts} attempts")
    from graphviz import nohtml

    # Joined text is a plain str again: re-mark it so "<b>" never becomes HTML.
    return nohtml("\\n".join(lines))


def workflow_dot(definition: "WorkflowDefinition", *,
                 states: Mapping[str, Any] | None = None,
                 attempts: Mapping[str, int] | None = None,
                 errors: Mapping[str, str] | None = None,
                 reasons: Mapping[str, str] | None = None,
                 title: str | None = None,
                 full: bool = False,
                 max_nodes: int = MAX_NODES,
                 node_style: NodeStyleHook | None = None,
                 rankdir: str = "TB") -> "graphviz.Digraph":
    """The Digraph of ``definition``, coloured by ``states`` (node name -> state) if given."""
    states = states or {}
    attempts = attempts or {}
    errors = errors or {}
    reasons = reasons or {}
    if title is None:
        title = definition.name
    if len(definition.nodes) > max_nodes and not full:
        return layered_dot(definition, states=states, title=title, rankdir=rankdir)

    g = new_digraph(title, rankdir)
    for i, node in enumerate(definition.nodes):
        state = _state_name(states.get(node.name))
        attrs = style_for(state).dot_attrs()
        error = errors.get(node.name)
        tooltip = node.name if not error else f"{node.name}\n{error}"
        attrs["tooltip"] = dot_label(tooltip, 300)
        if node_style is not None:
            attrs.update(node_style(node, state) or {})
        g.node(f"n{i}", label=_node_text(node, state, int(attempts.get(node.name, 0)),
                                         reasons.get(node.name)), **attrs)
    for k, edge in enumerate(definition.edges):
        edge_attrs: dict[str, str] = {}
        if edge.condition is not None:
            edge_attrs.update(style="dashed", label=dot_label(edge.condition.label, 40))
        if _state_name(states.get(definition.nodes[definition.edge_target[k]].name)) \
                in ("skipped", "upstream_failed"):
            edge_attrs["color"] = "#afb8c1"
        g.edge(f"n{definition.edge_source[k]}", f"n{definition.edge_target[k]}", **edge_attrs)
    return g


def instance_dot(instance: Any, **kwargs: Any) -> "graphviz.Digraph":
    """The Digraph of an instance result or snapshot: its definition coloured by node state."""
    overlay: dict[str, Any] = {**instance_overlay(instance), **kwargs}
    definition = instance.definition
    if "title" not in kwargs:
        state = _state_name(getattr(instance, "state", None))
        overlay["title"] = definition.name if state is None else f"{definition.name} — {state}"
    return workflow_dot(definition, **overlay)
