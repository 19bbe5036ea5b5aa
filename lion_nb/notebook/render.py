"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._render import INSTALL_HINT, RENDERERS, RenderFailed, RenderOutcome, render_svg

__all__ = ["INSTALL_HINT", "RENDERERS", "RenderFailed", "RenderOutcome", "render_svg"]
warn_moved(__name__)
