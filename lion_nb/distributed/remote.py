"""Deprecated: import from :mod:`lion_nb.distributed` (this module moved to ``_remote``)."""
import warnings

from lion_nb.distributed._remote import *  # noqa: F401,F403
from lion_nb.distributed._remote import __all__  # noqa: F401

warnings.warn("lion_nb.distributed.remote is deprecated; import from lion_nb.distributed",
              DeprecationWarning, stacklevel=2)
