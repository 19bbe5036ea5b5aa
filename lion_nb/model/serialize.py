"""Deprecated: use ``WorkflowDefinition.to_dict``/``from_dict``/``from_json``."""

import warnings
from typing import Any, Mapping

from ._definition import WorkflowDefinition
from ._document import FORMAT, FORMAT_VERSION

__all__ = ["FORMAT", "FORMAT_VERSION", "definition_from_dict", "definition_from_json",
           "definition_to_dict"]
warnings.warn("lion_nb.model.serialize is deprecated: use WorkflowDefinition.to_dict, "
              "from_dict and from_json", DeprecationWarning, stacklevel=2)


def definition_to_dict(defn: WorkflowDefinition) -> dict[str, Any]:
    """``defn.to_dict()``."""
    return defn.to_dict()


def definition_from_dict(doc: Mapping[str, Any]) -> WorkflowDefinition:
    """``WorkflowDefinition.from_dict(doc)``."""
    return WorkflowDefinition.from_dict(doc)


def definition_from_json(text: str | bytes) -> WorkflowDefinition:
    """``WorkflowDefinition.from_json(text)``."""
    return WorkflowDefinition.from_json(text)
