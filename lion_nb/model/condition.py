"""Deprecated: import these names from ``lion_nb.model``."""

import warnings

from ._condition import Condition, Expression

__all__ = ["Condition", "Expression"]
warnings.warn("lion_nb.model.condition is deprecated: import from lion_nb.model",
              DeprecationWarning, stacklevel=2)
