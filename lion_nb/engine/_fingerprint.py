"""Fingerprints of data: a short, process-independent hash of a value, or "cannot hash".

A fingerprint is BLAKE2b (16 bytes, hex) over canonical JSON: sorted keys, no
whitespace, tuples as lists. Values JSON has no form for get a tagged form:
sets (elements sorted by their own canonical text), bytes, enums, dates and
times, decimals, UUIDs, paths, dataclass instances (field by field), numpy
arrays (dtype, shape, bytes) and pandas objects (``hash_pandas_object``, plus
labels and dtypes). Anything else -- a connection, a lock, an arbitrary object
-- raises :class:`Unhashable`: the cache then says the node is "not cacheable"
rather than guess from ``repr`` or ``id`` (neither is stable across processes,
and ``repr`` often hides the state that matters).

The standard ``json`` encoder (C-accelerated) does the walking; its ``default``
hook supplies the tagged forms, so the common case costs one ``json.dumps``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import json
import pathlib
import uuid
from typing import Any

__all__ = ["Unhashable", "fingerprint", "digest", "NONE_FINGERPRINT"]


class Unhashable(Exception):
    """Internal: a value has no stable fingerprint; ``what`` describes it for a reason text."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def digest(data: bytes) -> str:
    """Hex BLAKE2b-128 of ``data`` (shorter and faster than SHA-256; not a signature)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _canonical(obj: Any) -> str:
    try:
        return _ENCODER.encode(obj)
    except Unhashable:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        # Mixed-type dict keys that cannot be sorted, non-str keys such as tuples, cycles.
        raise Unhashable(f"{_type_name(obj)} ({exc})") from None


def _pandas(obj: Any) -> dict[str, Any]:
    import pandas as pd  # only reached for pandas objects, so pandas is already imported

    hashed = pd.util.hash_pandas_object(obj, index=True).to_numpy()
    form: dict[str, Any] = {"$pandas": type(obj).__name__, "h": digest(hashed.tobytes())}
    if isinstance(obj, pd.DataFrame):
        form["columns"] = [str(c) for c in obj.columns]
        form["dtypes"] = [str(t) for t in obj.dtypes]
    else:
        form["name"] = str(getattr(obj, "name", None))
        form["dtype"] = str(obj.dtype)
    return form


def _tagged(obj: Any) -> Any:
    """The JSON stand-in for a value json cannot encode (the encoder's ``default`` hook)."""
    if isinstance(obj, (set, frozenset)):
        return {"$set": sorted(_canonical(x) for x in obj)}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$bytes": digest(bytes(obj))}
    if isinstance(obj, enum.Enum):
        return {"$enum": _type_name(obj), "v": obj.value}
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return {"$time": _type_name(obj), "v": obj.isoformat()}
    if isinstance(obj, _dt.timedelta):
        return {"$timedelta": obj.total_seconds()}
    if isinstance(obj, (decimal.Decimal, uuid.UUID, pathlib.PurePath, complex)):
        return {"$" + type(obj).__name__: str(obj)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"$dataclass": _type_name(obj),
                "f": {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}}
    module = type(obj).__module__
    if module.startswith("numpy"):
        if getattr(obj, "dtype", None) is not None and getattr(obj, "shape", None) == ():
            return obj.item()  # a numpy scalar
        if type(obj).__name__ == "ndarray" and obj.dtype.kind != "O":
            import numpy as np
            return {"$ndarray": str(obj.dtype), "shape": list(obj.shape),
                    "h": digest(np.ascontiguousarray(obj).tobytes())}
    if module.startswith("pandas") and type(obj).__name__ in ("DataFrame", "Series", "Index"):
        try:
            return _pandas(obj)
        except TypeError as exc:  # unhashable cells (lists, dicts) inside object columns
            raise Unhashable(f"{_type_name(obj)} ({exc})") from None
    raise Unhashable(_type_name(obj))


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=True, default=_tagged)
NONE_FINGERPRINT = digest(b"null")


def fingerprint(value: Any) -> str:
    """The fingerprint of ``value``; raises :class:`Unhashable` when it has none."""
    if value is None:
        return NONE_FINGERPRINT
    return digest(_canonical(value).encode("utf-8", "surrogatepass"))
