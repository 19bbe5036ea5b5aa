"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._file_storage import FileStorage, filename_to_key, key_to_filename

__all__ = ["FileStorage", "filename_to_key", "key_to_filename"]
warnings.warn("lion_nb.state.file_storage is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
