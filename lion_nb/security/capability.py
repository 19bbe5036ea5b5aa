"""Deprecated: import from :mod:`lion_nb.security` (this module moved to ``_capability``)."""
import warnings

from lion_nb.security._capability import *  # noqa: F401,F403
from lion_nb.security._capability import __all__  # noqa: F401

warnings.warn("lion_nb.security.capability is deprecated; import from lion_nb.security",
              DeprecationWarning, stacklevel=2)
