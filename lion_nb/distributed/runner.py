"""Deprecated: import from :mod:`lion_nb.distributed` (this module moved to ``_runner``)."""
import warnings

from lion_nb.distributed._runner import *  # noqa: F401,F403
from lion_nb.distributed._runner import __all__  # noqa: F401

warnings.warn("lion_nb.distributed.runner is deprecated; import from lion_nb.distributed",
              DeprecationWarning, stacklevel=2)
