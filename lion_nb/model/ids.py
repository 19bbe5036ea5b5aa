"""Identifiers: strings with a type, so a NodeId is never mistaken for an EdgeId."""

from __future__ import annotations

import uuid

__all__ = ["NodeId", "EdgeId", "WorkflowId", "InstanceId"]


class _Id(str):
    """A string id; ``new()`` makes a random one."""

    __slots__ = ()
    prefix = ""

    @classmethod
    def new(cls) -> "_Id":
        """A fresh random id."""
        return cls(cls.prefix + uuid.uuid4().hex[:20])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


class NodeId(_Id):
    """Identifies a node within a workflow definition."""

    __slots__ = ()
    prefix = "n-"


class EdgeId(_Id):
    """Identifies an edge within a workflow definition."""

    __slots__ = ()
    prefix = "e-"


class WorkflowId(_Id):
    """Identifies a workflow definition."""

    __slots__ = ()
    prefix = "wf-"


class InstanceId(_Id):
    """Identifies one run (instance) of a workflow."""

    __slots__ = ()
    prefix = "run-"
