"""The warning of the deprecated module names the notebook package had before 0.2."""

from __future__ import annotations

import warnings

__all__ = ["warn_moved"]


def warn_moved(module: str) -> None:
    """Warn that ``module`` is deprecated in favour of the ``lion_nb.notebook`` package."""
    warnings.warn(f"{module} is deprecated: import its names from lion_nb.notebook",
                  DeprecationWarning, stacklevel=3)
