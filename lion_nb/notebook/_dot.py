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

from ..errors import ConditionError
from ._digraph import new_digraph
from ._layers import layered_dot
from ._style import STATE_STYLE, style_for
from ._text import dot_label, truncate

if TYPE_CHECKING:
    import graphviz

    from ..model import Node, WorkflowDefinition

__all__ = ["MAX_NODES", "NodeStyleHook", "RESTORED_REASON", "instance_dot", "instance_overlay",
           "shown_states", "workflow_dot"]

#: Above this many nodes a picture is collapsed into layers unless ``full=True``.
MAX_NODES = 300

#: ``hook(node, state_or_None) -> extra Graphviz attributes or None``; applied last.
NodeStyleHook = Callable[["Node", "str | None"], "Mapping[str, str] | None"]


def _state_name(state: object) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


#: Why a node read back from durable storage by ``resume`` did not run (its reason).
RESTORED_REASON = "committed before the restart, not run again"


def shown_states(instance: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """An instance's node states as pictures show them, and why each node ran, as text.

    A succeeded node whose result was reused (incremental re-runs) shows "reused"; one
    read back from storage by ``resume`` shows "restored" (a restored failure stays
    "failed": its reason says it was restored).
    """
    out = dict(getattr(instance, "node_states", None) or {})
    texts = {n: str(r) for n, r in (getattr(instance, "reasons", None) or {}).items()}
    for name, text in texts.items():
        if text.startswith("reused") and _state_name(out.get(name)) == "succeeded":
            out[name] = "reused"
    for name in getattr(instance, "restored", None) or ():
        texts.setdefault(name, RESTORED_REASON)
        if _state_name(out.get(name)) == "succeeded":
            out[name] = "restored"
    return out, texts


def instance_overlay(instance: Any) -> dict[str, Mapping[Any, Any]]:
    """The ``states``/``attempts``/``errors``/``reasons`` keyword arguments of an instance.

    A node whose result was reused (incremental re-runs) is drawn "reused", one that
    ``resume`` read back from storage "restored".
    """
    states, reasons = shown_states(instance)
    edge_errors: dict[tuple[str, str], str] = {}
    for name, exc in (getattr(instance, "exceptions", None) or {}).items():
        source = getattr(exc, "source", None)
        if isinstance(exc, ConditionError) and source is not None:
            # Its target failed without running: the edge and its source are the culprit.
            edge_errors[(str(source), name)] = str(exc)
            reasons[name] = f"never ran: condition from {source} raised"
    return {"states": states, "attempts": dict(getattr(instance, "attempts", None) or {}),
            "errors": dict(getattr(instance, "errors", None) or {}), "reasons": reasons,
            "edge_errors": edge_errors}


def _state_line(node: "Node", state: str, attempts: int) -> str:
    """``✘ failed · attempt 2/3``: the state, with the attempt once there was a retry."""
    glyph = STATE_STYLE[state].glyph if state in STATE_STYLE else ""
    max_attempts = node.retry.max_attempts
    extra = ""
    if attempts > 1:
        extra = f" · attempt {attempts}/{max_attempts}" if max_attempts > 1 \
            else f" · attempt {attempts}"
    return f"{glyph} {state}{extra}".strip()


def _tooltip(node: "Node", state: str | None, attempts: int, error: str | None,
             reason: str | None) -> str:
    """What hovering a node shows: its whole name, state, why it ran, and its error."""
    lines = [truncate(node.name, 100)]  # the rest of the 300 characters: state and error
    if state is not None:
        lines.append(_state_line(node, state, attempts))
    if reason:
        lines.append(reason)
    if error:
        lines.append(error)
    return "\n".join(lines)


def _node_text(node: "Node", state: str | None, attempts: int, reason: str | None = None
               ) -> str:
    lines = [dot_label(node.name)]
    max_attempts = node.retry.max_attempts
    if state is not None:
        lines.append(dot_label(_state_line(node, state, attempts)))
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
                 edge_errors: Mapping[tuple[str, str], str] | None = None,
                 title: str | None = None,
                 full: bool = False,
                 max_nodes: int = MAX_NODES,
                 node_style: NodeStyleHook | None = None,
                 rankdir: str = "TB") -> "graphviz.Digraph":
    """The Digraph of ``definition``, coloured by ``states`` (node name -> state) if given.

    ``edge_errors`` maps ``(source, target)`` names to the error of a condition that
    raised on that edge: the edge is drawn in the failure colour, the error its tooltip.
    """
    states = states or {}
    edge_errors = edge_errors or {}
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
        attrs["tooltip"] = dot_label(_tooltip(node, state, int(attempts.get(node.name, 0)),
                                              errors.get(node.name), reasons.get(node.name)),
                                     300)
        if node_style is not None:
            attrs.update(node_style(node, state) or {})
        g.node(f"n{i}", label=_node_text(node, state, int(attempts.get(node.name, 0)),
                                         reasons.get(node.name)), **attrs)
    nodes = definition.nodes
    for k, edge in enumerate(definition.edges):
        edge_attrs: dict[str, str] = {}
        target = nodes[definition.edge_target[k]].name
        if edge.condition is not None:
            edge_attrs.update(style="dashed", label=dot_label(edge.condition.label, 40))
        raised = edge_errors.get((nodes[definition.edge_source[k]].name, target))
        if raised is not None and edge.condition is not None:
            from graphviz import nohtml

            failed = STATE_STYLE["failed"]
            edge_attrs.update(color=failed.border, fontcolor=failed.font, penwidth="2",
                              label=nohtml(f"{edge_attrs['label']}\\n✘ raised"),
                              tooltip=dot_label(raised, 600))
        elif _state_name(states.get(target)) in ("skipped", "upstream_failed"):
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
