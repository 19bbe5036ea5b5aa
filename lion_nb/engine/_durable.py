"""Where a durable instance lives in storage, who owns it, and how to read it back.

Key layout (one storage may hold many instances, checkpoints and user keys)::

    instances/<iid>               header: workflow, fingerprint, inputs, state, times
    definitions/<iid>             the definition document (None if it holds callables)
    nodes/<iid>/<index:06d>       one record per node that ended and committed, or that
                                  started with no commit to carry its start (state
                                  "running", its attempt and crash counts)
    leases/<iid>                  the owner lease (see Storage.acquire_lease)

Start records (an attempt begins; issue 14, poison nodes) ride on the commit
that released the node: the end record of that commit carries them as
``starts: {name: [attempt, crashes]}``, so a chain writes one record per node,
not two (issue 21: on files, one file instead of a two-file journaled batch).
A start stands until a record of the node itself with the same or a later
``seq`` supersedes it (:func:`started_nodes`).

Headers live under their own prefix so listing instances never walks node
records, and the definition is apart from the header so the header rewritten
at the end of a run stays a few hundred bytes even for a 10k-node workflow.

Commit sequence (what no checksum can see: a deleted record, an older record
written back). Every write of an instance takes the next number of its
sequence. The header holds ``seq`` and ``manifest``, the node indices with a
record as ranges (written at begin, resume and end). Each node record holds
``seq``, ``h`` (the seq of the header it was written under) and ``manifest``:
``[count, sum of indices]`` of the node records after its commit -- two ints,
so a commit writes no more bytes as the workflow grows, and one missing record
is named exactly (the sum's difference). The end write re-stamps the newest
node record with the final header's seq, so a header written back over the
final one is older than a record. :func:`read_instance` checks all of it and
raises StorageCorruptError naming the instance and the node or header. Every
check compares records written in one atomic ``put_many``, so a crash before
or after any write never looks like damage.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import StorageCorruptError
from ..state import EncodedRecord, InstanceState, NodeState, Storage, canonical_json

__all__ = ["HEADER_PREFIX", "StoredInstance", "definition_key", "from_ranges", "header_key",
           "lease_key",
           "new_header", "new_owner_id", "node_key", "node_prefix", "node_record",
           "owner_is_dead", "read_instance", "start_record", "started_nodes", "to_ranges",
           "verify_sequence", "with_output"]

HEADER_PREFIX = "instances/"
# Enum ``.value`` is a Python-level descriptor: read once, not on every node commit.
_RUNNING = NodeState.RUNNING.value
_VALUES = {s: s.value for s in NodeState}


def header_key(instance_id: str) -> str:
    """Key of an instance's header record."""
    return f"{HEADER_PREFIX}{instance_id}"


def definition_key(instance_id: str) -> str:
    """Key of an instance's stored definition document."""
    return f"definitions/{instance_id}"


def node_prefix(instance_id: str) -> str:
    """Prefix of an instance's node records; append ``f"{index:06d}"``."""
    return f"nodes/{instance_id}/"


def node_key(instance_id: str, index: int) -> str:
    """Key of the record of node ``index`` of an instance."""
    return f"{node_prefix(instance_id)}{index:06d}"


def node_record(name: str, state: NodeState, output: Any, attempts: int,
                error: str | None) -> dict[str, Any]:
    """The record committed for a node that ended (``output`` only if it succeeded)."""
    return {"name": name, "state": _VALUES[state], "output": output, "attempts": attempts,
            "error": error}


# In a node record's canonical JSON (sorted keys, no spaces) this names its top-level
# output: a ``"`` inside a string is always written ``\"``, and the nested mappings
# (``starts``) hold lists, never null, so the bytes occur there once and only there.
_NULL_OUTPUT = b'"output":null'


def with_output(record: dict[str, Any], output: bytes) -> EncodedRecord:
    """``record`` (a node record) carrying its canonical JSON, ``output`` being the canonical
    JSON of its ``output`` that the result check already made: encoded once, not twice."""
    value = record["output"]
    record["output"] = None
    try:
        raw = canonical_json(record)
    finally:
        record["output"] = value
    at = raw.index(_NULL_OUTPUT) + len(_NULL_OUTPUT) - 4
    return EncodedRecord(record, b"".join((raw[:at], output, raw[at + 4:])))


