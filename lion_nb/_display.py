"""Display hooks: how lower layers show themselves without importing the notebook layer.

Model and engine objects define ``_repr_mimebundle_`` as a call to
:func:`mimebundle`; ``lion_nb.notebook`` registers the renderers when it is
imported (``import lion_nb`` does that, cheaply: the heavy libraries load on
first display).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["register", "mimebundle"]

Renderer = Callable[..., dict[str, Any]]
_RENDERERS: dict[str, Renderer] = {}


def register(kind: str, renderer: Renderer) -> None:
    """Set the renderer for objects whose ``_display_kind`` is ``kind``."""
    _RENDERERS[kind] = renderer


def mimebundle(obj: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """The MIME bundle for ``obj``; plain text when no renderer is registered."""
    renderer = _RENDERERS.get(getattr(obj, "_display_kind", ""))
    if renderer is None:
        return {"text/plain": repr(obj)}
    return renderer(obj, include=include, exclude=exclude)
