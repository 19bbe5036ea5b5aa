"""One cached node result and its durable record form (checksummed JSON, never pickle)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..state import canonical_json

__all__ = ["CacheEntry", "EntryCorrupt", "ENTRY_VERSION", "key_parts"]

#: The record format this code writes; an entry of another version is ignored.
ENTRY_VERSION = 1
_FIELDS = ("v", "workflow", "node", "key", "reads", "inputs_fp", "result",
           "result_fp", "created", "uncacheable")


class EntryCorrupt(Exception):
    """Internal: a stored record is not a valid entry (``what`` says why)."""


@dataclass(slots=True)
class CacheEntry:
    """The latest result of one node of one workflow, with what it was computed from.

    ``key`` is what the result was computed from, NUL-separated: code version,
    config and edges fingerprints, then each succeeded predecessor's name and
    result fingerprint (``key_parts`` splits it, to say what changed); ``reads`` maps
    the instance inputs the handler read to their fingerprints (None: it looked at
    all of them; ``inputs_fp`` is then the fingerprint of the whole mapping).
    ``uncacheable`` says why a node that ran could not be reused later (an input it
    read has no stable hash).
    """

    workflow: str
    node: str
    key: str
    reads: dict[str, str] | None
    inputs_fp: str | None
    result: Any
    result_fp: str | None
    created: float
    uncacheable: str | None = None
    #: Whether its key alone decides reuse: a ``None`` result (nothing to check for a
    #: change in place) of a cacheable node that read no inputs. Entries are not changed.
    trivial: bool = field(init=False, repr=False, compare=False)
    #: ``"\0node\0result_fp"``: what a dependant's key says of this result (None: no
    #: fingerprint), made once here rather than by every dependant on every re-run.
    tagged: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.trivial = (self.result is None and self.result_fp is not None
                        and self.reads == {} and self.uncacheable is None)
        self.tagged = None if self.result_fp is None else f"\0{self.node}\0{self.result_fp}"

    def to_record(self) -> dict[str, Any]:
        """The JSON record with its SHA-256 (TypeError/ValueError if the result is not JSON)."""
        body = {"v": ENTRY_VERSION, "workflow": self.workflow, "node": self.node,
                "key": self.key, "reads": self.reads,
                "inputs_fp": self.inputs_fp, "result": self.result,
                "result_fp": self.result_fp, "created": self.created,
                "uncacheable": self.uncacheable}
        return {"body": body, "sha256": hashlib.sha256(canonical_json(body)).hexdigest()}

    @classmethod
    def from_record(cls, record: Any) -> "CacheEntry":
        """Verify and read a stored record; EntryCorrupt says what is wrong with it."""
        if not isinstance(record, dict) or not isinstance(record.get("body"), dict):
            raise EntryCorrupt("not an entry record")
        body = record["body"]
        try:
            actual = hashlib.sha256(canonical_json(body)).hexdigest()
        except (TypeError, ValueError) as exc:
            raise EntryCorrupt(f"body is not JSON ({exc})") from None
        if record.get("sha256") != actual:
            raise EntryCorrupt("checksum mismatch")
        if body.get("v") != ENTRY_VERSION or set(body) != set(_FIELDS):
            raise EntryCorrupt(f"unknown entry version or fields (v={body.get('v')!r})")
        reads = body["reads"]
        if not isinstance(body["key"], str) or not (reads is None or isinstance(reads, dict)):
            raise EntryCorrupt("malformed key or reads")
        return cls(body["workflow"], body["node"], body["key"], reads,
                   body["inputs_fp"], body["result"], body["result_fp"],
                   float(body["created"]), body["uncacheable"])


def key_parts(key: str) -> dict[str, Any]:
    """A key split into code, config, edges and predecessor -> fingerprint."""
    fields = key.split("\0")
    fields += [""] * (3 - len(fields))
    rest = fields[3:]
    return {"code": fields[0], "config": fields[1], "edges": fields[2],
            "preds": dict(zip(rest[::2], rest[1::2]))}
