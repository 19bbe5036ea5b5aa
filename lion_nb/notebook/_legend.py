"""The state legend of a picture: colour swatches under the drawing, outside its layout.

A legend drawn as a Graphviz node takes part in the layout (edges route around
or under it), and Graphviz compiled to WebAssembly has no HTML-like labels to
colour it. So the legend is added to the rendered SVG instead: one row of
swatches (wrapped to the picture's width) below the graph, the same for both
renderers, listing only the states present, in legend order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._style import STATE_STYLE, states_present
from ._text import html_text

__all__ = ["with_legend"]

_ROOT = re.compile(r'<svg\b[^>]*?\swidth="([0-9.]+)pt"\s+height="([0-9.]+)pt"\s+'
                   r'viewBox="([-0-9. ]+)"', re.S)
_ROW, _SWATCH, _GAP, _CHAR = 16.0, 10.0, 14.0, 6.0  # points; _CHAR: a 10pt glyph's width


def with_legend(svg: str, states: Iterable[object]) -> str:
    """``svg`` (made by Graphviz) with a legend of the known ``states`` below the drawing."""
    present = states_present(states)
    root = _ROOT.search(svg)
    if not present or root is None:
        return svg
    width, height = float(root.group(1)), float(root.group(2))
    box = [float(v) for v in root.group(3).split()]
    items = [(s, f"{STATE_STYLE[s].glyph} {s}".strip()) for s in present]
    sizes = [_SWATCH + 4 + _CHAR * len(text) for _, text in items]
    usable = max(width - 8, max(sizes))
    parts, x, y = [], 4.0, box[3] + 4
    for (state, text), size in zip(items, sizes):
        if x > 4 and x + size > usable + 4:  # wrap: the legend never widens the picture
            x, y = 4.0, y + _ROW
        st = STATE_STYLE[state]
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{_SWATCH}" height="{_SWATCH}" '
                     f'rx="2" fill="{st.fill}" stroke="{st.border}"/>'
                     f'<text x="{x + _SWATCH + 4:.1f}" y="{y + _SWATCH - 1:.1f}">'
                     f"{html_text(text)}</text>")
        x += size + _GAP
    extra = y + _ROW - box[3]
    new_width = max(width, usable + 8)
    new_root = root.group(0).replace(f'width="{root.group(1)}pt"', f'width="{new_width:g}pt"')
    new_root = new_root.replace(f'height="{root.group(2)}pt"', f'height="{height + extra:g}pt"')
    new_root = new_root.replace(
        f'viewBox="{root.group(3)}"',
        f'viewBox="{box[0]:g} {box[1]:g} {max(box[2], new_width):g} {box[3] + extra:g}"')
    legend = ('<g class="lion-nb-legend" font-family="Helvetica,Arial,sans-serif" '
              f'font-size="10" fill="#57606a">{"".join(parts)}</g>')
    end = svg.rfind("</svg>")
    return svg[:root.start()] + new_root + svg[root.end():end] + legend + svg[end:]
