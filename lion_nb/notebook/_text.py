"""User text made safe for DOT labels, SVG text and HTML, visibly truncated when long.

Names come from users and may hold anything: quotes, backslashes, ``<b>``,
``a:b``, newlines, NUL bytes, lone surrogates, 10k characters. Pictures only
ever put user text in *labels* (node ids are synthetic), escaped here.
"""

from __future__ import annotations

import html
import re

__all__ = ["LABEL_LIMIT", "clean", "counted", "dot_label", "format_seconds", "html_text",
           "short_id", "truncate"]

#: Longest label shown in a picture; the rest is replaced by a visible marker.
LABEL_LIMIT = 60

# C0/C1 control characters except newline and tab: Graphviz (a C program fed
# through WebAssembly) stops at NUL and some renderers choke on the others.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ID_KEEP = 6  # hex digits kept of a generated id's random part: enough to tell runs apart
_HEX_RUN = re.compile(r"[0-9a-f]{12,}")


def clean(text: object) -> str:
    """``str(text)`` without control characters or lone surrogates (tabs become spaces)."""
    s = text if isinstance(text, str) else str(text)
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    s = _CONTROL.sub("", s)
    # A lone surrogate cannot be encoded as UTF-8 and would crash the renderer.
    return s.encode("utf-8", "replace").decode("utf-8")


def truncate(text: object, limit: int = LABEL_LIMIT) -> str:
    """Cleaned text cut to about ``limit`` characters, saying how much was cut."""
    s = clean(text)
    if len(s) <= limit:
        return s
    cut = len(s) - limit
    return f"{s[:limit]}… (+{cut:,} chars)"


def dot_label(text: object, limit: int = LABEL_LIMIT) -> str:
    r"""Text for a DOT escString label: literal backslashes, ``&``, ``<...>``; ``\n`` breaks.

    The result is a ``graphviz.nohtml`` string so the graphviz package quotes it
    (escaping ``"``) instead of treating ``<...>`` as an HTML label.
    """
    from graphviz import nohtml  # lazy: importing the notebook layer stays cheap

    s = truncate(text, limit)
    # Backslashes first, so the line breaks added next stay DOT escapes;
    # "&" as "&amp;" so Graphviz shows "&lt;" literally instead of decoding it.
    s = s.replace("\\", "\\\\").replace("&", "&amp;").replace("\n", "\\n")
    return nohtml(s)


def html_text(text: object, limit: int | None = None) -> str:
    """Text escaped for HTML element content and quoted attributes."""
    s = clean(text) if limit is None else truncate(text, limit)
    return html.escape(s, quote=True)


def counted(n: int, noun: str) -> str:
    """``"1 node"``, ``"2 nodes"``, ``"1,000 nodes"``: a count with its noun."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def format_seconds(seconds: float) -> str:
    """A duration as people read it: ``420 µs``, ``150.9 ms``, ``2.35 s``, ``3 min 4.0 s``."""
    size = abs(seconds)
    if size < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if size < 1:
        return f"{seconds * 1e3:.1f} ms"
    if size < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {rest:.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def short_id(value: object) -> str:
    """A generated id with its long hex run cut to the tail (``run-…3fa9c1``)."""
    # Only generated ids are cut (their long hex run, keeping its tail); names that
    # people chose, such as "confirm-18-revoked", are shown whole.
    return _HEX_RUN.sub(lambda m: f"…{m.group(0)[-_ID_KEEP:]}", str(value))
