"""WorkflowDefinition (immutable DAG with adjacency lists) and WorkflowBuilder."""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from .. import _display
from ..security import DefinitionCeiling
from ..errors import CycleError, DefinitionError, DuplicateIdError, UnknownNodeError
from .ids import NodeId, WorkflowId
from .node import Edge, Node, _node_id

__all__ = ["WorkflowDefinition", "WorkflowBuilder"]


class WorkflowDefinition:
    """An immutable, validated DAG of nodes and edges; build it with WorkflowBuilder.

    Nodes are kept in insertion order and addressed by index internally;
    ``out_edges[i]``/``in_edges[i]`` are adjacency lists of edge indices, which
    the executor walks with integers only.
    """

    _display_kind = "workflow"

    def __init__(self, name: str, nodes: tuple[Node, ...], edges: tuple[Edge, ...], *,
                 id: WorkflowId | str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 ceiling: tuple[str, ...] | None = None) -> None:
        self.id = WorkflowId(id) if id else WorkflowId.new()
        self.ceiling = ceiling
        self.name = name
        self.nodes = nodes
        self.edges = edges
        self.metadata = MappingProxyType(dict(metadata or {}))
        self.index = {n.id: i for i, n in enumerate(nodes)}
        self.by_name = {n.name: i for i, n in enumerate(nodes)}
        out: list[list[int]] = [[] for _ in nodes]
        inc: list[list[int]] = [[] for _ in nodes]
        self.edge_source = [self.index[e.source] for e in edges]
        self.edge_target = [self.index[e.target] for e in edges]
        for k in range(len(edges)):
            out[self.edge_source[k]].append(k)
            inc[self.edge_target[k]].append(k)
        self.out_edges = tuple(tuple(x) for x in out)
        self.in_edges = tuple(tuple(x) for x in inc)

    # --- navigation ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return (f"WorkflowDefinition({self.name!r}, {len(self.nodes)} nodes, "
                f"{len(self.edges)} edges)")

    def node(self, key: NodeId | str) -> Node:
        """The node with this id or name; UnknownNodeError otherwise."""
        i = self.index.get(key) if isinstance(key, NodeId) else None
        if i is None:
            i = self.by_name.get(key, self.index.get(NodeId(key)))
        if i is None:
            raise UnknownNodeError(f"workflow {self.name!r} has no node {key!r}", node_id=key)
        return self.nodes[i]

    def successors(self, key: NodeId | str) -> list[Node]:
        """Nodes reached by the node's outgoing edges."""
        i = self.index[self.node(key).id]
        return [self.nodes[self.edge_target[k]] for k in self.out_edges[i]]

    def predecessors(self, key: NodeId | str) -> list[Node]:
        """Nodes with an edge into this node."""
        i = self.index[self.node(key).id]
        return [self.nodes[self.edge_source[k]] for k in self.in_edges[i]]

    def roots(self) -> list[Node]:
        """Nodes without incoming edges."""
        return [n for i, n in enumerate(self.nodes) if not self.in_edges[i]]

    def leaves(self) -> list[Node]:
        """Nodes without outgoing edges."""
        return [n for i, n in enumerate(self.nodes) if not self.out_edges[i]]

    def topological_order(self) -> list[Node]:
        """Nodes so that every edge points forward (Kahn's algorithm, stable)."""
        indeg = [len(x) for x in self.in_edges]
        order = [i for i, d in enumerate(indeg) if d == 0]
        for i in order:  # the list grows while we walk it
            for k in self.out_edges[i]:
                t = self.edge_target[k]
                indeg[t] -= 1
                if indeg[t] == 0:
                    order.append(t)
        return [self.nodes[i] for i in order]

    def fingerprint(self) -> str:
        """SHA-256 of the structure (names, handlers, edges, conditions): what resume compares."""
        shape = {
            "nodes": [[n.name, n.handler, n.trigger_rule.value] for n in self.nodes],
            "edges": [[self.nodes[s].name, self.nodes[t].name,
                       e.condition.label if e.condition else None]
                      for e, s, t in zip(self.edges, self.edge_source, self.edge_target)],
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    # --- serialization and display --------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able document; SerializationError if an edge holds a Python callable."""
        from .serialize import definition_to_dict
        return definition_to_dict(self)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "WorkflowDefinition":
        """Rebuild (and re-validate) a definition; errors name the bad field."""
        from .serialize import definition_from_dict
        return definition_from_dict(document)

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> "WorkflowDefinition":
        """Parse a JSON document made by ``to_json``."""
        from .serialize import definition_from_json
        return definition_from_json(text)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)


