"""Deprecated: import from :mod:`lion_nb.security` (this module moved to ``_ceiling``)."""
import warnings

from lion_nb.security._ceiling import *  # noqa: F401,F403
from lion_nb.security._ceiling import __all__  # noqa: F401

warnings.warn("lion_nb.security.ceiling is deprecated; import from lion_nb.security",
              DeprecationWarning, stacklevel=2)
