"""The saga log: every entry applied to an instance, persisted through a state-layer Storage.

Layout under ``saga/<manager name>/``::

    def/<saga id>/<digest>     the definition an instance ran (JSON)
    inst/<instance id>         header: saga id, digest, data, created_at, status
    log/<instance id>/<seq>    one entry per step start, outcome, status change

Entries are applied to the instance when they happen (``record``) and reach
storage at the next ``flush``, as one ``put_many`` with the header when the
status changed. An outcome carries the status it implies (see
``_instance``), so after a crash the log holds a prefix of what happened,
never an outcome without its status, and folding it rebuilds the instance.
A step's *start* is only recorded: if the process dies before the next
flush, resume runs the same attempt again under the same command id, which
is what the lost start entry would have said anyway.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from ...errors import SagaNotFoundError, SagaReplyError
from ...state import Storage
from ._definition import SagaDefinition
from ._instance import SagaInstance
from ._ledger import SagaLedger
from ._status import FINAL, SagaStatus

__all__ = ["SagaLog", "check_result"]

_log = logging.getLogger("lion_nb.saga")


def check_result(value: Any, what: str, step: str) -> None:
    """Raise SagaReplyError naming ``what`` unless ``value`` survives JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SagaReplyError(f"{what} is not JSON-serializable ({exc}); the saga log is "
                             "durable, so results must be JSON data", step=step) from None


class SagaLog:
    """Applies, buffers and persists a manager's log entries (in memory without storage)."""

    def __init__(self, storage: Storage | None, namespace: str, ledger: SagaLedger) -> None:
        self.storage = storage
        self.enabled = storage is not None
        self._root = f"saga/{namespace}/"
        self._ledger = ledger
        # A step's start changes no status: a ledger that keeps no rows needs not hear of it.
        self._tell_starts = not ledger.silent
        self._unsaved: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._header_status: dict[str, SagaStatus] = {}   # status in each stored header

    def _inst_key(self, instance_id: str) -> str:
        return f"{self._root}inst/{instance_id}"

    def _entry_key(self, instance_id: str, seq: int) -> str:
        return f"{self._root}log/{instance_id}/{seq:08d}"

    # -- writing -----------------------------------------------------------------------

    def record(self, inst: SagaInstance, entry: dict[str, Any]) -> None:
        """Apply ``entry`` to ``inst`` now; it reaches storage with the next flush."""
        old = inst.status
        if self.enabled:
            self._unsaved.setdefault(inst.id, []).append((inst.entries, entry))
        inst.apply(entry)
        if self._tell_starts or entry["k"] != "start":
            self._ledger.applied(inst, entry, old)

    async def commit(self, inst: SagaInstance, entry: dict[str, Any]) -> None:
        """Record ``entry`` and flush: it is durable when this returns."""
        self.record(inst, entry)
        if self.storage is not None:    # no coroutine per outcome when there is no storage
            await self.flush(inst)

    async def flush(self, inst: SagaInstance) -> None:
        """Persist everything recorded for ``inst`` so far (one storage transaction)."""
        if self.storage is None:
            return
        batch = self._unsaved.pop(inst.id, None)
        if not batch:
            return
        items = [(self._entry_key(inst.id, seq), entry) for seq, entry in batch]
        status = inst.status
        if self._header_status.get(inst.id) is not status:
            # The header's status lets load() skip finished instances without folding them.
            items.append((self._inst_key(inst.id), self._header(inst)))
        await self.storage.put_many(items)
        if status in FINAL:
            self._header_status.pop(inst.id, None)
        else:
            self._header_status[inst.id] = status

    async def save_definition(self, definition: SagaDefinition) -> None:
        """Store ``definition`` so instances can be resumed even if it changes later."""
        if self.storage is not None:
            key = f"{self._root}def/{definition.id}/{definition.digest}"
            await self.storage.put(key, definition.to_dict())

    def _header(self, inst: SagaInstance) -> dict[str, Any]:
        return {"saga_id": inst.saga_id, "digest": inst.definition.digest, "data": inst.data,
                "created_at": inst.created_at, "status": inst.status.value}

    async def create(self, inst: SagaInstance) -> None:
        """Persist a new instance's header."""
        if self.storage is not None:
            await self.storage.put(self._inst_key(inst.id), self._header(inst))
            self._header_status[inst.id] = inst.status

    # -- reading -----------------------------------------------------------------------

    async def holds(self, instance_id: str) -> bool:
        """True if the durable log has an instance ``instance_id``."""
        if self.storage is None:
            return False
        return await self.storage.get(self._inst_key(instance_id)) is not None

    async def load(self, definitions: dict[str, SagaDefinition], clock_time: float,
                   *, skip: Iterable[str] = ()) -> list[SagaInstance]:
        """Every instance that is not final, rebuilt from its entries, oldest first.

        ``definitions`` are the registered ones; an instance whose definition
        changed since it was created runs on the stored version it started with.
        """
        storage = self.storage
        if storage is None:
            return []
        skipped = set(skip)
        prefix = f"{self._root}inst/"
        found: list[SagaInstance] = []
        for key in await storage.keys(prefix):
            instance_id = key[len(prefix):]
            if instance_id in skipped:
                continue
            header = await storage.get(key)
            if header is None or SagaStatus(header["status"]).final:
                continue
            definition = await self._definition(definitions, header["saga_id"],
                                                header["digest"], instance_id)
            inst = SagaInstance(instance_id, definition, header.get("data"),
                                header.get("created_at") or clock_time)
            entry_prefix = f"{self._root}log/{instance_id}/"
            for entry_key in await storage.keys(entry_prefix):
                entry = await storage.get(entry_key)
                if entry is not None:
                    inst.apply(entry)
            # The entry count decides the next key; keys are dense, so it matches.
            self._header_status[instance_id] = SagaStatus(header["status"])
            found.append(inst)
        found.sort(key=lambda i: (i.created_at, i.id))
        return found

    async def _definition(self, definitions: dict[str, SagaDefinition], saga_id: str,
                          digest: str, instance_id: str) -> SagaDefinition:
        registered = definitions.get(saga_id)
        if registered is not None and registered.digest == digest:
            return registered
        assert self.storage is not None
        stored = await self.storage.get(f"{self._root}def/{saga_id}/{digest}")
        if stored is None:
            raise SagaNotFoundError(f"saga instance {instance_id!r} needs definition "
                                    f"{saga_id!r} (version {digest}), which is neither "
                                    "registered nor in the saga log", saga=saga_id)
        _log.warning("instance %s resumes on the stored version %s of saga %r, not the "
                     "registered one", instance_id, digest, saga_id)
        return SagaDefinition.from_dict(stored)
