"""CheckpointManager: versioned snapshots of workflow definitions (or any dict-able object).

    manager = CheckpointManager.with_file_storage(checkpoint_dir, "1.0.0")
    checkpoint_id = await manager.save_checkpoint(workflow)
    workflow = await manager.load_latest_checkpoint(workflow.id)

Each checkpoint is one record (so one atomic, checksummed write) under the key
``checkpoints/<workflow id>/<seq>-<unix ms>-<random>``; the part after
``checkpoints/`` is the checkpoint id. The sequence number orders checkpoints
of one workflow, so listing and pruning read no record at all. ``/`` and ``%``
in a workflow id are escaped as ``%2F`` / ``%25``.

The same atomic write updates ``checkpoint-heads/<workflow id>``, the newest
sequence number saved: a newest checkpoint deleted behind the manager's back
(which no checksum can see) makes ``load_latest_checkpoint`` raise
StorageCorruptError naming it instead of returning the one before.

The manager's ``schema_version`` ("MAJOR.MINOR.PATCH") is stored with every
checkpoint. A checkpoint of the same major version loads as is; a newer major
raises CheckpointVersionError; an older major is upgraded by the migrations
registered with :meth:`CheckpointManager.register_migration`, one major at a time.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import (
    CheckpointKindError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    StateConfigError,
    StorageCorruptError,
)
from ._records import Migrations
from ._storage import Storage

__all__ = ["CheckpointManager", "CheckpointInfo"]

_log = logging.getLogger("lion_nb.checkpoint")
_PREFIX = "checkpoints/"
_HEADS = "checkpoint-heads/"


@dataclass(frozen=True)
class CheckpointInfo:
    """One stored checkpoint: its id, workflow, sequence number and wall-clock time."""

    checkpoint_id: str
    workflow_id: str
    seq: int
    created_at: float


@dataclass(frozen=True)
class _Kind:
    name: str
    cls: type | None
    dump: Callable[[Any], dict[str, Any]]
    load: Callable[[dict[str, Any]], Any]


def _escape(workflow_id: str) -> str:
    return workflow_id.replace("%", "%25").replace("/", "%2F")


def _unescape(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def _parse_id(checkpoint_id: str) -> CheckpointInfo | None:
    """Split a checkpoint id into its parts; None if it is not one."""
    wid, sep, tail = str(checkpoint_id).rpartition("/")
    parts = tail.split("-")
    if not sep or len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return CheckpointInfo(str(checkpoint_id), _unescape(wid), int(parts[0]), int(parts[1]) / 1000)


def _major(version: str) -> int:
    head = str(version).split(".", 1)[0]
    if not head.isdigit():
        raise StateConfigError(f"schema version must look like '1.0.0', not {version!r}",
                               field="schema_version")
    return int(head)


class CheckpointManager:
    """Saves, loads, lists and prunes checkpoints in any :class:`Storage`."""

    def __init__(self, storage: Storage, schema_version: str = "1.0.0", *,
                 on_saved: Callable[[dict[str, Any]], None] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.storage = storage
        self.schema_version = str(schema_version)
        self._major = _major(self.schema_version)
        #: Called with a dict describing each saved checkpoint (the executor forwards it).
        self.on_saved = on_saved
        self.clock = clock
        self.migrations = Migrations()
        self._kinds: dict[str, _Kind] = {}
        self.register_kind("dict", dict, dump=dict, load=dict)

    @classmethod
    def with_file_storage(cls, checkpoint_dir: str | Path, schema_version: str = "1.0.0",
                          **kwargs: Any) -> "CheckpointManager":
        """A manager over a :class:`FileStorage` in ``checkpoint_dir`` (created if missing)."""
        from ._file_storage import FileStorage
        return cls(FileStorage(checkpoint_dir), schema_version, **kwargs)

    @classmethod
    def with_sqlite_storage(cls, path: str | Path, schema_version: str = "1.0.0",
                            **kwargs: Any) -> "CheckpointManager":
        """A manager over a :class:`SqliteStorage` database at ``path``."""
        from ._sqlite_storage import SqliteStorage
        return cls(SqliteStorage(path), schema_version, **kwargs)

    def __repr__(self) -> str:
        return f"CheckpointManager({self.storage!r}, {self.schema_version!r})"

    # --- what can be checkpointed ------------------------------------------------

    def register_kind(self, name: str, cls: type | None = None, *,
                      dump: Callable[[Any], dict[str, Any]] | None = None,
                      load: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """Teach the manager a type: stored under ``name``, ``to_dict``/``from_dict`` by default."""
        if cls is None and (dump is None or load is None):
            raise CheckpointKindError("register_kind needs a class or both dump= and load=",
                                      kind=name)
        dump = dump or (lambda obj: obj.to_dict())
        load = load or getattr(cls, "from_dict", None)
        if load is None:
            raise CheckpointKindError(f"{cls!r} has no from_dict; pass load=", kind=name)
        self._kinds[name] = _Kind(name, cls, dump, load)

    def register_migration(self, from_major: int,
                           fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Register ``fn`` upgrading a stored object document from major N to N+1."""
        self.migrations.register(from_major, fn)

    def _kind_of(self, obj: Any) -> _Kind:
        self._ensure_model_kind()
        for kind in self._kinds.values():
            if kind.cls is not None and type(obj) is kind.cls:
                return kind
        for kind in self._kinds.values():
            if kind.cls is not None and isinstance(obj, kind.cls):
                return kind
        cls = type(obj)
        if callable(getattr(obj, "to_dict", None)) and callable(getattr(cls, "from_dict", None)):
            name = f"{cls.__module__}.{cls.__qualname__}"
            self.register_kind(name, cls)
            return self._kinds[name]
        raise CheckpointKindError(f"cannot checkpoint a {cls.__name__}: give it "
                                  f"to_dict/from_dict or call register_kind()",
                                  kind=cls.__qualname__)

    def _ensure_model_kind(self) -> None:
        if "workflow_definition" not in self._kinds:
            from ..model import WorkflowDefinition  # state sits above model: import is fine
            self.register_kind("workflow_definition", WorkflowDefinition)

    # --- save and load --------------------------------------------------------------

    async def save_checkpoint(self, obj: Any, *, workflow_id: str | None = None) -> str:
        """Store a snapshot of ``obj`` (its ``.id`` names the workflow); its checkpoint id."""
        kind = self._kind_of(obj)
        wid = workflow_id if workflow_id is not None else getattr(obj, "id", None)
        if wid is None:
            raise StateConfigError(f"a {type(obj).__name__} has no .id; pass workflow_id=",
                                   field="workflow_id")
        wid = str(wid)
        document = kind.dump(obj)
        now = self.clock.time()
        infos = await self.list_checkpoints(wid)
        head = await self.storage.get(_HEADS + _escape(wid)) or {}
        seq = max(infos[-1].seq if infos else 0, int(head.get("seq", 0))) + 1
        # The random tail keeps two processes saving at once from overwriting each other.
        cid = f"{_escape(wid)}/{seq:010d}-{int(now * 1000)}-{secrets.token_hex(4)}"
        record = {"checkpoint_id": cid, "workflow_id": wid, "kind": kind.name,
                  "schema_version": self.schema_version, "created_at": now,
                  "document": document}
        await self.storage.put_many([(_PREFIX + cid, record),
                                     (_HEADS + _escape(wid), {"seq": seq, "checkpoint_id": cid})])
        if self.on_saved is not None:
            info = {k: v for k, v in record.items() if k != "document"}
            try:
                self.on_saved(info)
            except Exception:  # an observer must never undo a durable save
                _log.exception("on_saved hook failed for checkpoint %s", cid)
        return cid

    async def load_checkpoint(self, checkpoint_id: str) -> Any:
        """The object saved as ``checkpoint_id``; CheckpointNotFoundError if there is none."""
        info = _parse_id(checkpoint_id)
        record = None if info is None else await self.storage.get(_PREFIX + checkpoint_id)
        if record is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r}",
                                          key=checkpoint_id)
        return self._restore(checkpoint_id, record)

    async def load_latest_checkpoint(self, workflow_id: str) -> Any:
        """The newest checkpoint of ``workflow_id``; CheckpointNotFoundError if none."""
        infos = await self.list_checkpoints(workflow_id)
        head = await self.storage.get(_HEADS + _escape(str(workflow_id))) or {}
        newest = infos[-1].seq if infos else 0
        if int(head.get("seq", 0)) > newest:  # a twin of equal seq may be pruned: not damage
            cid = head.get("checkpoint_id")
            raise StorageCorruptError(
                f"the newest checkpoint of workflow {str(workflow_id)!r}, {cid!r} (number "
                f"{head['seq']}), is missing from {self.storage!r}; the newest present is number "
                f"{newest}. Load an older one by id (list_checkpoints) if that is acceptable",
                key=cid, checkpoint_id=cid, workflow_id=str(workflow_id), path=None)
        if not infos:
            raise CheckpointNotFoundError(f"no checkpoint of workflow {str(workflow_id)!r}",
                                          key=str(workflow_id))
        return await self.load_checkpoint(infos[-1].checkpoint_id)

    async def list_checkpoints(self, workflow_id: str) -> list[CheckpointInfo]:
        """Checkpoints of ``workflow_id``, oldest first (read from keys alone)."""
        keys = await self.storage.keys(f"{_PREFIX}{_escape(str(workflow_id))}/")
        infos = [_parse_id(k[len(_PREFIX):]) for k in keys]
        return sorted((i for i in infos if i is not None), key=lambda i: i.seq)

    async def prune(self, workflow_id: str, keep: int) -> int:
        """Delete all but the newest ``keep`` checkpoints (in one atomic write); how many."""
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise StateConfigError(f"keep must be an int >= 0, not {keep!r}", field="keep")
        infos = await self.list_checkpoints(workflow_id)
        doomed = infos[:max(0, len(infos) - keep)]
        if doomed:
            gone = [_PREFIX + i.checkpoint_id for i in doomed]
            if keep == 0:  # none left: nothing is missing either
                gone.append(_HEADS + _escape(str(workflow_id)))
            await self.storage.put_many([], deletes=gone)
        return len(doomed)

    async def close(self) -> None:
        """Close the underlying storage."""
        await self.storage.close()

    def _restore(self, checkpoint_id: str, record: dict[str, Any]) -> Any:
        version = str(record.get("schema_version", ""))
        try:
            major = _major(version)
        except ValueError:
            raise CheckpointVersionError(
                f"checkpoint {checkpoint_id!r} has no readable schema version ({version!r})",
                key=checkpoint_id, version=version) from None
        if major > self._major:
            raise CheckpointVersionError(
                f"checkpoint {checkpoint_id!r} was written with schema {version}, newer than "
                f"this manager's {self.schema_version}", key=checkpoint_id, version=version)
        document = self.migrations.upgrade(record["document"], major, self._major,
                                           key=checkpoint_id)
        self._ensure_model_kind()
        kind = self._kinds.get(record.get("kind", ""))
        if kind is None:
            raise CheckpointKindError(
                f"checkpoint {checkpoint_id!r} holds a {record.get('kind')!r}, which this "
                f"manager does not know; call register_kind({record.get('kind')!r}, cls)",
                key=checkpoint_id, kind=record.get("kind"))
        return kind.load(document)
