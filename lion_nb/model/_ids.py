"""Identifiers: strings with a type, so a NodeId is never mistaken for an EdgeId."""

from __future__ import annotations

import itertools
import os
from typing import Any, Self

__all__ = ["EdgeId", "InstanceId", "NodeId", "WorkflowId", "node_id_of"]


# Ids are a random per-process token plus a counter: unique across processes
# (80 random bits) and about ten times cheaper than uuid4() per id, which
# matters when a notebook builds a 100k-node graph.
_PROCESS_TOKEN = os.urandom(10).hex()
_COUNTER = itertools.count(1)


class _Id(str):
    """A string id; ``new()`` makes a fresh one."""

    __slots__ = ()
    prefix = ""

    @classmethod
    def new(cls) -> Self:
        """A fresh id, unique across processes."""
        return cls(f"{cls.prefix}{_PROCESS_TOKEN}-{next(_COUNTER):x}")

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


def node_id_of(value: Any) -> NodeId:
    """The NodeId of a Node, a NodeId, or a plain string id."""
    if type(value) is NodeId:
        return value
    value = getattr(value, "id", value)  # a Node: its id is already a NodeId
    return value if type(value) is NodeId else NodeId(value)
