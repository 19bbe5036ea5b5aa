"""WorkflowDefinition (an immutable, validated DAG) and WorkflowBuilder, which makes one.

The two share one module because the builder is the definition's constructor
front end: it hands over the index arrays it has already computed, and
reading a JSON document goes through a builder so each error names its field.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import operator
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .. import _display
from ..errors import (CycleError, DefinitionError, DuplicateIdError, SerializationError,
                      UnknownNodeError)
from ..security import DefinitionCeiling
from . import _document as doc_format
from ._edge import Edge, as_condition
from ._ids import EdgeId, NodeId, WorkflowId
from ._node import Node
from ._condition import Condition

__all__ = ["WorkflowBuilder", "WorkflowDefinition"]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_SIGNED_PURPOSE = "workflow-definition"


class WorkflowDefinition:
    """An immutable, validated DAG of nodes and edges; build it with WorkflowBuilder.

    Nodes are kept in insertion order and addressed by index internally;
    ``out_edges[i]``/``in_edges[i]`` are adjacency lists of edge indices, which
    the executor walks with integers only. Constructing one checks that the
    graph is acyclic (Kahn's algorithm, linear time); CycleError names a cycle.
    """

    _display_kind = "workflow"

    def __init__(self, name: str, nodes: tuple[Node, ...], edges: tuple[Edge, ...] = (), *,
                 id: WorkflowId | str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 ceiling: tuple[str, ...] | None = None,
                 _graph: "_Graph | None" = None) -> None:
        self.id = WorkflowId(id) if id else WorkflowId.new()
        self.ceiling = ceiling
        self.name = name
        self.nodes = nodes
        self.metadata = MappingProxyType(dict(metadata or {}))
        self._fingerprint: str | None = None  # computed once: the definition is immutable
        self._index: dict[NodeId, int] | None = None
        if _graph is None:
            index = self._index = {n.id: i for i, n in enumerate(nodes)}
            _graph = _Graph({n.name: i for i, n in enumerate(nodes)},
                            [index[e.source] for e in edges], [index[e.target] for e in edges],
                            {k: e.condition for k, e in enumerate(edges)
                             if e.condition is not None},
                            dict(enumerate(edges)), "")
        self._graph = _graph
        self.by_name = _graph.by_name
        self.edge_source, self.edge_target = _graph.sources, _graph.targets
        #: Per edge: its Condition, or None for an unconditional edge.
        self.conditions: list[Condition | None] = [None] * len(self.edge_source)
        for k, condition in _graph.conditions.items():
            self.conditions[k] = condition
        self._edges: tuple[Edge, ...] | None = None
        self._in_edges: tuple[tuple[int, ...], ...] | None = None
        # Tens of thousands of small tuples, none in a cycle: the cyclic collector
        # would only rescan the (large) heap again and again meanwhile.
        with _collector_paused():
            self._index_edges()

    @property
    def index(self) -> dict[NodeId, int]:
        """Node id -> position (made on first use; draws the ids nodes do not have yet)."""
        if self._index is None:
            self._index = {n.id: i for i, n in enumerate(self.nodes)}
        return self._index

    @property
    def in_edges(self) -> tuple[tuple[int, ...], ...]:
        """Per node: the indices of its incoming edges (made on first use)."""
        if self._in_edges is None:
            inc: list[list[int]] = [[] for _ in self.nodes]
            for k, t in enumerate(self.edge_target):
                inc[t].append(k)
            self._in_edges = tuple(map(tuple, inc))
        return self._in_edges

    @property
    def edges(self) -> tuple[Edge, ...]:
        """The Edge objects, in the order they were added (made on first use)."""
        if self._edges is None:
            self._edges = self._graph.edge_objects(self.nodes)
        return self._edges

    def edge_id(self, k: int) -> EdgeId:
        """The id of edge number ``k`` (without making the Edge objects)."""
        return self._graph.edge_id(k)

    def _index_edges(self) -> None:
        # Out-lists and in-degrees only: what a run needs. The in-lists are made when
        # first read (``in_edges``), and the lists stay lists (no tuple copy of each).
        out: list[list[int]] = [[] for _ in self.nodes]
        indeg = [0] * len(self.nodes)
        for k, (s, t) in enumerate(zip(self.edge_source, self.edge_target)):
            out[s].append(k)
            indeg[t] += 1
        #: Per node: the indices of its outgoing edges, in the order they were added.
        self.out_edges: Sequence[Sequence[int]] = out
        #: Per node: how many edges point into it.
        self.in_degree: Sequence[int] = indeg
        # Edges that all point from an earlier node to a later one (nodes declared before
        # the steps after them, as a Flow does) cannot close a cycle: Kahn's order, which
        # only topological_order() needs, is then computed when it is asked for.
        forward = all(map(operator.lt, self.edge_source, self.edge_target))
        self._order: list[int] | None = None if forward else self._kahn()

    def _kahn(self) -> list[int]:
        """Node indices in topological order; CycleError naming a cycle if there is one."""
        target = self.edge_target
        indeg = list(self.in_degree)
        order = [i for i, d in enumerate(indeg) if d == 0]
        out = self.out_edges
        for i in order:  # the list grows while we walk it
            for k in out[i]:
                t = target[k]
                indeg[t] -= 1
                if indeg[t] == 0:
                    order.append(t)
        if len(order) != len(self.nodes):
            raise self._cycle_error(indeg)
        return order

    def _cycle_error(self, indeg: list[int]) -> CycleError:
        # Nodes Kahn could not free each keep an incoming edge from another such
        # node, so walking those edges backwards must come round: that is a cycle.
        stuck = {i for i, d in enumerate(indeg) if d > 0}
        seen: dict[int, int] = {}
        walk: list[int] = []
        i = min(stuck)
        while i not in seen:
            seen[i] = len(walk)
            walk.append(i)
            k = next(k for k in self.in_edges[i] if self.edge_source[k] in stuck)
            i = self.edge_source[k]
        loop = walk[seen[i]:][::-1]  # forward order: each node has an edge to the next
        ring = list(zip(loop, loop[1:] + loop[:1]))
        # Start at the edge added last: the one most likely to be the mistake.
        pairs = {(s, t): k for k, (s, t) in enumerate(zip(self.edge_source, self.edge_target))}
        last = max(range(len(ring)), key=lambda j: pairs[ring[j]])
        path = [s for s, _ in ring[last:] + ring[:last]]
        names = [self.nodes[j].name for j in path + path[:1]]
        edge_id = self.edge_id(pairs[ring[last]])
        return CycleError(f"workflow {self.name!r}: edge {' -> '.join(names[:2])} closes the "
                          f"cycle {' -> '.join(names)}", cycle=names, edge_id=edge_id)

    # --- navigation ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return (f"WorkflowDefinition({self.name!r}, {len(self.nodes)} nodes, "
                f"{len(self.edge_source)} edges)")

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
        return [n for i, n in enumerate(self.nodes) if not self.in_degree[i]]

    def leaves(self) -> list[Node]:
        """Nodes without outgoing edges."""
        return [n for i, n in enumerate(self.nodes) if not self.out_edges[i]]

    def topological_order(self) -> list[Node]:
        """Nodes so that every edge points forward (Kahn's algorithm, stable)."""
        if self._order is None:
            self._order = self._kahn()
        return [self.nodes[i] for i in self._order]

    def fingerprint(self) -> str:
        """SHA-256 of the structure (names, handlers, edges, conditions): what resume compares."""
        if self._fingerprint is not None:
            return self._fingerprint
        shape = {
            "nodes": [[n.name, n.handler, n.trigger_rule.value] for n in self.nodes],
            "edges": [[self.nodes[s].name, self.nodes[t].name, c.label if c else None]
                      for c, s, t in zip(self.conditions, self.edge_source, self.edge_target)],
        }
        self._fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    # --- serialization and display --------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able document; SerializationError if an edge holds a Python callable."""
        names = [n.name for n in self.nodes]
        edges = [doc_format.edge_document(
                     e, k, f"{names[self.edge_source[k]]!r} -> {names[self.edge_target[k]]!r}")
                 for k, e in enumerate(self.edges)]
        doc_format.check_json(dict(self.metadata), "metadata")
        nodes = [n.to_dict() for n in self.nodes]
        for k, n in enumerate(nodes):
            doc_format.check_json(n["config"], f"nodes[{k}].config")
        return {"format": doc_format.FORMAT, "format_version": doc_format.FORMAT_VERSION,
                "id": str(self.id), "name": self.name, "metadata": dict(self.metadata),
                "ceiling": list(self.ceiling) if self.ceiling is not None else None,
                "nodes": nodes, "edges": edges}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "WorkflowDefinition":
        """Rebuild (and re-validate) a definition; errors name the bad field."""
        need = doc_format.need
        version = doc_format.read_header(document)
        ceiling = doc_format.read_ceiling(document)
        try:
            builder = WorkflowBuilder(need(document, "name", str), id=need(document, "id", str),
                                      metadata=document.get("metadata") or {}, ceiling=ceiling)
        except DefinitionError as exc:
            raise SerializationError(f"ceiling: {exc}", field="ceiling") from exc
        for part, add in (("nodes", builder.add_node), ("edges", builder.add_edge)):
            for i, entry in enumerate(need(document, part, list)):
                where = f"{part}[{i}]"
                item = (doc_format.read_node(entry, where, version) if part == "nodes"
                        else doc_format.read_edge(entry, where))
                try:
                    add(item)  # type: ignore[arg-type]
                except DefinitionError as exc:
                    raise SerializationError(f"{where}: {exc}", field=where) from exc
        return builder.build()

    def to_json(self, *, sign: Any = None, **kwargs: Any) -> str:
        """``to_dict()`` as a JSON string; ``sign=authority`` puts a signature line first."""
        text = json.dumps(self.to_dict(), **kwargs)
        if sign is None:
            return text
        return str(sign.seal(text.encode(), purpose=_SIGNED_PURPOSE).decode())

    @classmethod
    def from_json(cls, text: str | bytes, *, verify: Any = None) -> "WorkflowDefinition":
        """Parse a JSON document made by ``to_json``.

        ``verify=authority`` first checks the signature ``to_json(sign=...)``
        wrote, over the raw bytes, and refuses (SecurityError) an unsigned or
        altered file before any of it is parsed: a file that decides which
        checks run (``requires``, ``handler``, ``ceiling``) must not be edited.
        """
        if verify is not None:
            raw = text.encode() if isinstance(text, str) else bytes(text)
            text = verify.unseal(raw, purpose=_SIGNED_PURPOSE)
        return cls.from_dict(doc_format.parse_json(text))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)


class _Graph:
    """A definition's edges as columns, shared with the builder that made them.

    Edge objects (and their ids) are made only when someone asks for them:
    ``connect`` stores two ints and a condition. A lazily made id is the
    builder's prefix plus the edge's index, so every definition built from one
    builder names an edge the same way, whenever its objects are made.
    """

    __slots__ = ("by_name", "sources", "targets", "conditions", "objects", "prefix")

    def __init__(self, by_name: dict[str, int], sources: list[int],
                 targets: list[int], conditions: dict[int, Condition],
                 objects: dict[int, Edge], prefix: str) -> None:
        self.by_name = by_name
        self.sources, self.targets, self.conditions = sources, targets, conditions
        self.objects, self.prefix = objects, prefix

    def edge_id(self, k: int) -> EdgeId:
        """The id of edge ``k`` (without making its Edge)."""
        edge = self.objects.get(k)
        return EdgeId(f"{self.prefix}{k:x}") if edge is None else edge.id

    def edge_objects(self, nodes: tuple[Node, ...]) -> tuple[Edge, ...]:
        """Every edge as an Edge, made (once) where only its columns exist."""
        objects, out = self.objects, []
        for k in range(len(self.sources)):
            edge = objects.get(k)
            if edge is None:
                edge = objects[k] = Edge.between(nodes[self.sources[k]].id,
                                                 nodes[self.targets[k]].id,
                                                 self.conditions.get(k), self.edge_id(k))
            out.append(edge)
        return tuple(out)


class WorkflowBuilder:
    """Builds a WorkflowDefinition; every ``add_*`` validates and returns ``self``.

    ``add_edge`` and ``connect`` reject unknown endpoints, duplicate ids and
    edges, and self-loops at the call. Longer cycles are found once, by
    ``build()``, in linear time (so adding edges costs the same in any order);
    the CycleError names the cycle's path. ``connect`` makes no Edge object:
    a definition makes its edges (and their ids) when they are first asked for.
    """

    def __init__(self, name: str, *, id: WorkflowId | str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 ceiling: Iterable[str] | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"workflow name must be a non-empty string, not {name!r}",
                                  workflow=name)
        self.name = name
        self._id = id
        self._metadata = metadata
        # The most any node of this workflow may ever require (None: no ceiling).
        self._ceiling = None if ceiling is None else DefinitionCeiling(ceiling)
        self._ceiling_src = None if ceiling is None else tuple(str(c) for c in ceiling)
        self._nodes: list[Node] = []
        # Id -> position of the nodes whose id is known: every node before ``_upto``, and
        # those after it that came with an id (the rest are indexed when an id is looked up).
        self._index: dict[NodeId, int] = {}
        self._upto = 0
        self._by_name: dict[str, int] = {}
        # Node -> position, by identity (Node keeps object hashing): what ``connect`` looks
        # a Node up in, one lookup where the name would need a second check that it is
        # this very node. The builder's own: a built definition does not share it.
        self._pos: dict[Node | NodeId | str, int] = {}  # only Nodes: ids and names miss
        self._edge_ids: set[str] = set()  # ids of Edge objects given to add_edge
        self._sources: list[int] = []
        self._targets: list[int] = []
        # Only the edges that have them: an edge's condition, its Edge (from add_edge; the
        # others are made lazily, by the definition).
        self._conditions: dict[int, Condition] = {}
        self._edges: dict[int, Edge] = {}
        self._prefix = f"{EdgeId.new()}."  # lazily made edge ids: prefix + index
        # (source, target) as one int: no tuple per edge for the garbage collector to
        # track. None after build(): rebuilt from the columns if edges are added again.
        self._pairs: set[int] | None = set()
        self._shared = False  # the lists above belong to a built definition too

    def _own(self) -> None:
        """Copy the columns a built definition shares, before changing them."""
        self._nodes = list(self._nodes)
        self._index, self._by_name = dict(self._index), dict(self._by_name)
        self._sources, self._targets = list(self._sources), list(self._targets)
        self._conditions, self._edges = dict(self._conditions), dict(self._edges)
        self._shared = False

    def add_node(self, node: Node) -> "WorkflowBuilder":
        """Add a node; its id and name must be new."""
        if type(node) is not Node:
            raise DefinitionError(f"add_node takes a Node, not {type(node).__name__}",
                                  node=node)
        node_id = node.assigned_id  # a node without an id yet cannot repeat one
        if node_id is not None and node_id in self._ids():
            raise DuplicateIdError(f"duplicate node id {str(node_id)!r}", id=node_id)
        if node.name in self._by_name:
            raise DuplicateIdError(f"duplicate node name {node.name!r}", id=node.name)
        if self._ceiling is not None and node.requires:
            self._ceiling.check(node.requires, node=node.name)
        if self._shared:
            self._own()
        position = self._pos[node] = self._by_name[node.name] = len(self._nodes)
        if node_id is not None:
            self._index[node_id] = position
        self._nodes.append(node)
        return self

    def _ids(self) -> dict[NodeId, int]:
        """Id -> position of every node (drawing the ids not drawn yet)."""
        nodes = self._nodes
        if self._upto < len(nodes):
            if self._shared:
                self._own()
            index = self._index
            for position in range(self._upto, len(nodes)):
                index[nodes[position].id] = position
            self._upto = len(nodes)
        return self._index

    def add_nodes(self, *nodes: Node) -> "WorkflowBuilder":
        """Add several nodes."""
        # add_node's common case inlined (a new name, no id yet, no ceiling): the call
        # and its checks cost about half of adding a node. Anything else goes through
        # add_node, which raises or copies shared columns, so the locals are read again.
        listed, by_name, pos = self._nodes, self._by_name, self._pos
        plain = self._ceiling is None and not self._shared
        for node in nodes:
            if (plain and type(node) is Node and node.name not in by_name
                    and node.assigned_id is None):
                pos[node] = by_name[node.name] = len(listed)
                listed.append(node)
            else:
                self.add_node(node)
                listed, by_name = self._nodes, self._by_name
                plain = self._ceiling is None and not self._shared
        return self

    def add_edge(self, edge: Edge) -> "WorkflowBuilder":
        """Add an edge between known nodes (cycles are reported by ``build()``)."""
        if type(edge) is not Edge:
            raise DefinitionError(f"add_edge takes an Edge, not {type(edge).__name__}",
                                  edge=edge)
        if edge.id in self._edge_ids or edge.id.startswith(self._prefix):
            raise DuplicateIdError(f"duplicate edge id {str(edge.id)!r}", id=edge.id)
        index = self._ids()
        s, t = index.get(edge.source), index.get(edge.target)
        if s is None or t is None:
            end = edge.source if s is None else edge.target
            raise UnknownNodeError(
                f"edge {str(edge.id)!r} names unknown node {str(end)!r}",
                node_id=end, edge_id=edge.id)
        self._add(s, t, edge.condition, edge)
        self._edge_ids.add(edge.id)
        return self

    def _add(self, s: int, t: int, condition: Condition | None, edge: Edge | None) -> None:
        if self._shared:  # first: ``_pairs`` is set only on columns of the builder's own
            self._own()
        pairs = self._pairs
        if pairs is None:
            pairs = self._pairs = {(a << 32) | b for a, b in zip(self._sources, self._targets)}
        pair = (s << 32) | t
        if pair in pairs or s == t:
            # the id the edge has (add_edge) or would have had (connect)
            edge_id = edge.id if edge is not None else self._lazy_id(len(self._sources))
            if s != t:
                raise DuplicateIdError(f"there is already an edge {self._nodes[s].name!r} -> "
                                       f"{self._nodes[t].name!r}", id=edge_id)
            name = self._nodes[s].name
            raise CycleError(f"edge {name} -> {name} would close the cycle {name} -> {name}",
                             cycle=[name, name], edge_id=edge_id)
        pairs.add(pair)
        if condition is not None:
            self._conditions[len(self._sources)] = condition
        if edge is not None:
            self._edges[len(self._sources)] = edge
        self._sources.append(s)
        self._targets.append(t)

    def _lazy_id(self, k: int) -> EdgeId:
        return EdgeId(f"{self._prefix}{k:x}")

    def connect(self, source: Node | NodeId | str, target: Node | NodeId | str,
                condition: Any = None) -> "WorkflowBuilder":
        """An edge ``source -> target`` (nodes, ids or names), active when ``condition`` holds."""
        # The nodes themselves (the common case): found by identity.
        pos = self._pos
        s = pos.get(source)
        if s is None:
            s = self._position(source, "source")
        t = pos.get(target)
        if t is None:
            t = self._position(target, "target")
        pairs = self._pairs  # None while the columns are shared (build() drops it)
        if condition is None and pairs is not None and s != t:
            # _add's common case inlined (a call costs a quarter of a connect)
            pair = (s << 32) | t
            if pair not in pairs:
                pairs.add(pair)
                self._sources.append(s)
                self._targets.append(t)
                return self
        self._add(s, t, None if condition is None else as_condition(condition), None)
        return self

    def _position(self, ref: Node | NodeId | str, role: str) -> int:
        """The index of a node of this builder, given as a Node, a NodeId or a name."""
        key: Any = ref.id if type(ref) is Node else ref
        i = self._ids().get(key)
        if i is None and type(ref) is not Node:
            i = self._by_name.get(ref) if isinstance(ref, str) else None
        if i is None:
            raise UnknownNodeError(f"connect: the {role} {ref!r} is neither a node of "
                                   f"workflow {self.name!r} nor the name or id of one",
                                   node_id=ref)
        return i

    def build(self) -> WorkflowDefinition:
        """The immutable definition; CycleError if the edges close a cycle."""
        if not self._nodes:
            raise DefinitionError(f"workflow {self.name!r} has no nodes", workflow=self.name)
        # The definition takes the columns as they are (no copy); the builder copies
        # them before it changes them again. The duplicate-edge set is not needed
        # by the definition and is dropped, so a kept builder costs little memory.
        graph = _Graph(self._by_name, self._sources, self._targets,
                       self._conditions, self._edges, self._prefix)
        definition = WorkflowDefinition(self.name, tuple(self._nodes), id=self._id,
                                        metadata=self._metadata, ceiling=self._ceiling_src,
                                        _graph=graph)
        self._shared = True
        self._pairs = None
        return definition
