"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._saga_view import SagaView

__all__ = ["SagaView"]
warn_moved(__name__)
