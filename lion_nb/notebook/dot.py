"""DOT pictures of definitions and instances, built with the ``graphviz`` package.

Every node gets a synthetic id (``n0``, ``n1``, … in definition order); the
user's name only ever appears in an escaped label, so no name can break the
DOT syntax, forge a port (``a:b``) or become an HTML label (``<b>``)::

    g = workflow_dot(definition)                         # a graphviz.Digraph
    g = workflow_dot(definition, states={"load": "failed"}, attempts={"load": 3})
    g = instance_dot(result)                             # states read off the instance

Graphs over ``max_nodes`` nodes are drawn collapsed by topological layer (see
:mod:`lion_nb.notebook.summary`) unless ``full=True``.
"""

from __future__ import annotations

import shutil

from typing import TYPE_CHECKING, Any, Callable, Mapping

from .style import STATE_STYLE, style_for, states_present
from .text import dot_label

if TYPE_CHECKING:
    import graphviz

    from ..model import Node, WorkflowDefinition

__all__ = ["workflow_dot", "instance_dot", "instance_overlay", "new_digraph", "add_legend",
           "legend_label",
           "MAX_NODES", "NodeStyleHook"]

#: Above this many nodes a picture is collapsed into layers unless ``full=True``.
MAX_NODES = 300

#: ``hook(node, state_or_None) -> extra Graphviz attributes or None``; applied last.
NodeStyleHook = Callable[["Node", "str | None"], "Mapping[str, str] | None"]


def _state_name(state: object) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


def new_digraph(title: str, rankdir: str = "TB") -> "graphviz.Digraph":
    """An empty Digraph with lion_nb's graph, node and edge defaults and an escaped title."""
    import graphviz

    # The graph's own name is synthetic too: Graphviz copies it into the SVG.
    g = graphviz.Digraph("lion_nb", format="svg")
    g.attr(label=dot_label(title, 80), labelloc="t", fontname="Helvetica", fontsize="14",
           rankdir=rankdir, nodesep="0.3", ranksep="0.45")
    g.attr("node", shape="box", fontname="Helvetica", fontsize="11", margin="0.12,0.06")
    g.attr("edge", fontname="Helvetica", fontsize="9", color="#57606a", arrowsize="0.7")
    return g


def legend_label(states: list[str]) -> str:
    """An HTML-like Graphviz label: one coloured row per state (our names only, no user text)."""
    rows = "".join(
        f'<tr><td bgcolor="{STATE_STYLE[s].fill}" color="{STATE_STYLE[s].border}">'
        f'<font color="{STATE_STYLE[s].font}">{STATE_STYLE[s].glyph} {s}</font></td></tr>'
        for s in states)
    return (f'<<table border="0" cellborder="1" cellspacing="2" cellpadding="3">'
            f'<tr><td border="0"><b>state</b></td></tr>{rows}</table>>')


def add_legend(g: "graphviz.Digraph", states: list[str]) -> None:
    """Add the legend node for ``states``: coloured rows when the system ``dot`` draws it.

    Graphviz compiled to WebAssembly is built without HTML-like labels (it would
    print the node id instead), so without a system ``dot`` the legend is a
    record listing each state's glyph and name.
    """
    if not states:
        return
    if shutil.which("dot"):
        g.node("legend", label=legend_label(states), shape="plaintext", margin="0")
    else:
        fields = "|".join(f"{STATE_STYLE[s].glyph} {s}" for s in states)
        g.node("legend", label="{state|" + fields + "}", shape="record", fontsize="10",
               style="rounded", color="#8c959f")


def instance_overlay(instance: Any) -> dict[str, Mapping[str, Any]]:
    """The ``states``/``attempts``/``errors`` keyword arguments read off an instance result."""
    return {"states": dict(getattr(instance, "node_states", None) or {}),
            "attempts": dict(getattr(instance, "attempts", None) or {}),
            "errors": dict(getattr(instance, "errors", None) or {})}


def _node_text(node: "Node", state: str | None, attempts: int) -> str:
    lines = [dot_label(node.name)]
    max_attempts = node.retry.max_attempts
    if state is not None:
        glyph = STATE_STYLE[state].glyph if state in STATE_STYLE else ""
        extra = ""
        if attempts > 1:
            extra = f" · attempt {attempts}/{max_attempts}" if max_attempts > 1 \
                else f" · attempt {attempts}"
        lines.append(dot_label(f"{glyph} {state}{extra}".strip()))
    elif max_attempts > 1:
        lines.append(f"↻ up to {max_attempts} attempts")
    from graphviz import nohtml

    # Joined text is a plain str again: re-mark it so "<b>" never becomes HTML.
    return nohtml("\\n".join(lines))


def workflow_dot(definition: "WorkflowDefinition", *,
                 states: Mapping[str, Any] | None = None,
                 attempts: Mapping[str, int] | None = None,
                 errors: Mapping[str, str] | None = None,
                 title: str | None = None,
                 full: bool = False,
                 max_nodes: int = MAX_NODES,
                 node_style: NodeStyleHook | None = None,
                 rankdir: str = "TB") -> "graphviz.Digraph":
    """The Digraph of ``definition``, coloured by ``states`` (node name -> state) if given."""
    states = states or {}
    attempts = attempts or {}
    errors = errors or {}
    if title is None:
        title = definition.name
    if len(definition.nodes) > max_nodes and not full:
        from .summary import layered_dot
        return layered_dot(definition, states=states, title=title, rankdir=rankdir)

    g = new_digraph(title, rankdir)
    shown: list[str | None] = []
    for i, node in enumerate(definition.nodes):
        state = _state_name(states.get(node.name))
        shown.append(state)
        attrs = style_for(state).dot_attrs()
        error = errors.get(node.name)
        tooltip = node.name if not error else f"{node.name}\n{error}"
        attrs["tooltip"] = dot_label(tooltip, 300)
        if node_style is not None:
            attrs.update(node_style(node, state) or {})
        g.node(f"n{i}", label=_node_text(node, state, int(attempts.get(node.name, 0))), **attrs)
    for k, edge in enumerate(definition.edges):
        attrs: dict[str, str] = {}
        if edge.condition is not None:
            attrs.update(style="dashed", label=dot_label(edge.condition.label, 40))
        if _state_name(states.get(definition.nodes[definition.edge_target[k]].name)) \
                in ("skipped", "upstream_failed"):
            attrs["color"] = "#afb8c1"
        g.edge(f"n{definition.edge_source[k]}", f"n{definition.edge_target[k]}", **attrs)
    present = states_present(shown)
    add_legend(g, present)
    return g


def instance_dot(instance: Any, **kwargs: Any) -> "graphviz.Digraph":
    """The Digraph of an instance result or snapshot: its definition coloured by node state."""
    overlay = instance_overlay(instance)
    overlay.update(kwargs)
    definition = instance.definition
    if "title" not in kwargs:
        state = _state_name(getattr(instance, "state", None))
        overlay["title"] = definition.name if state is None else f"{definition.name} — {state}"
    return workflow_dot(definition, **overlay)
