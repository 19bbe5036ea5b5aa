"""InstanceStore: one instance's progress in durable storage, under an owner lease.

With a durable storage (``StateMachineManager(SqliteStorage(path))``) the
executor gives every instance an :class:`InstanceStore`:

* ``begin`` takes the instance's owner lease and writes its header and
  definition; a background task renews the lease every third of its TTL;
* ``commit`` writes the records of a node that ended and of the nodes the join
  rule decided with it in one atomic ``put_many`` fenced by the lease (shared
  with the commits that arrive while a write is in flight), and returns only
  once they are durable, before any successor is queued -- so a successor never
  commits before its inputs did, and an owner whose lease was taken over
  cannot commit at all;
* ``end`` writes the final state and releases the lease in one write, after
  every queued commit; ``detach`` (executor.stop) releases the lease instead.

Resume is the other half: ``adopt`` takes the lease of a stored instance and
reads it back under the lease (so nothing commits while it is rebuilt),
``definition_for`` checks the definition to resume with, ``rebind`` rewrites the
header and matches committed nodes to that definition by name. A handler runs
at least once; its committed result exists exactly once. A commit that fails
(lease lost, disk full, database locked) stops the instance in this executor --
it ends CANCELLED with the cause as its error -- and leaves it resumable.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import weakref
from typing import Any, Callable, Mapping

from ..clock import Clock
from ..errors import (CheckpointCorruptError, DefinitionChangedError, InstanceNotFoundError,
                      LeaseError, LionError, SerializationError, StateError)
from ..model import WorkflowDefinition
from ..state import EncodedRecord, InstanceState, NodeState, Storage, canonical_json
from ..state._machine import INSTANCE_TERMINAL
from ..state._storage import CALLER_WAITS
from ._durable import (HEADER_PREFIX, StoredInstance, definition_key, header_key, lease_key,
                      new_header, node_key, node_prefix, owner_is_dead, read_instance,
                      start_record, started_nodes, to_ranges, with_output)
from ._observe import EventKind as K
from ._observe import ExecEvent, ObserveStream

__all__ = ["InstanceStore"]

_log = logging.getLogger("lion_nb.durable")
_TERMINAL_VALUES = frozenset(s.value for s in INSTANCE_TERMINAL)
_RUNNING = NodeState.RUNNING.value
_MAC_PURPOSE = "lion-durable-record"

#: Committed nodes by index: ``(state, output, attempts, error)``.
Committed = dict[int, tuple[NodeState, Any, int, "str | None"]]
#: Nodes that started and never ended, by index: ``(attempts, crashes)``, this crash counted.
Started = dict[int, tuple[int, int]]
#: A commit waiting to be written: its records, its first record's encoded output, and
#: the future its caller awaits (None: the caller writes it itself).
_Queued = tuple[list[tuple[int, dict[str, Any]]], "bytes | None", "asyncio.Future[None] | None"]


class InstanceStore:
    """Commits one instance's progress to durable storage under an owner lease.

    ``on_lost(error)`` is called (once) when another owner took the lease while
    the instance ran here; the executor cancels the run then. ``in_flight()``
    counts the executor's nodes running or queued: with only the committing one,
    nothing else could use the loop until the commit returns, so the storage may
    write on the loop's thread (``CALLER_WAITS``) and skip its thread hand-off.
    """

    def __init__(self, storage: Storage, instance_id: str, *, owner: str, ttl: float,
                 clock: Clock, observe: ObserveStream,
                 on_lost: Callable[[BaseException], None], authority: Any = None,
                 in_flight: Callable[[], int] | None = None) -> None:
        self.storage = storage
        self._in_flight = in_flight
        # With an authority, every record carries a keyed MAC over (key, value) and
        # resume refuses one that lacks it or does not match: the unkeyed checksum
        # catches damage, not someone who edits the file and recomputes it.
        self._authority = authority
        self.instance_id = iid = str(instance_id)
        self.owner = owner
        self.ttl = float(ttl)
        self.header: dict[str, Any] = {}
        #: Set when a commit or renewal failed: the instance stopped here, stays resumable.
        self.failure: BaseException | None = None
        self._clock = clock
        self._observe = observe
        self._on_lost = on_lost
        self._fence = (lease_key(iid), owner)
        self._prefix = node_prefix(iid)
        self._renewer: asyncio.Task[None] | None = None
        self._queue: list[_Queued] = []
        # Done when the queue is written: the flushing task, or a future while a lone
        # commit writes on its caller's task.
        self._flusher: asyncio.Future[Any] | None = None
        # The commit sequence (see _durable.py): last number written, node indices with
        # a record and their sum, and the newest record (re-stamped by ``end``).
        self._seq = 0
        self._present: set[int] = set()
        self._sum = 0
        self._newest: tuple[str, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"InstanceStore({self.instance_id!r} in {self.storage!r}, owner {self.owner!r})"

    # --- a new instance ----------------------------------------------------------------

    async def begin(self, definition: WorkflowDefinition, inputs: Mapping[str, Any]) -> None:
        """Take the lease and write the header and definition of a new instance."""
        iid, d = self.instance_id, definition
        try:
            # A process that died before its header committed may still hold the
            # lease: acquire() takes it over, then the header check below decides.
            await self.acquire()
            if await self.storage.get(header_key(iid)) is not None:
                raise StateError(
                    f"instance {iid} already exists in {self.storage!r}; resume it with "
                    f"executor.resume({iid!r}) or start the workflow under a new id",
                    instance_id=iid)
            document = _definition_record(d)
            self.header = new_header(d, iid, inputs, self._clock.time(), InstanceState.RUNNING,
                                     stored_definition=document["document"] is not None)
            await self.storage.put_many(
                self._sealed([(header_key(iid), self.header), (definition_key(iid), document)]),
                fence=self._fence)
        except BaseException:
            await self.release()
            raise
        self.announce("begin", InstanceState.RUNNING.value)

    # --- while it runs --------------------------------------------------------------------

    async def commit(self, records: list[tuple[int, dict[str, Any]]],
                     output: bytes | None = None) -> BaseException | None:
        """Durably write node ``records`` (index, record); return once they are committed.

        ``output``: the canonical JSON of the first record's ``output``, when the caller
        has it (it checked the result by encoding it), so the result is not encoded twice.
        Commits that arrive while a write is in flight share the next
        ``put_many`` (one transaction or journal; no waiting when idle), so a
        busy instance pays one fsync per group rather than per node. Never
        raises: returns the failure when this commit is the first to fail (the
        caller stops the instance, since queueing successors of an uncommitted
        node would break resume's order), else None.
        """
        if self.failure is not None:
            return None
        loop = asyncio.get_running_loop()
        lone = self._in_flight is not None and self._in_flight() <= 1
        if self._flusher is None and lone:
            # Nothing else runs meanwhile: write here, sparing a task, a future and a
            # turn of the loop per commit (issue 21).
            flushed = self._flusher = loop.create_future()
            try:
                error = await self._flush([(records, output, None)], lone)
            finally:
                flushed.set_result(None)
        else:
            fut: asyncio.Future[None] = loop.create_future()
            self._queue.append((records, output, fut))
            if self._flusher is None:
                self._flusher = loop.create_task(self._flush([], False))
            try:
                await fut
                error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
        if error is None:
            return None
        node = records[0][1]["name"]
        what = ("lost its lease to another executor" if isinstance(error, LeaseError)
                else "could not commit")
        if self._fail(error, f"instance {self.instance_id}: node {node!r} {what} ({error}); "
                             f"it stopped here and stays resumable"):
            return self.failure
        return None

    async def _flush(self, group: list[_Queued], lone: bool) -> Exception | None:
        """Write ``group``, then the commits queued meanwhile, one ``put_many`` per group,
        until the queue is empty; returns the error of the first group (the commits
        queued later hear theirs through their futures)."""
        broken: Exception | None = None
        first: Exception | None = None
        try:
            while True:
                if not group:
                    if not self._queue:
                        return first
                    group, self._queue = self._queue, []
                try:
                    if broken is not None:
                        # A failed write may still have landed; a later one would then
                        # count records wrongly. The instance stops anyway: write no more.
                        raise broken
                    await self._write_group(group, lone)
                except asyncio.CancelledError as exc:
                    # Only a lone commit's own task is cancelled inside a write; whether
                    # it landed is unknown, so nothing more is written (still resumable).
                    broken = StateError(f"instance {self.instance_id}: a commit was "
                                        f"interrupted; nothing more is written",
                                        instance_id=self.instance_id)
                    self._fail(exc, str(broken))
                    group += self._queue
                    self._queue = []
                    for _, _, fut in group:
                        if fut is not None and not fut.done():
                            fut.set_exception(broken)
                            fut.exception()  # retrieved: its waiter may be the cancelled one
                    raise
                except Exception as exc:  # every commit of the group hears it
                    broken = exc
                    for _, _, fut in group:
                        if fut is None:
                            first = exc
                        elif not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, _, fut in group:
                        if fut is not None and not fut.done():
                            fut.set_result(None)  # a cancelled waiter: committed anyway
                group, lone = [], False
        finally:
            self._flusher = None

    async def _write_group(self, group: list[_Queued], lone: bool) -> None:
        """One atomic write of the node records of ``group``'s commits, stamped with the
        next commit sequence number; ``lone``: the caller waits for nothing else.

        Start records ride on an end record of the same write (``starts``, see
        _durable.py) when there is one: one record per node in a chain, not two.
        """
        # (index, record, its encoded output or None): only a commit's first record has one.
        records = [(i, rec, out if k == 0 else None)
                   for g, out, _ in group for k, (i, rec) in enumerate(g)]
        ends = records
        starts: dict[str, list[int]] | None = None
        if len(records) > 1 or records[0][1]["state"] == _RUNNING:
            ends = [r for r in records if r[1]["state"] != _RUNNING]
            if ends and len(ends) < len(records):
                ended = {r[0] for r in ends}
                starts = {rec["name"]: [rec["attempts"], rec.get("crashes", 0)]
                          for i, rec, _ in records if rec["state"] == _RUNNING and i not in ended}
            else:
                ends = records
        # Only the new indices: copying the whole set per commit made a chain quadratic.
        present = self._present
        new = {r[0] for r in ends if r[0] not in present}
        seq, total = self._seq + 1, self._sum + sum(new)
        h, count = self.header.get("seq", 0), len(present) + len(new)
        prefix = self._prefix
        items: list[tuple[str, dict[str, Any]]] = []
        last = len(ends) - 1
        for n, (i, rec, out) in enumerate(ends):
            data = {**rec, "seq": seq, "h": h, "manifest": [count, total]}
            if n == last and starts:  # the starts ride on the last end record
                data["starts"] = starts
            items.append((f"{prefix}{i:06d}", data if out is None else with_output(data, out)))
        if lone or self._in_flight is not None and self._in_flight() <= 1:
            token = CALLER_WAITS.set(True)
            try:
                await self.storage.put_many(self._sealed(items), fence=self._fence)
            finally:
                CALLER_WAITS.reset(token)
        else:
            await self.storage.put_many(self._sealed(items), fence=self._fence)
        present.update(new)
        self._seq, self._sum, self._newest = seq, total, items[-1]

    async def end(self, state: InstanceState, error: BaseException | None
                  ) -> tuple[InstanceState, BaseException | None]:
        """Write the final state and release the lease (one write); never raises.

        Returns the state and error the instance ends with: CANCELLED with the
        cause when a commit failed, since then it only finished in memory and is
        still resumable from storage.
        """
        # The node that ended the run may not be the last to commit: its siblings'
        # records can still be queued. The final state must follow them, not pass them.
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        if self.failure is not None:
            await self.release()  # resumable at once, not after the lease's TTL
            return (InstanceState.CANCELLED if state is InstanceState.SUCCEEDED else state,
                    self.failure)
        self.close()
        iid = self.instance_id
        now = self._clock.time()
        seq = self._seq + 1
        self.header.update(state=state.value, updated_at=now, finished_at=now,
                           error=None if error is None else str(error), seq=seq,
                           manifest=to_ranges(self._present))
        items = [(header_key(iid), self.header)]
        if self._newest is not None:  # so a header written back over this one is older
            key, rec = self._newest
            # Its starts would now outrank the ends written after them: every node ended.
            rec = {k: v for k, v in rec.items() if k != "starts"}
            items.append((key, {**rec, "seq": seq, "h": seq}))
        try:
            await self.storage.put_many(self._sealed(items),
                                        deletes=[self._fence[0]], fence=self._fence)
        except Exception as exc:  # the nodes are committed; only the summary is missing
            _log.warning("instance %s finished %s but its final state was not stored: %s",
                         iid, state.value, exc)
            failure = StateError(f"instance {iid} finished {state.value} but its final state "
                                 f"could not be stored: {exc}", instance_id=iid)
            failure.__cause__ = exc
            return state, error or failure
        self.announce("end", state.value)
        return state, error

    async def detach(self) -> None:
        """The executor is stopping: write nothing more, release the lease, stay resumable."""
        if self.failure is None:
            self.failure = StateError(
                f"instance {self.instance_id} was stopped with its executor; it is resumable: "
                f"executor.resume({self.instance_id!r})", instance_id=self.instance_id)
        await self.release()

    # --- resume ---------------------------------------------------------------------------

    async def adopt(self) -> StoredInstance:
        """Take over a stored, unfinished instance: its lease first, then its records."""
        iid, storage = self.instance_id, self.storage
        header = await storage.get(header_key(iid))
        if header is None:
            known = [k[len(HEADER_PREFIX):] for k in await storage.keys(HEADER_PREFIX)][:10]
            raise InstanceNotFoundError(f"no instance {iid!r} in {storage!r} (stored: {known})",
                                        instance_id=iid)
        if header.get("state") in _TERMINAL_VALUES:
            raise StateError(
                f"instance {iid} already finished ({header['state']}); nothing to resume. Read "
                f"its stored results with read_instance(storage, {iid!r}) or start a new "
                f"instance with execute_workflow", instance_id=iid, state=header["state"])
        await self.acquire()
        try:
            # Read under the lease: no other executor can commit while we rebuild.
            try:
                stored = await read_instance(storage, iid)
            except Exception:
                # The sequence check reads fields of records nobody verified yet: a forged
                # one must be refused for its MAC, never for what parsing it tripped over.
                await self._check_stored_macs()
                raise
            if stored is None:  # deleted between the two reads
                raise InstanceNotFoundError(f"instance {iid!r} vanished from {storage!r}",
                                            instance_id=iid)
            if self._authority is not None:
                self._check_mac(header_key(iid), stored.header)
                self._check_mac(definition_key(iid), await storage.get(definition_key(iid)))
                for i, rec in stored.nodes.items():
                    self._check_mac(node_key(iid, i), rec)
        except BaseException:
            await self.release()
            raise
        return stored

    async def _check_stored_macs(self) -> None:
        """With an authority, raise CheckpointCorruptError for the first stored record
        (header, definition, node or attempt record) without a valid keyed MAC."""
        if self._authority is None:
            return
        iid, storage = self.instance_id, self.storage
        for key in (header_key(iid), definition_key(iid)):
            self._check_mac(key, await storage.get(key))
        prefix = node_prefix(iid)
        keys = [k for k in await storage.keys(prefix) if k[len(prefix):].isdigit()]
        for key, rec in zip(keys, await storage.get_many(keys)):  # not a longer id's records
            if rec is not None:
                self._check_mac(key, rec)

    def _sealed(self, items: list[tuple[str, dict[str, Any]]]
                ) -> list[tuple[str, dict[str, Any]]]:
        if self._authority is None:
            return items
        out = []
        for key, value in items:
            body = {k: v for k, v in value.items() if k != "mac"}
            mac = self._authority.sign(canonical_json([key, body]), purpose=_MAC_PURPOSE)
            out.append((key, {**body, "mac": base64.b64encode(mac).decode("ascii")}))
        return out

    def _check_mac(self, key: str, value: Any) -> None:
        mac = value.get("mac") if isinstance(value, dict) else None
        if isinstance(mac, str):
            body = {k: v for k, v in value.items() if k != "mac"}
            try:
                raw = base64.b64decode(mac, validate=True)
            except ValueError:
                raw = b""
            if self._authority.check_signature(canonical_json([key, body]), raw,
                                               purpose=_MAC_PURPOSE):
                return
        raise CheckpointCorruptError(
            f"record {key!r} of instance {self.instance_id} has no valid keyed MAC (altered, "
            "forged, or written without this authority); refusing to resume from it", key=key)

    def definition_for(self, stored: StoredInstance, workflow: WorkflowDefinition | None,
                       allow_changed: bool) -> WorkflowDefinition:
        """The definition to resume with, after checking it against the stored fingerprint."""
        iid = self.instance_id
        if workflow is None:
            if stored.definition is None:
                raise StateError(
                    f"instance {iid} was started with a definition holding Python callable "
                    f"conditions, which cannot be stored; pass the same workflow: "
                    f"executor.resume({iid!r}, workflow)", instance_id=iid)
            return WorkflowDefinition.from_dict(stored.definition)
        if not isinstance(workflow, WorkflowDefinition):
            raise LionError(f"resume takes a WorkflowDefinition, not {type(workflow).__name__}")
        if workflow.fingerprint() != stored.header.get("fingerprint") and not allow_changed:
            before = set()
            if stored.definition is not None:
                before = {n["name"] for n in stored.definition.get("nodes", ())}
            after = {n.name for n in workflow.nodes}
            detail = ""
            if before:
                detail = (f" (nodes added: {sorted(after - before)[:10]}, removed: "
                          f"{sorted(before - after)[:10]}; or edges, handlers or conditions "
                          f"changed)")
            raise DefinitionChangedError(
                f"instance {iid} was started with a different structure of workflow "
                f"{stored.header.get('workflow')!r}{detail}; pass allow_changed=True to resume "
                f"anyway (committed nodes are matched by name)", instance_id=iid)
        return workflow

    async def rebind(self, stored: StoredInstance, definition: WorkflowDefinition
                     ) -> tuple[Committed, Started]:
        """Committed and started nodes by index of ``definition``; rewrite the header
        (and re-key the records if the definition changed)."""
        iid = self.instance_id
        by_name = definition.by_name
        committed: Committed = {}
        started: Started = {}
        moved: list[tuple[str, dict[str, Any]]] = []
        stale: list[str] = []
        for old, rec in stored.nodes.items():
            # matched by name: indices move if nodes changed
            name = rec.get("name")
            i = by_name.get(name) if isinstance(name, str) else None
            if i is None:
                stale.append(node_key(iid, old))
                continue
            if rec["state"] != _RUNNING:
                committed[i] = (NodeState(rec["state"]), rec.get("output"),
                                int(rec.get("attempts", 0)), rec.get("error"))
            if i != old:
                stale.append(node_key(iid, old))
                # Restamped below: the starts it carries would outrank later records.
                moved.append((node_key(iid, i), {k: v for k, v in rec.items()
                                                 if k != "starts"}))
        # Nodes whose process died under them. A start carried by another node's record
        # becomes a record of its own, so it survives that record being moved.
        own = {r.get("name") for r in stored.nodes.values() if r["state"] == _RUNNING}
        for name, (attempts, crashes) in started_nodes(stored.nodes).items():
            i = by_name.get(name)
            if i is None:
                continue
            started[i] = (attempts, crashes + 1)
            if name not in own:
                moved.append((node_key(iid, i), start_record(name, attempts, crashes)))
        # The resume write is the next number of the commit sequence; records kept in
        # place keep theirs, moved ones (and ones written before sequences) are stamped.
        seq = 1 + max([int(stored.header.get("seq", 0))]
                      + [int(r.get("seq", 0)) for r in stored.nodes.values()])
        kept = {by_name[r["name"]] for r in stored.nodes.values()
                if isinstance(r.get("name"), str) and r["name"] in by_name}
        kept.update(started)
        stamp = {"seq": seq, "h": seq, "manifest": [len(kept), sum(kept)]}
        moved += [(node_key(iid, i), rec) for i, rec in stored.nodes.items()
                  if "seq" not in rec and node_key(iid, i) not in stale]
        moved = [(k, {**rec, **stamp}) for k, rec in moved]
        header = dict(stored.header)
        header.update(updated_at=self._clock.time(), resumes=int(header.get("resumes", 0)) + 1,
                      owner=self.owner, state=InstanceState.RUNNING.value,  # may be pending
                      seq=seq, manifest=to_ranges(kept), nodes=len(definition.nodes),
                      resumed_seq=seq)  # records up to it were restored (remote.stored_result)
        items = [(header_key(iid), header)]
        fingerprint = definition.fingerprint()
        if fingerprint != header.get("fingerprint"):  # allow_changed: later resumes compare anew
            header["fingerprint"] = fingerprint
            document = _definition_record(definition)
            header["stored_definition"] = document["document"] is not None
            items.append((definition_key(iid), document))
        moved_keys = {k for k, _ in moved}
        await self.storage.put_many(self._sealed(items + moved),
                                    deletes=[k for k in stale if k not in moved_keys],
                                    fence=self._fence)
        self.header = header
        self._seq, self._present, self._sum = seq, kept, sum(kept)
        return committed, started

    @staticmethod
    async def unfinished(storage: Storage) -> tuple[list[str], dict[str, StateError]]:
        """Ids of the instances in ``storage`` whose stored state is not final, and the
        instances whose header cannot be read, with the error (one never hides the rest)."""
        out, damaged = [], {}
        for key in await storage.keys(HEADER_PREFIX):
            iid = key[len(HEADER_PREFIX):]
            try:
                header = await storage.get(key)
            except StateError as exc:  # CheckpointCorruptError, StorageError, ...
                _log.warning("instance %s: header %r cannot be read: %s", iid, key, exc)
                damaged[iid] = exc
                continue
            if header is not None and header.get("state") not in _TERMINAL_VALUES:
                out.append(iid)
        return out, damaged

    # --- lease ------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take the instance's lease: free, expired, or held by a process that has exited."""
        key, now = self._fence[0], self._clock.time()
        try:
            await self.storage.acquire_lease(key, self.owner, self.ttl, now)
        except LeaseError as exc:
            held = await self.storage.get(key) or {}
            holder = str(held.get("owner", "?"))
            if not owner_is_dead(holder):
                raise LeaseError(
                    f"instance {self.instance_id} is owned by {holder!r} (lease {key!r} valid "
                    f"for {float(held.get('expires', now)) - now:.1f}s more); wait for it to "
                    f"expire or stop that executor", instance_id=self.instance_id,
                    owner=holder, key=key) from exc
            # Its process is gone: present a time just past its expiry. The storage
            # still compares atomically, so of two resumers only one wins.
            past = max(now, float(held.get("expires", now)) + 1e-3)
            await self.storage.acquire_lease(key, self.owner, self.ttl, past)
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew(), name=f"lion-lease {self.instance_id}")

    async def _renew(self) -> None:
        while True:
            await self._clock.sleep(self.ttl / 3)
            try:
                await self.storage.renew_lease(self._fence[0], self.owner, self.ttl,
                                               self._clock.time())
            except LeaseError as exc:
                if self._fail(exc, f"instance {self.instance_id}: another executor took its "
                                   f"lease ({exc}); it stopped here"):
                    self._on_lost(self.failure or exc)
                return
            except Exception as exc:  # transient: fencing keeps a lapsed lease safe
                _log.warning("instance %s: lease renewal failed: %s", self.instance_id, exc)

    def close(self) -> None:
        """Stop renewing the lease (the lease itself expires or is released by ``end``)."""
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def release(self) -> None:
        """Stop renewing and give the lease back now (best effort: it expires anyway)."""
        self.close()
        try:
            await self.storage.release_lease(self._fence[0], self.owner)
        except Exception:  # the lease expires on its own
            pass

    def _fail(self, exc: BaseException, message: str) -> bool:
        """Record the first failure (True) -- later ones add nothing (False)."""
        if self.failure is not None:
            return False
        cls = LeaseError if isinstance(exc, LeaseError) else StateError
        self.failure = cls(message, instance_id=self.instance_id, owner=self.owner)
        self.failure.__cause__ = exc
        _log.error("%s", message)
        return True

    def announce(self, what: str, state: str) -> None:
        """Tell the observe stream that ``what`` (begin, resume, end) was stored."""
        obs = self._observe
        if obs.wants(K.CHECKPOINT_SAVED):
            obs.emit(ExecEvent(K.CHECKPOINT_SAVED, self._clock.time(), self.instance_id, None,
                               0, {"what": what, "state": state,
                                   "key": header_key(self.instance_id),
                                   "storage": repr(self.storage)}))


# A definition is immutable: its stored record is built and encoded once, however often it
# runs (a 2k-node chain's document is ~0.8 MB: ~10 µs per node to build, as much to encode,
# each a tenth of a durable node commit; issue 21).
_DOCUMENTS: weakref.WeakKeyDictionary[WorkflowDefinition, EncodedRecord] = \
    weakref.WeakKeyDictionary()


def _definition_record(definition: WorkflowDefinition) -> EncodedRecord:
    """The record stored at ``definitions/<iid>``: ``{"document": None}`` if the definition
    holds Python callables (resume then needs the workflow)."""
    try:
        return _DOCUMENTS[definition]
    except KeyError:
        pass
    try:
        document: dict[str, Any] | None = definition.to_dict()
    except SerializationError:
        document = None
    record = {"document": document}
    try:
        raw = canonical_json(record)
    except (TypeError, ValueError) as exc:  # as the storage's own encoding would refuse it
        raise SerializationError(f"the definition of workflow {definition.name!r} is not "
                                 f"JSON-serializable: {exc}", field="definition") from exc
    _DOCUMENTS[definition] = encoded = EncodedRecord(record, raw)
    return encoded
