"""A readable overview of a large workflow: nodes grouped by band of layers and by handler.

A 10,000-node DAG drawn node by node is a grey smear that takes minutes to lay
out. Instead consecutive topological layers (layer = longest path from a root)
form at most ``MAX_BANDS`` bands, one row each, and inside a band the nodes are
grouped by handler, side by side: a 2-D overview a dozen rows high. Each box
says its layers, how many nodes it holds, the handler, a few example names and,
for an instance, how many are in each state; edges between boxes carry counts.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from ._digraph import new_digraph
from ._style import ERROR_STATES, STATE_ORDER, STATE_STYLE, style_for
from ._text import dot_label

if TYPE_CHECKING:
    import graphviz

    from ..model import WorkflowDefinition

__all__ = ["node_layers", "layered_dot", "MAX_BANDS", "MAX_GROUPS"]

#: At most this many rows (bands of layers) in a collapsed picture.
MAX_BANDS = 12
#: At most this many handler boxes side by side in one band (the rest share one box).
MAX_GROUPS = 6
#: Boxes split by handler only when the graph has at most this many distinct handlers
#: (kinds of work); a handler per node (the default: its name) says nothing in aggregate.
MAX_HANDLERS = 24

# Which state colours a band holding several: problems first, then activity,
# so a single failure among 5,000 successes is what the eye lands on.
_DOMINANCE = ("failed", "upstream_failed", "retrying", "running", "queued", "compensating",
              "pending", "cancelled", "compensated", "skipped", "succeeded", "reused",
              "restored")


def node_layers(definition: "WorkflowDefinition") -> list[int]:
    """Layer of every node (by index): the length of the longest path from a root."""
    layer = [0] * len(definition.nodes)
    for node in definition.topological_order():
        i = definition.index[node.id]
        for k in definition.out_edges[i]:
            t = definition.edge_target[k]
            if layer[t] < layer[i] + 1:
                layer[t] = layer[i] + 1
    return layer


def _dominant(counts: Counter[str]) -> str | None:
    for state in _DOMINANCE:
        if counts.get(state):
            return state
    return None


class _Shape(NamedTuple):
    """What a collapsed picture needs that depends only on the definition (cached)."""

    depth: int
    per_band: int
    #: (band, handler, member node indexes), band by band; handler None: not split by
    #: handler (too many distinct ones), OTHERS: the smaller handlers of a crowded band.
    groups: list[tuple[int, str | None, list[int]]]
    links: list[tuple[int, int, int, bool]]  # source group, target group, edges, conditional


# Live views redraw the same definition every half second: lay it out once.
_SHAPES: "weakref.WeakKeyDictionary[Any, dict[int, _Shape]]" = weakref.WeakKeyDictionary()


OTHERS = "\x00others"  # a handler name no one can register (control characters are cleaned)


def _handler(node: Any) -> str:
    return str(getattr(node, "handler", None) or node.name)


def _shape(definition: "WorkflowDefinition", max_bands: int) -> _Shape:
    cached = _SHAPES.get(definition, {}).get(max_bands)
    if cached is not None:
        return cached
    layers = node_layers(definition)
    depth = max(layers) + 1
    per_band = -(-depth // max_bands)  # ceiling division
    bands: list[dict[str | None, list[int]]] = [{} for _ in range(max(layers) // per_band + 1)]
    by_handler = len({_handler(n) for n in definition.nodes}) <= MAX_HANDLERS
    for i, lay in enumerate(layers):
        key = _handler(definition.nodes[i]) if by_handler else None
        bands[lay // per_band].setdefault(key, []).append(i)
    groups: list[tuple[int, str | None, list[int]]] = []
    group_of = [0] * len(layers)
    for b, members in enumerate(bands):
        ranked = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0] or ""))
        kept = ranked if len(ranked) <= MAX_GROUPS else ranked[:MAX_GROUPS - 1]
        rest = [i for _, idx in ranked[len(kept):] for i in idx]
        for handler, idx in kept + ([(OTHERS, rest)] if rest else []):
            for i in idx:
                group_of[i] = len(groups)
            groups.append((b, handler, idx))
    counts: Counter[tuple[int, int]] = Counter()
    conditional: set[tuple[int, int]] = set()
    for k, edge in enumerate(definition.edges):
        pair = (group_of[definition.edge_source[k]], group_of[definition.edge_target[k]])
        if pair[0] != pair[1]:  # edges inside a box are summarised by the box itself
            counts[pair] += 1
            if edge.condition is not None:
                conditional.add(pair)
    links = [(s, t, n, (s, t) in conditional) for (s, t), n in sorted(counts.items())]
    shape = _Shape(depth, per_band, groups, links)
    _SHAPES.setdefault(definition, {})[max_bands] = shape
    return shape


def layered_dot(definition: "WorkflowDefinition", *, states: Mapping[str, Any],
                title: str, rankdir: str = "TB",
                max_bands: int = MAX_BANDS) -> "graphviz.Digraph":
    """The collapsed Digraph: a row per band of layers, a box per handler, counted edges."""
    from graphviz import nohtml

    shape = _shape(definition, max_bands)
    g = new_digraph(f"{title} ({len(definition.nodes):,} nodes, "
                    f"{len(definition.edges):,} edges; collapsed by layer, "
                    "full=True for all)", rankdir)
    nodes = definition.nodes
    rows: dict[int, list[str]] = {}
    for k, (b, handler, idx) in enumerate(shape.groups):
        lo, hi = b * shape.per_band, min(shape.depth, (b + 1) * shape.per_band) - 1
        head = f"layer {lo}" if lo == hi else f"layers {lo}–{hi}"
        examples = ", ".join(nodes[i].name[:20] for i in idx[:3])
        more = ", …" if len(idx) > 3 else ""
        lines = [dot_label(f"{head} · {len(idx):,} nodes", 80),
                 dot_label(f"{examples}{more}", 80)]
        if handler is not None:
            lines.insert(1, dot_label("other handlers" if handler == OTHERS
                                      else f"handler {handler}", 60))
        counts: Counter[str] = Counter()
        if states:
            for i in idx:
                s = states.get(nodes[i].name)
                if s is not None:
                    counts[str(getattr(s, "value", s))] += 1
        if counts:
            parts = [f"{STATE_STYLE[s].glyph} {s} {counts[s]:,}" for s in STATE_ORDER
                     if counts.get(s)]
            lines.append(dot_label(" · ".join(parts), 200))
        attrs = style_for(_dominant(counts)).dot_attrs()
        if counts.keys() & ERROR_STATES:
            attrs["penwidth"] = "2"
        g.node(f"b{k}", label=nohtml("\\n".join(lines)), **attrs)
        rows.setdefault(b, []).append(f"b{k}")
    for members in rows.values():  # a band's boxes side by side: the picture grows sideways
        if len(members) > 1:
            g.body.append("{rank=same; " + "; ".join(members) + "}\n")
    for s, t, n, cond in shape.links:
        attrs = {"label": f"{n:,} edge{'s' if n != 1 else ''}"}
        if cond:
            attrs["style"] = "dashed"
        g.edge(f"b{s}", f"b{t}", **attrs)
    return g
