"""Pictures of sagas: stages left to right, pivots marked, the compensation path as it unfolds.

A saga definition draws each step with its service and what undoes it (a step
with no compensation is a *pivot*); parallel steps share a column. An instance
colours each step by its status and draws the compensation path — the steps
undone so far, in the order they were undone — as numbered red arrows::

    picture(saga_definition)      # or just display it
    picture(saga_instance)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._digraph import new_digraph
from ._style import STATE_STYLE, style_for
from ._text import counted, dot_label, truncate

if TYPE_CHECKING:
    import graphviz

__all__ = ["saga_dot", "describe_saga", "is_saga", "payload_text"]

_KINDS = ("saga_definition", "saga_instance")
_TURNED_BACK = frozenset({"compensating", "compensated", "compensation_failed", "failed"})


def is_saga(obj: Any) -> bool:
    """Whether ``obj`` is a saga definition or instance."""
    return getattr(obj, "_display_kind", None) in _KINDS


def _split(obj: Any) -> tuple[Any, Any]:
    if getattr(obj, "_display_kind", None) == "saga_instance":
        return obj.definition, obj
    return obj, None


def payload_text(value: Any) -> str:
    """A step's JSON payload as people write it: ``undo: create-order``, not a dict repr."""
    if isinstance(value, dict) and all(isinstance(v, (str, int, float, bool)) or v is None
                                       for v in value.values()):
        return ", ".join(f"{k}: {json.dumps(v) if not isinstance(v, str) else v}"
                         for k, v in value.items()) or "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _status(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def saga_dot(obj: Any, *, rankdir: str = "LR", **_ignored: Any) -> "graphviz.Digraph":
    """The Digraph of a saga definition or instance (synthetic ids, escaped labels)."""
    from graphviz import nohtml

    definition, instance = _split(obj)
    title = definition.name
    if instance is not None:
        title = f"{definition.name} — {_status(instance.status)}"
    g = new_digraph(title, rankdir)
    ids: dict[str, str] = {}
    path = list(instance.compensation_path) if instance is not None else []
    undo_order = {sid: k for k, sid in enumerate(path, 1)}
    for k, stage in enumerate(definition.stages):
        with g.subgraph(name=f"stage{k}") as column:
            column.attr(rank="same")
            for step in stage:
                sid = ids[step.id] = f"s{len(ids)}"
                state = None
                lines = [dot_label(step.name), dot_label(f"service: {step.service}")]
                if step.pivot:
                    lines.append(dot_label("◆ pivot (no compensation)"))
                else:
                    lines.append(dot_label(f"↶ {payload_text(step.compensation)}"))
                if instance is not None:
                    st = instance.steps[step.id]
                    state = _status(st.status)
                    extra = f" · attempt {st.attempts}" if st.attempts > 1 else ""
                    if st.comp_attempts > 1:
                        extra += f" · undo attempt {st.comp_attempts}"
                    if step.id in undo_order:
                        extra += f" · undone {undo_order[step.id]}."
                    if state == "pending" and _status(instance.status) in _TURNED_BACK:
                        state = "skipped"  # the saga turned back before this step ran
                        lines.append(dot_label("not run"))
                    else:
                        lines.append(dot_label(f"{state}{extra}"))
                attrs = style_for(state).dot_attrs()
                if step.pivot:
                    attrs["peripheries"] = "2"
                column.node(sid, label=nohtml("\\n".join(lines)), **attrs)
    for before, after in zip(definition.stages, definition.stages[1:]):
        for a in before:
            for b in after:
                g.edge(ids[a.id], ids[b.id])
    if instance is not None and path:
        # The path starts where the saga turned back (the failed step, when one did):
        # one numbered arrow per undone step, so two undone steps show two arrows.
        undo = STATE_STYLE["compensated"].border
        failed = [s.id for s in definition.steps
                  if _status(instance.steps[s.id].status) == "failed"]
        chain = [ids[s] for s in failed[:1] + path if s in ids]
        if len(chain) == len(path):  # nothing failed (an abort): a start marker instead
            g.node("undo_start", label="↶ abort", shape="plaintext", fontcolor=undo)
            chain.insert(0, "undo_start")
        for n, (a, b) in enumerate(zip(chain, chain[1:]), 1):
            g.edge(a, b, label=f"undo {n}", color=undo, fontcolor=undo, style="dashed",
                   constraint="false")
    return g


def describe_saga(obj: Any) -> str:
    """A plain-text summary of a saga definition or instance."""
    definition, instance = _split(obj)
    if instance is None:
        head = f"Saga {truncate(definition.name)!r} — {counted(len(definition.steps), 'step')}"
    else:
        head = (f"Saga instance of {truncate(definition.name)!r} {truncate(instance.id, 40)} — "
                f"{_status(instance.status)}")
    lines = [head]
    for k, stage in enumerate(definition.stages, 1):
        for step in stage:
            undo = "pivot" if step.pivot else \
                f"undo: {truncate(payload_text(step.compensation), 40)}"
            line = f"  {k}. {truncate(step.name)} [{truncate(step.service, 30)}; {undo}]"
            if instance is not None:
                st = instance.steps[step.id]
                line += f" : {_status(st.status)}"
                if st.error:
                    line += f" — {truncate(st.error, 120)}"
            lines.append(line.replace("\n", " "))
    if instance is not None and instance.compensation_path:
        names = [truncate(definition.step(s).name, 30) for s in instance.compensation_path]
        lines.append("  compensated, in order: " + " → ".join(names))
    return "\n".join(lines)
