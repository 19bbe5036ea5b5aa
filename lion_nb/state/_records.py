"""The record envelope every durable backend stores: schema version + SHA-256 checksum.

A record is a JSON-able dict stored under a string key. On disk (a file, a
SQLite blob) it is one line of JSON whose checksum field comes first, so the
checksummed bytes can be sliced out without re-serializing::

    {"sha256":"<64 hex>","body":{"data":{...},"key":"instances/run-1","v":1}}

``body`` is canonical JSON (sorted keys, no spaces, UTF-8, no NaN), and the
SHA-256 is over exactly those bytes. Reading checks, in order: the frame (an
empty or truncated record fails here), the checksum (a flipped byte), the
parsed shape, that the stored key is the key asked for (a file copied or
renamed under another name), then the version: newer than this code knows ->
CheckpointVersionError; older -> registered migrations upgrade it step by step
(N -> N+1) in memory; the stored bytes are never rewritten on read.

    codec = RecordCodec(version=2)

    @codec.migration(1)
    def add_attempt(data):          # upgrades a version-1 record to version 2
        return {**data, "attempt": data.get("attempt", 1)}
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from typing import Any, Callable

from ..errors import (
    CheckpointCorruptError,
    CheckpointVersionError,
    SerializationError,
    StateConfigError,
)

__all__ = ["RECORD_VERSION", "Migrations", "RecordCodec", "DEFAULT_CODEC", "EncodedRecord",
           "canonical_json"]

#: The record format version this code writes by default.
RECORD_VERSION = 1

Record = dict[str, Any]
Migration = Callable[[Record], Record]

_HEAD = b'{"sha256":"'
_MID = b'","body":'
_BODY_START = len(_HEAD) + 64 + len(_MID)
_HEX = frozenset(b"0123456789abcdef")


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps with these options builds a new encoder on every call; one built once
# writes the same bytes for a third less CPU per node commit (issue 21). Without a
# circular check: a cycle ends in RecursionError, mapped to ValueError below.
_MAKE = getattr(json.encoder, "c_make_encoder", None)  # None without the C accelerator
_ENCODE = None if _MAKE is None else _MAKE(
    None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False)


class EncodedRecord(dict[str, Any]):
    """A record that carries its own canonical JSON (``json``), so no codec encodes it again.

    A real dict with the same content, so a backend that knows nothing of it still
    works; the creator guarantees ``json == canonical_json(dict(self))`` and never
    changes either afterwards (issue 21: a node's result is encoded once per commit).
    """

    __slots__ = ("json",)

    def __init__(self, data: Record, json: bytes) -> None:
        super().__init__(data)
        self.json = json


def _key_json(key: str) -> bytes:
    """A key as canonical JSON: the bytes ``canonical_json(key)`` gives, or its error."""
    try:
        if not isinstance(key, str):
            raise TypeError(f"a record key is a str, not {type(key).__name__}")
        return json.encoder.encode_basestring(key).encode("utf-8")
    except (TypeError, ValueError) as exc:  # a lone surrogate does not encode to UTF-8
        raise SerializationError(f"record {key!r} is not JSON-serializable: {exc}",
                                 field=str(key)) from exc


def canonical_json(value: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no whitespace, NaN/Infinity refused."""
    if type(value) is EncodedRecord:
        return value.json
    if _ENCODE is None:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    try:
        return "".join(_ENCODE(value, 0)).encode("utf-8")
    except RecursionError as exc:
        raise ValueError(f"circular reference or nesting too deep ({exc})") from exc


class Migrations:
    """Functions that upgrade a payload from version N to N+1, applied in a chain."""

    def __init__(self) -> None:
        self._steps: dict[int, Migration] = {}

    def register(self, from_version: int, fn: Migration) -> Migration:
        """Register ``fn`` as the upgrade from ``from_version`` to ``from_version + 1``."""
        if from_version in self._steps:
            raise StateConfigError(
                f"a migration from version {from_version} is already registered",
                field="from_version")
        self._steps[from_version] = fn
        return fn

    def upgrade(self, data: Record, version: int, target: int, *, key: str) -> Record:
        """Upgrade ``data`` from ``version`` to ``target``; CheckpointVersionError if impossible."""
        if version > target:
            raise CheckpointVersionError(
                f"record {key!r} has schema version {version}, newer than the "
                f"{target} this code reads; upgrade lion_nb to read it",
                key=key, version=version)
        while version < target:
            step = self._steps.get(version)
            if step is None:
                raise CheckpointVersionError(
                    f"record {key!r} has schema version {version} and no migration "
                    f"from {version} to {version + 1} is registered", key=key, version=version)
            data = step(data)
            if not isinstance(data, dict):
                raise CheckpointVersionError(
                    f"record {key!r}: the migration from version {version} returned "
                    f"{type(data).__name__}, not a dict", key=key, version=version)
            version += 1
        return data


class RecordCodec:
    """Encodes records into checksummed envelopes and decodes (verifies, migrates) them."""

    def __init__(self, version: int = RECORD_VERSION) -> None:
        if not isinstance(version, int) or version < 1:
            raise StateConfigError(f"record version must be a positive int, not {version!r}",
                                   field="version")
        self.version = version
        self.migrations = Migrations()

    def migration(self, from_version: int) -> Callable[[Migration], Migration]:
        """Decorator form of ``migrations.register(from_version, fn)``."""
        return lambda fn: self.migrations.register(from_version, fn)

    def encode(self, key: str, data: Record) -> bytes:
        """The envelope bytes for ``data`` under ``key``; SerializationError if not JSON-able."""
        if type(data) is EncodedRecord:
            # Canonical JSON of {"data", "key", "v"}: its keys already sort in this order.
            body = b"".join((b'{"data":', data.json, b',"key":', _key_json(key),
                             b',"v":%d}' % self.version))
            digest = hashlib.sha256(body).hexdigest().encode("ascii")
            return b"".join((_HEAD, digest, _MID, body, b"}"))
        if not isinstance(data, dict):
            raise SerializationError(f"record {key!r} must be a dict, not {type(data).__name__}",
                                     field=key)
        try:
            body = canonical_json({"data": data, "key": key, "v": self.version})
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"record {key!r} is not JSON-serializable: {exc}",
                                     field=key) from exc
        digest = hashlib.sha256(body).hexdigest().encode("ascii")
        return b"".join((_HEAD, digest, _MID, body, b"}"))

    def decode(self, raw: bytes, key: str | None = None) -> tuple[str, Record]:
        """Verify and parse an envelope into ``(key, data)`` at this codec's version.

        ``key`` is the key the caller looked up; a record stored under another
        key is corrupt. CheckpointCorruptError / CheckpointVersionError name it.
        """
        doc = self.verify(raw, key)
        data = self.migrations.upgrade(doc["data"], doc["v"], self.version, key=doc["key"])
        return doc["key"], data

    @staticmethod
    def verify(raw: bytes, key: str | None = None) -> dict[str, Any]:
        """Check frame, checksum and shape; the parsed ``{"key", "v", "data"}`` unmigrated."""
        name = key if key is not None else "<unknown>"
        if not raw:
            raise CheckpointCorruptError(f"record {name!r} is empty", key=key)
        if (len(raw) <= _BODY_START or not raw.startswith(_HEAD)
                or raw[_BODY_START - len(_MID):_BODY_START] != _MID or not raw.endswith(b"}")):
            raise CheckpointCorruptError(
                f"record {name!r} is truncated or not a lion_nb record ({len(raw)} bytes)",
                key=key)
        digest = raw[len(_HEAD):len(_HEAD) + 64]
        body = raw[_BODY_START:-1]
        if not _HEX.issuperset(digest) or hashlib.sha256(body).hexdigest().encode() != digest:
            raise CheckpointCorruptError(f"record {name!r} fails its SHA-256 checksum", key=key)
        try:
            doc = json.loads(body)
        except ValueError as exc:  # only reachable if the writer itself wrote garbage
            raise CheckpointCorruptError(f"record {name!r} is not valid JSON: {exc}",
                                         key=key) from exc
        if (not isinstance(doc, dict) or not isinstance(doc.get("key"), str)
                or not isinstance(doc.get("data"), dict) or type(doc.get("v")) is not int):
            raise CheckpointCorruptError(f"record {name!r} lacks key, v or data", key=key)
        if key is not None and doc["key"] != key:
            raise CheckpointCorruptError(
                f"record {key!r} holds the record of key {doc['key']!r}", key=key)
        return doc


#: The codec backends use unless given another.
DEFAULT_CODEC = RecordCodec()
