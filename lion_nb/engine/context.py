"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._context import NodeContext, NodeResult, ResultKind

__all__ = ["NodeContext", "NodeResult", "ResultKind"]
warnings.warn("lion_nb.engine.context is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
