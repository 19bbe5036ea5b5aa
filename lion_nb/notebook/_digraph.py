"""The Graphviz canvas every lion_nb picture is drawn on, and its state legend.

Definitions, collapsed layers and sagas all start from :func:`new_digraph` (one
look for every picture) and end with :func:`add_legend`.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ._style import STATE_STYLE
from ._text import dot_label

if TYPE_CHECKING:
    import graphviz

__all__ = ["add_legend", "legend_label", "new_digraph"]


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