def new_header(definition: Any, instance_id: str, inputs: Mapping[str, Any], now: float,
               state: InstanceState, *, stored_definition: bool) -> dict[str, Any]:
    """The header record of a new instance (begun here, or submitted to run elsewhere)."""
    d = definition
    return {"instance_id": instance_id, "workflow": d.name, "workflow_id": str(d.id),
            "fingerprint": d.fingerprint(), "nodes": len(d.nodes), "inputs": inputs,
            "state": state.value, "created_at": now, "updated_at": now, "finished_at": None,
            "error": None, "resumes": 0, "stored_definition": stored_definition,
            "seq": 0, "manifest": []}


def start_record(name: str, attempt: int, crashes: int) -> dict[str, Any]:
    """The record written before attempt ``attempt`` of a node runs (overwritten at its end)."""
    return {"name": name, "state": _RUNNING, "output": None,
            "attempts": attempt, "error": None, "crashes": crashes}


def started_nodes(nodes: Mapping[int, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Nodes whose newest stored start is not followed by an end: ``{name: (attempts,
    crashes)}``, from start records and from the ``starts`` carried by end records."""
    newest: dict[str, tuple[int, int, int, int]] = {}  # name -> (seq, own, attempts, crashes)
    ended: dict[str, int] = {}
    running = NodeState.RUNNING.value
    for rec in nodes.values():
        seq = int(rec.get("seq", 0))
        name = rec.get("name")
        if rec.get("state") == running:
            if isinstance(name, str):
                entry = (seq, 1, int(rec.get("attempts", 0)), int(rec.get("crashes", 0)))
                newest[name] = max(newest.get(name, entry), entry)
        elif isinstance(name, str):
            ended[name] = max(ended.get(name, seq), seq)
        for other, (attempts, crashes) in (rec.get("starts") or {}).items():
            entry = (seq, 0, int(attempts), int(crashes))
            newest[other] = max(newest.get(other, entry), entry)
    # A node's own record wins a tie: it was written after the start it carries.
    return {name: (a, c) for name, (seq, _, a, c) in newest.items()
            if ended.get(name, -1) < seq}


def lease_key(instance_id: str) -> str:
    """Key of an instance's owner lease."""
    return f"leases/{instance_id}"


def _pid_namespace() -> str:
    # Two containers may share a hostname and a volume but not a pid namespace.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def _process(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of process ``pid``, from /proc; None if
    it has no entry there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name in (...) may hold spaces
    return fields[0], fields[19]


_HAVE_PROC = _process(os.getpid()) is not None


def new_owner_id() -> str:
    """A lease owner id for one executor: ``host|pid namespace|pid.start time|random``."""
    pid = os.getpid()
    proc = _process(pid)
    where = f"{pid}.{proc[1]}" if proc else str(pid)
    return f"{socket.gethostname()}|{_pid_namespace()}|{where}|{secrets.token_hex(6)}"


def owner_is_dead(owner: str) -> bool:
    """True only if ``owner`` is a process of this host and pid namespace that has exited.

    Lets a restarted process take over the lease of the one that crashed at
    once instead of waiting out its TTL. An exited process that its parent has
    not reaped yet (a zombie) is dead; so is an owner whose pid now belongs to a
    process started at another time. Anything uncertain (another host, no /proc
    and no permission to signal) counts as alive: waiting is safe.
    """
    parts = owner.split("|")
    if len(parts) != 4:
        return False
    pid_text, _, started = parts[2].partition(".")
    if not pid_text.isdigit():
        return False
    host, ns, pid = parts[0], parts[1], int(pid_text)
    if host != socket.gethostname() or ns != _pid_namespace() or ns == "-":
        return False
    if pid == os.getpid():
        return False  # another executor of this very process: alive
    if _HAVE_PROC:
        proc = _process(pid)
        if proc is None:
            return True
        state, now_started = proc
        return state in ("Z", "X") or bool(started) and now_started != started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass
class StoredInstance:
    """An instance as durable storage has it: header, definition document, node records."""

    instance_id: str
    header: dict[str, Any]
    definition: dict[str, Any] | None
    nodes: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """The stored instance state (``"running"`` until it finished)."""
        return str(self.header.get("state"))

    @property
    def results(self) -> dict[str, Any]:
        """Outputs of the committed nodes that succeeded, by node name."""
        return {r["name"]: r.get("output") for r in self.nodes.values()
                if r.get("state") == NodeState.SUCCEEDED.value}

    @property
    def node_states(self) -> dict[str, str]:
        """Committed node states by node name (nodes not committed are absent)."""
        return {r["name"]: r["state"] for r in self.nodes.values()
                if r["state"] != NodeState.RUNNING.value}

    @property
    def started(self) -> dict[str, int]:
        """Nodes that started and had not ended when their process stopped: their attempt."""
        return {name: attempts for name, (attempts, _) in started_nodes(self.nodes).items()}


async def read_instance(storage: Storage, instance_id: str) -> StoredInstance | None:
    """Read an instance's header, definition and committed nodes; None if it is unknown.

    A damaged record raises CheckpointCorruptError naming its key; nothing is
    skipped silently.
    """
    iid = str(instance_id)
    header = await storage.get(header_key(iid))
    if header is None:
        return None
    doc = await storage.get(definition_key(iid))
    prefix = node_prefix(iid)
    # Not a key of another instance whose id extends this one's: digits only.
    keys = [k for k in await storage.keys(prefix) if k[len(prefix):].isdigit()]
    nodes: dict[int, dict[str, Any]] = {}
    for key, rec in zip(keys, await storage.get_many(keys)):  # one call, not one per record
        if rec is not None:  # deleted since keys() listed it
            nodes[int(key[len(prefix):])] = rec
    verify_sequence(iid, header, nodes)
    return StoredInstance(iid, header, None if doc is None else doc.get("document"), nodes)


def to_ranges(indices: Any) -> list[list[int]]:
    """Sorted ``indices`` as ``[[first, last], ...]`` runs (a finished run is one pair)."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def from_ranges(runs: Any) -> set[int]:
    """The indices of ``[[first, last], ...]`` runs (the inverse of :func:`to_ranges`)."""
    return {i for first, last in runs for i in range(int(first), int(last) + 1)}


def verify_sequence(instance_id: str, header: Mapping[str, Any],
                    nodes: Mapping[int, Mapping[str, Any]]) -> None:
    """Raise StorageCorruptError if the instance's records do not match its commit
    sequence: a node record deleted, or a header older than a node record.

    Records written before commit sequences existed (no ``seq``) are not checked.
    """
    iid = instance_id
    hseq = header.get("seq")
    if not isinstance(hseq, int) or any(not isinstance(r.get("seq"), int)
                                        for r in nodes.values()):
        return
    for i, rec in sorted(nodes.items()):
        if int(rec.get("h", 0)) > hseq:
            raise StorageCorruptError(
                f"instance {iid}: its header (commit {hseq}) is older than node record "
                f"{node_key(iid, i)!r} (written under header commit {rec['h']}): an older "
                f"header was written back over a newer one; refusing to use it",
                key=header_key(iid), instance_id=iid, node=rec.get("name"), path=None)
    present = set(nodes)
    missing = sorted(from_ranges(header.get("manifest") or []) - present)
    newest = max(nodes.items(), key=lambda kv: kv[1]["seq"], default=None)
    if not missing and newest is not None and newest[1]["seq"] > hseq:
        count, total = newest[1].get("manifest") or (len(present), sum(present))
        lost = int(count) - len(present)
        if lost < 0 or (lost == 0 and int(total) == sum(present)):
            return  # more records than counted: an unacknowledged write that landed
        guess = int(total) - sum(present)
        if lost != 1 or guess in present or guess < 0:
            raise StorageCorruptError(
                f"instance {iid}: {max(lost, 1)} node record(s) are missing (its newest "
                f"commit {newest[1]['seq']} counted {count}, storage has {len(present)}); "
                f"refusing to resume, since those nodes would silently run again",
                key=node_prefix(iid), instance_id=iid, node=None, path=None)
        missing = [guess]
    if missing:
        key = node_key(iid, missing[0])
        raise StorageCorruptError(
            f"instance {iid}: node record {key!r} (node index {missing[0]}) is missing although "
            f"the instance's commit sequence has it ({len(missing)} missing: indices "
            f"{missing[:10]}); refusing to resume, since that node would silently run again",
            key=key, instance_id=iid, node=missing[0], path=None)
