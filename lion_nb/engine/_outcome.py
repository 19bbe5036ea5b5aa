"""Checks on what a handler returned: JSON-ability and failure results."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import NodeFailedError, ResultNotSerializableError
from ..state import canonical_json

__all__ = ["check_output", "encoded_output", "handler_error"]

_SCALARS = frozenset({type(None), bool, int, float, str})


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# What json.dumps(output, allow_nan=False) checks, with the encoder built once instead of
# on every call (~3x less CPU per node). No circular check: a cycle ends in RecursionError.
_MAKE = getattr(json.encoder, "c_make_encoder", None)
_CHECK = None if _MAKE is None else _MAKE(
    None, _refuse, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, False)


def _not_serializable(node: Any, output: Any, exc: Exception) -> ResultNotSerializableError:
    what = ("NaN or infinity" if isinstance(exc, ValueError) and "float" in str(exc)
            else "not JSON-serializable")
    err = ResultNotSerializableError(
        f"node {node.name!r} returned a {type(output).__name__} that is {what} ({exc}); "
        f"return JSON data, or set "
        "ExecutorConfig(require_json_results=False) to keep Python objects in memory "
        "(such results cannot be checkpointed)", node=node.name)
    err.__cause__ = exc
    return err


def check_output(node: Any, output: Any) -> ResultNotSerializableError | None:
    """None if ``output`` is JSON data that can be stored; otherwise the error naming the node.

    NaN and infinity are refused too: JSON has no spelling for them, so a durable
    storage could not commit them and an in-memory run would not match a durable one.
    """
    kind = type(output)
    if kind in _SCALARS and (kind is not float or math.isfinite(output)):
        return None
    try:
        if _CHECK is None:
            json.dumps(output, allow_nan=False)
        else:
            _CHECK(output, 0)
    except RecursionError as exc:
        return _not_serializable(node, output, ValueError(f"circular reference or nesting "
                                                          f"too deep ({exc})"))
    except (TypeError, ValueError) as exc:
        return _not_serializable(node, output, exc)
    return None


def encoded_output(node: Any, output: Any) -> bytes | ResultNotSerializableError:
    """``output`` as the canonical JSON a durable commit stores (checked and encoded in one
    pass, so the commit does not encode it again), or the error naming the node."""
    try:
        return canonical_json(output)
    except (TypeError, ValueError) as exc:  # a lone surrogate fails UTF-8: a ValueError
        return _not_serializable(node, output, exc)


def handler_error(node: Any, error: BaseException | str | None) -> BaseException:
    """The exception for a ``NodeResult.failure``."""
    if isinstance(error, BaseException):
        return error
    return NodeFailedError(f"node {node.name!r} reported failure: {error}", node=node.name)
