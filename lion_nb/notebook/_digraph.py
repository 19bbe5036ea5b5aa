"""The Graphviz canvas every lion_nb picture is drawn on: one look for every picture.

Definitions, collapsed layers and sagas all start from :func:`new_digraph`; the
state legend is added to the rendered SVG (see the legend module), not the layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._text import dot_label

if TYPE_CHECKING:
    import graphviz

__all__ = ["new_digraph"]


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
