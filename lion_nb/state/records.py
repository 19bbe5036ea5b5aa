"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._records import DEFAULT_CODEC, Migrations, RECORD_VERSION, RecordCodec, canonical_json

__all__ = ["DEFAULT_CODEC", "Migrations", "RECORD_VERSION", "RecordCodec", "canonical_json"]
warnings.warn("lion_nb.state.records is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
