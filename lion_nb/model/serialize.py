"""JSON form of workflow definitions, with a format version and field-naming errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import DefinitionError, SerializationError
from .ids import EdgeId, NodeId
from .node import Edge, Node, Priority, RetryPolicy

if TYPE_CHECKING:
    from .definition import WorkflowDefinition

__all__ = ["FORMAT", "FORMAT_VERSION", "definition_to_dict", "definition_from_dict",
           "definition_from_json"]

FORMAT = "lion_nb.workflow"
FORMAT_VERSION = 2
# Format 1 named today's default rule "one_success" (before Airflow's meaning was taken).
_V1_RULES = {"one_success": "none_failed_min_one_success"}


def definition_to_dict(defn: "WorkflowDefinition") -> dict[str, Any]:
    """Document for ``defn``; callables in conditions cannot be saved and say so."""
    edges = []
    for k, e in enumerate(defn.edges):
        if e.condition is not None and not e.condition.serializable:
            raise SerializationError(
                f"edge {k} ({defn.nodes[defn.edge_source[k]].name!r} -> "
                f"{defn.nodes[defn.edge_target[k]].name!r}) has a Python callable condition "
                f"{e.condition.label!r}; only expression conditions can be saved",
                field=f"edges[{k}].condition")
        edges.append({"id": str(e.id), "source": str(e.source), "target": str(e.target),
                      "condition": e.condition.expression if e.condition else None})
    try:
        json.dumps(dict(defn.metadata))
        nodes = [n.to_dict() for n in defn.nodes]
        for k, n in enumerate(nodes):
            json.dumps(n["config"])
    except TypeError as exc:
        raise SerializationError(f"definition holds a value that is not JSON: {exc}",
                                 field="config") from exc
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "id": str(defn.id),
            "name": defn.name, "metadata": dict(defn.metadata),
            "ceiling": list(defn.ceiling) if defn.ceiling is not None else None,
            "nodes": nodes, "edges": edges}


def _need(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{where or 'document'} must be an object", field=where or "$")
    if key not in doc:
        raise SerializationError(f"missing field {where + '.' if where else ''}{key}",
                                 field=f"{where + '.' if where else ''}{key}")
    value = doc[key]
    if not isinstance(value, kind):
        raise SerializationError(
            f"field {where + '.' if where else ''}{key} has type {type(value).__name__}",
            field=f"{where + '.' if where else ''}{key}")
    return value


def _node(doc: Mapping[str, Any], where: str, version: int) -> Node:
    retry = doc.get("retry")
    rule = doc.get("trigger_rule", "none_failed_min_one_success")
    if version < 2:
        rule = _V1_RULES.get(rule, rule)
    try:
        return Node(
            NodeId(_need(doc, "id", str, where)), _need(doc, "name", str, where),
            handler=doc.get("handler"), config=doc.get("config") or {},
            requires=doc.get("requires") or (),
            retry=RetryPolicy(**retry) if isinstance(retry, Mapping) else retry,
            timeout=doc.get("timeout"), deadline=doc.get("deadline"),
            priority=Priority[doc.get("priority", "NORMAL")],
            trigger_rule=rule,
            resources=doc.get("resources") or ())
    except SerializationError:
        raise
    except (DefinitionError, KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"{where}: {exc}", field=where) from exc


def definition_from_dict(doc: Mapping[str, Any]) -> "WorkflowDefinition":
    """Validate and rebuild a definition; errors name the offending field."""
    from .definition import WorkflowBuilder

    if _need(doc, "format", str, "") != FORMAT:
        raise SerializationError(f"not a {FORMAT} document (format={doc['format']!r})",
                                 field="format")
    version = _need(doc, "format_version", int, "")
    if version > FORMAT_VERSION:
        raise SerializationError(
            f"document format_version {version} is newer than this lion_nb reads "
            f"({FORMAT_VERSION})", field="format_version")
    ceiling = doc.get("ceiling")
    if ceiling is not None and not isinstance(ceiling, list):
        raise SerializationError("field ceiling must be a list of capabilities", field="ceiling")
    try:
        builder = WorkflowBuilder(_need(doc, "name", str, ""), id=_need(doc, "id", str, ""),
                                  metadata=doc.get("metadata") or {}, ceiling=ceiling)
    except SerializationError:
        raise
    except (DefinitionError, ValueError) as exc:
        raise SerializationError(f"ceiling: {exc}", field="ceiling") from exc
    for i, nd in enumerate(_need(doc, "nodes", list, "")):
        where = f"nodes[{i}]"
        node = _node(nd, where, version)
        try:
            builder.add_node(node)
        except DefinitionError as exc:
            raise SerializationError(f"{where}: {exc}", field=where) from exc
    for i, ed in enumerate(_need(doc, "edges", list, "")):
        where = f"edges[{i}]"
        try:
            cond = ed.get("condition") if isinstance(ed, Mapping) else None
            edge = Edge(EdgeId(_need(ed, "id", str, where)), _need(ed, "source", str, where),
                        _need(ed, "target", str, where), condition=cond)
            builder.add_edge(edge)
        except SerializationError:
            raise
        except DefinitionError as exc:
            raise SerializationError(f"{where}: {exc}", field=where) from exc
    return builder.build()


def definition_from_json(text: str | bytes) -> "WorkflowDefinition":
    """Parse JSON text into a definition."""
    try:
        doc = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"definition is not valid JSON: {exc}", field="$") from exc
    return definition_from_dict(doc)
