"""Deprecated module: import these names from ``lion_nb.notebook``."""

from ._moved import warn_moved
from ._dot import MAX_NODES, instance_dot, workflow_dot

__all__ = ["MAX_NODES", "instance_dot", "workflow_dot"]
warn_moved(__name__)
