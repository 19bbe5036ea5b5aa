"""The JSON document format of workflow definitions: version header, fields, field-naming errors.

Reading goes field by field so every error names the bad field
(``nodes[3].retry``); ``WorkflowDefinition.to_dict``/``from_dict`` assemble
the whole document from these pieces.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import DefinitionError, SerializationError
from ._edge import Edge
from ._ids import EdgeId, NodeId
from ._node import Node, Priority
from ._retry import RetryPolicy

__all__ = ["FORMAT", "FORMAT_VERSION", "check_json", "edge_document", "need", "parse_json",
           "read_ceiling", "read_edge", "read_header", "read_node"]

FORMAT = "lion_nb.workflow"
FORMAT_VERSION = 2
# Format 1 named today's default rule "one_success" (before Airflow's meaning was taken).
_V1_RULES = {"one_success": "none_failed_min_one_success"}


def need(doc: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    """``doc[key]``, which must exist and be a ``kind``; SerializationError naming it if not."""
    path = f"{where}.{key}" if where else key
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{where or 'document'} must be an object", field=where or "$")
    if key not in doc:
        raise SerializationError(f"missing field {path}", field=path)
    value = doc[key]
    if not isinstance(value, kind):
        raise SerializationError(f"field {path} has type {type(value).__name__}", field=path)
    return value


def read_header(doc: Any) -> int:
    """Check the format name and that the version is one this lion_nb reads; return it."""
    if need(doc, "format", str) != FORMAT:
        raise SerializationError(f"not a {FORMAT} document (format={doc['format']!r})",
                                 field="format")
    version = need(doc, "format_version", int)
    if version > FORMAT_VERSION:
        raise SerializationError(
            f"document format_version {version} is newer than this lion_nb reads "
            f"({FORMAT_VERSION})", field="format_version")
    return version


def read_ceiling(doc: Mapping[str, Any]) -> list[str] | None:
    """The optional capability ceiling: None or a list."""
    ceiling = doc.get("ceiling")
    if ceiling is not None and not isinstance(ceiling, list):
        raise SerializationError("field ceiling must be a list of capabilities", field="ceiling")
    return ceiling


def read_node(doc: Any, where: str, version: int = FORMAT_VERSION) -> Node:
    """The Node a document entry describes; errors name ``where``."""
    try:
        retry = doc.get("retry") if isinstance(doc, Mapping) else None
        rule = doc.get("trigger_rule", "none_failed_min_one_success")
        if version < 2:
            rule = _V1_RULES.get(rule, rule)
        return Node(
            NodeId(need(doc, "id", str, where)), need(doc, "name", str, where),
            handler=doc.get("handler"), config=doc.get("config") or {},
            requires=doc.get("requires") or (),
            retry=RetryPolicy(**retry) if isinstance(retry, Mapping) else retry,
            timeout=doc.get("timeout"), deadline=doc.get("deadline"),
            priority=Priority[doc.get("priority", "NORMAL")],
            trigger_rule=rule,
            resources=doc.get("resources") or (), cache=doc.get("cache", True),
            cache_ttl=doc.get("cache_ttl"), version=doc.get("version"))
    except SerializationError:
        raise
    except (DefinitionError, KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"{where}: {exc}", field=where) from exc


def read_edge(doc: Any, where: str) -> Edge:
    """The Edge a document entry describes (its endpoints are checked by the builder)."""
    try:
        cond = doc.get("condition") if isinstance(doc, Mapping) else None
        return Edge(EdgeId(need(doc, "id", str, where)), need(doc, "source", str, where),
                    need(doc, "target", str, where), condition=cond)
    except SerializationError:
        raise
    except DefinitionError as exc:
        raise SerializationError(f"{where}: {exc}", field=where) from exc


def edge_document(edge: Edge, k: int, label: str) -> dict[str, Any]:
    """Entry ``k`` of the edge list; ``label`` ("a -> b") names it if it cannot be saved."""
    cond = edge.condition
    if cond is not None and not cond.serializable:
        raise SerializationError(
            f"edge {k} ({label}) has a Python callable condition {cond.label!r}; "
            "only expression conditions can be saved", field=f"edges[{k}].condition")
    return {"id": str(edge.id), "source": str(edge.source), "target": str(edge.target),
            "condition": cond.expression if cond else None}


def check_json(value: Any, field: str) -> None:
    """SerializationError naming ``field`` unless ``value`` is JSON data."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{field} holds a value that is not JSON: {exc}",
                                 field=field) from exc


def parse_json(text: str | bytes) -> Any:
    """The parsed JSON text; SerializationError if it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"definition is not valid JSON: {exc}", field="$") from exc
