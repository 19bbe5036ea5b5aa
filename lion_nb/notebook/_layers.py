"""A readable picture of a large workflow: nodes collapsed into bands of topological layers.

A 10,000-node DAG drawn node by node is a grey smear that takes minutes to lay
out. Instead each band of consecutive layers (layer = longest path from a
root) becomes one box saying how many nodes it holds, a few example names and,
for an instance, how many are in each state; edges between bands carry counts.
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

__all__ = ["node_layers", "layered_dot", "MAX_BANDS"]

#: At most this many boxes in a collapsed picture.
MAX_BANDS = 40

# Which state colours a band holding several: problems first, then activity,
# so a single failure among 5,000 successes is what the eye lands on.
_DOMINANCE = ("failed", "upstream_failed", "retrying", "running", "queued", "compensating",
              "pending", "cancelled", "compensated", "skipped", "succeeded")


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
    members: list[list[int]]
    links: list[tuple[int, int, int, bool]]  # source band, target band, edges, conditional


# Live views redraw the same definition every half second: lay it out once.
_SHAPES: "weakref.WeakKeyDictionary[Any, dict[int, _Shape]]" = weakref.WeakKeyDictionary()


def _shape(definition: "WorkflowDefinition", max_bands: int) -> _Shape:
    cached = _SHAPES.get(definition, {}).get(max_bands)
    if cached is not None:
        return cached
    layers = node_layers(definition)
    depth = max(layers) + 1
    per_band = -(-depth // max_bands)  # ceiling division
    band = [lay // per_band for lay in layers]
    members: list[list[int]] = [[] for _ in range(max(band) + 1)]
    for i, b in enumerate(band):
        members[b].append(i)
    counts: Counter[tuple[int, int]] = Counter()
    conditional: set[tuple[int, int]] = set()
    for k, edge in enumerate(definition.edges):
        pair = (band[definition.edge_source[k]], band[definition.edge_target[k]])
        if pair[0] != pair[1]:  # edges inside a band are summarised by the band itself
            counts[pair] += 1
            if edge.condition is not None:
                conditional.add(pair)
    links = [(s, t, n, (s, t) in conditional) for (s, t), n in sorted(counts.items())]
    shape = _Shape(depth, per_band, members, links)
    _SHAPES.setdefault(definition, {})[max_bands] = shape
    return shape


def layered_dot(definition: "WorkflowDefinition", *, states: Mapping[str, Any],
                title: str, rankdir: str = "TB",
                max_bands: int = MAX_BANDS) -> "graphviz.Digraph":
    """The collapsed Digraph: one box per band of layers, edges between bands with counts."""
    from graphviz import nohtml


    shape = _shape(definition, max_bands)
    g = new_digraph(f"{title} ({len(definition.nodes):,} nodes, "
                    f"{len(definition.edges):,} edges; collapsed by layer, full=True for all)",
                    rankdir)
    nodes = definition.nodes
    for b, idx in enumerate(shape.members):
        lo, hi = b * shape.per_band, min(shape.depth, (b + 1) * shape.per_band) - 1
        head = f"layer {lo}" if lo == hi else f"layers {lo}–{hi}"
        examples = ", ".join(nodes[i].name[:20] for i in idx[:3])
        more = ", …" if len(idx) > 3 else ""
        lines = [dot_label(f"{head} · {len(idx):,} nodes", 80),
                 dot_label(f"{examples}{more}", 80)]
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
        g.node(f"b{b}", label=nohtml("\\n".join(lines)), **attrs)
    for s, t, n, cond in shape.links:
        attrs = {"label": f"{n:,} edge{'s' if n != 1 else ''}"}
        if cond:
            attrs["style"] = "dashed"
        g.edge(f"b{s}", f"b{t}", **attrs)
    return g
