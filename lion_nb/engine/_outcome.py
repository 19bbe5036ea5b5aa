"""Checks on what a handler returned: JSON-ability and failure results."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import NodeFailedError, ResultNotSerializableError

__all__ = ["check_output", "handler_error"]

_SCALARS = frozenset({type(None), bool, int, float, str})


def check_output(node: Any, output: Any) -> ResultNotSerializableError | None:
    """None if ``output`` is JSON data that can be stored; otherwise the error naming the node.

    NaN and infinity are refused too: JSON has no spelling for them, so a durable
    storage could not commit them and an in-memory run would not match a durable one.
    """
    kind = type(output)
    if kind in _SCALARS and (kind is not float or math.isfinite(output)):
        return None
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        what = "NaN or infinity" if "float" in str(exc) else "not JSON-serializable"
        err = ResultNotSerializableError(
            f"node {node.name!r} returned a {kind.__name__} that is {what} ({exc}); "
            f"return JSON data, or set "
            "ExecutorConfig(require_json_results=False) to keep Python objects in memory "
            "(such results cannot be checkpointed)", node=node.name)
        err.__cause__ = exc
        return err
    return None


def handler_error(node: Any, error: BaseException | str | None) -> BaseException:
    """The exception for a ``NodeResult.failure``."""
    if isinstance(error, BaseException):
        return error
    return NodeFailedError(f"node {node.name!r} reported failure: {error}", node=node.name)