class WorkflowBuilder:
    """Builds a WorkflowDefinition; every ``add_*`` validates and returns ``self``.

    ``add_edge`` rejects unknown endpoints, duplicate ids, self-loops and any
    edge that would close a cycle (the error names the cycle's path).
    """

    def __init__(self, name: str, *, id: WorkflowId | str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 ceiling: Iterable[str] | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"workflow name must be a non-empty string, not {name!r}")
        self.name = name
        self._id = id
        self._metadata = metadata
        # The most any node of this workflow may ever require (None: no ceiling).
        self._ceiling = None if ceiling is None else DefinitionCeiling(ceiling)
        self._ceiling_src = None if ceiling is None else tuple(str(c) for c in ceiling)
        self._nodes: list[Node] = []
        self._edges: list[Edge] = []
        self._index: dict[NodeId, int] = {}
        self._names: set[str] = set()
        self._edge_ids: set[str] = set()
        # (source, target) as one int: no tuple per edge for the garbage collector to track.
        self._pairs: set[int] = set()
        self._succ: list[list[int]] = []

    def add_node(self, node: Node) -> "WorkflowBuilder":
        """Add a node; its id and name must be new."""
        if type(node) is not Node:
            raise DefinitionError(f"add_node takes a Node, not {type(node).__name__}")
        if node.id in self._index:
            raise DuplicateIdError(f"duplicate node id {str(node.id)!r}", id=node.id)
        if node.name in self._names:
            raise DuplicateIdError(f"duplicate node name {node.name!r}", id=node.name)
        if self._ceiling is not None and node.requires:
            self._ceiling.check(node.requires, node=node.name)
        self._index[node.id] = len(self._nodes)
        self._names.add(node.name)
        self._nodes.append(node)
        self._succ.append([])
        return self

    def add_nodes(self, *nodes: Node) -> "WorkflowBuilder":
        """Add several nodes."""
        for node in nodes:
            self.add_node(node)
        return self

    def add_edge(self, edge: Edge) -> "WorkflowBuilder":
        """Add an edge between known nodes without closing a cycle."""
        if type(edge) is not Edge:
            raise DefinitionError(f"add_edge takes an Edge, not {type(edge).__name__}")
        if edge.id in self._edge_ids:
            raise DuplicateIdError(f"duplicate edge id {str(edge.id)!r}", id=edge.id)
        index = self._index
        s, t = index.get(edge.source), index.get(edge.target)
        if s is None or t is None:
            end = edge.source if s is None else edge.target
            raise UnknownNodeError(
                f"edge {str(edge.id)!r} names unknown node {str(end)!r}",
                node_id=end, edge_id=edge.id)
        pair = (s << 32) | t
        if pair in self._pairs:
            raise DuplicateIdError(
                f"there is already an edge {self._nodes[s].name!r} -> {self._nodes[t].name!r}",
                id=edge.id)
        # A target without successors cannot reach the source: skip the search.
        path = self._path(t, s) if (self._succ[t] or s == t) else None
        if path is not None:
            names = [self._nodes[s].name] + [self._nodes[i].name for i in path]
            raise CycleError(f"edge {' -> '.join(names[:2])} would close the cycle "
                             f"{' -> '.join(names)}", cycle=names, edge_id=edge.id)
        self._edge_ids.add(edge.id)
        self._pairs.add(pair)
        self._succ[s].append(t)
        self._edges.append(edge)
        return self

    def connect(self, source: Node | NodeId, target: Node | NodeId,
                condition: Any = None) -> "WorkflowBuilder":
        """Shorthand for ``add_edge(Edge(source.id, target.id, condition=...))``."""
        return self.add_edge(Edge.between(_node_id(source), _node_id(target), condition))

    def _path(self, start: int, goal: int) -> list[int] | None:
        """A path start -> ... -> goal (inclusive) if one exists (iterative DFS)."""
        if start == goal:
            return [start]
        parent = {start: -1}
        stack = [start]
        while stack:
            i = stack.pop()
            for j in self._succ[i]:
                if j in parent:
                    continue
                parent[j] = i
                if j == goal:
                    path = [j]
                    while parent[path[-1]] != -1:
                        path.append(parent[path[-1]])
                    return path[::-1]
                stack.append(j)
        return None

    def build(self) -> WorkflowDefinition:
        """The immutable definition; a workflow needs at least one node."""
        if not self._nodes:
            raise DefinitionError(f"workflow {self.name!r} has no nodes")
        return WorkflowDefinition(self.name, tuple(self._nodes), tuple(self._edges),
                                  id=self._id, metadata=self._metadata,
                                  ceiling=self._ceiling_src)
