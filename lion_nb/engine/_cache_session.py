"""One instance run's cache decisions: each node's key, its verdict, its result's fingerprint.

A node's key hashes its code version, its config, the definition's edges
into it (source names and condition labels) and the fingerprints of the
results of the predecessors that succeeded -- exactly what the handler will
receive as ``ctx.results``. The instance inputs are not in the key: the
entry records which inputs the handler read (and their fingerprints), and
reuse needs those to match. A node that looked at every input (iterated
``ctx.inputs``) depends on all of them.

A result's fingerprint is computed once, when its node ends, and every
dependant's key uses it; a reused node brings its fingerprint from the
entry, so a fully cached run never hashes a result twice. What has no
fingerprint (see ``_fingerprint``) makes the node **not cacheable**, with the
culprit named.

``rerun=`` forces the named nodes and everything downstream of them;
``start_from=`` forces the named nodes and their descendants and takes every
other node's result from ``previous`` (the last run), with or without a cache.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import UnknownNodeError
from ._cache_entry import CacheEntry
from ._cache_reason import CacheReason as R
from ._cache_reason import NodeReason
from ._code_version import code_version
from ._fingerprint import Unhashable, digest, fingerprint

if TYPE_CHECKING:
    from ..model.definition import WorkflowDefinition
    from ._cache import Cache

__all__ = ["CacheSession", "InputReads", "RerunPlan"]

_ABSENT = "\0absent"
_EMPTY_FP = fingerprint({})
# Config and edges are immutable per definition: fingerprint them once per definition.
_STATIC: "weakref.WeakKeyDictionary[Any, list[str | None]]" = weakref.WeakKeyDictionary()


class InputReads(Mapping[str, Any]):
    """``ctx.inputs`` under a cache: the instance inputs, noting which ones the handler reads."""

    __slots__ = ("_inputs", "keys_read", "read_all")

    def __init__(self, inputs: Mapping[str, Any]) -> None:
        self._inputs = inputs
        self.keys_read: set[str] = set()
        self.read_all = False

    def __getitem__(self, key: str) -> Any:
        self.keys_read.add(key)
        return self._inputs[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.keys_read.add(key)
        return key in self._inputs

    def __iter__(self) -> Iterator[str]:
        self.read_all = True
        return iter(self._inputs)

    def __len__(self) -> int:
        self.read_all = True
        return len(self._inputs)

    def __repr__(self) -> str:
        self.read_all = True
        return repr(dict(self._inputs))


class RerunPlan:
    """Which nodes a run must run regardless of the cache, and which come from the last run."""

    def __init__(self, definition: "WorkflowDefinition", rerun: Iterable[str] = (),
                 start_from: Iterable[str] = ()) -> None:
        self.forced: dict[int, str] = {}  # node -> why, e.g. "rerun" or "downstream of x"
        rerun, start_from = _names(rerun), _names(start_from)
        for names, label in ((start_from, "start_from"), (rerun, "rerun")):
            for name in names:
                i = definition.by_name.get(name)
                if i is None:
                    raise UnknownNodeError(f"{label}: workflow {definition.name!r} has no node "
                                           f"{name!r}", node_id=name)
                self._force(definition, i, label)
        #: start_from: every node that is not forced is taken from the previous run.
        self.restart = bool(start_from)

    def _force(self, d: "WorkflowDefinition", root: int, label: str) -> None:
        self.forced.setdefault(root, label)
        stack = [root]
        source = d.nodes[root].name
        while stack:
            j = stack.pop()
            for k in d.out_edges[j]:
                t = d.edge_target[k]
                if t not in self.forced:
                    self.forced[t] = f"downstream of {source}"
                    stack.append(t)

    def __bool__(self) -> bool:
        return bool(self.forced)


def _names(value: Iterable[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _policy(node: Any) -> tuple[bool, float | None, str | None]:
    """A node's cache settings: enabled, time-to-live, explicit code version."""
    return (getattr(node, "cache", True), getattr(node, "cache_ttl", None),
            getattr(node, "version", None))


class CacheSession:
    """The cache as one instance run sees it (engine-internal; see the module docstring)."""

    def __init__(self, definition: "WorkflowDefinition", handlers: list[Any],
                 inputs: Mapping[str, Any], cache: "Cache | None", codes: bytearray,
                 succeeded_code: int, now: Callable[[], float],
                 plan: RerunPlan | None = None, previous: Mapping[str, Any] | None = None
                 ) -> None:
        self.definition = definition
        self.workflow = definition.name
        self.handlers = handlers
        self.inputs = inputs
        self.cache = cache
        self._codes = codes
        self._ok = succeeded_code
        self._now = now
        self.plan = plan
        self.previous = previous if plan is not None and plan.restart else None
        n = len(definition.nodes)
        self.verdicts: list[NodeReason | None] = [None] * n
        self.fps: list[str | None] = [None] * n  # fingerprints of results (None: none)
        self._unhashable: dict[int, str] = {}  # node -> what about its result has no hash
        self._keys: list[tuple[str, dict[str, Any]] | None] = [None] * n
        self._reads: dict[int, InputReads] = {}
        self._versions: dict[tuple[int, str | None], str | Unhashable] = {}
        self._input_fps: dict[str, str | None] = {}
        self._static = _static_parts(definition)
        self.reused = 0

    # --- decisions --------------------------------------------------------------------

    def decide(self, i: int) -> tuple[bool, Any]:
        """``(True, result)`` to reuse a result for node ``i``, or ``(False, None)`` to run it."""
        node = self.definition.nodes[i]
        plan = self.plan
        forced = None if plan is None else plan.forced.get(i)
        previous = self.previous
        if previous is not None and forced is None and node.name in previous:
            result = previous[node.name]
            self.verdicts[i] = NodeReason(R.REUSED, "from the last run")
            if self.cache is not None:
                self._note_result(i, result)
            self.reused += 1
            return True, result
        cache = self.cache
        if cache is None:
            if forced is not None:
                self.verdicts[i] = NodeReason(R.FORCED, forced)
            elif previous is not None:
                self.verdicts[i] = NodeReason(R.FIRST_RUN, "no result in the last run")
            return False, None
        enabled, ttl, version = _policy(node)
        if not enabled:
            self.verdicts[i] = NodeReason(R.NOT_CACHEABLE, "cache=False")
            return False, None
        keyed = self._key(i, version)
        if isinstance(keyed, NodeReason):
            self.verdicts[i] = keyed
            return False, None
        self._keys[i] = keyed
        if forced is not None:
            self.verdicts[i] = NodeReason(R.FORCED, forced)
            return False, None
        entry = cache.get(self.workflow, node.name)
        verdict = self._compare(entry, keyed, ttl)
        if verdict is not None:
            cache.misses += 1
            self.verdicts[i] = verdict
            return False, None
        assert entry is not None
        if entry.result_fp is not None and _fingerprint_or_none(entry.result) != entry.result_fp:
            # In memory the reused object is shared: a handler that changed its input in
            # place changed the cached result too. Never hand that on.
            cache.discard(entry, "its result was changed in place after it was cached")
            cache.misses += 1
            self.verdicts[i] = NodeReason(R.CORRUPT, "result changed in place")
            return False, None
        cache.hits += 1
        self.reused += 1
        self.verdicts[i] = NodeReason(R.REUSED)
        self.fps[i] = entry.result_fp
        if entry.result_fp is None:
            self._unhashable[i] = "a cached result without a fingerprint"
        return True, entry.result

    def _key(self, i: int, version: str | None) -> tuple[str, dict[str, Any]] | NodeReason:
        d = self.definition
        handler = self.handlers[i]
        memo = (id(handler), version)
        code = self._versions.get(memo)
        if code is None:
            try:
                code = code_version(handler, version)
            except Unhashable as exc:
                code = exc
            self._versions[memo] = code
        if isinstance(code, Unhashable):
            return NodeReason(R.NOT_CACHEABLE, code.what)
        config, edges = self._static[2 * i], self._static[2 * i + 1]
        if config is None:
            return NodeReason(R.NOT_CACHEABLE, "its config has no stable hash")
        codes, ok, names, fps = self._codes, self._ok, d.nodes, self.fps
        preds: dict[str, str] = {}
        for k in d.in_edges[i]:
            s = d.edge_source[k]
            if codes[s] == ok:
                fp = fps[s]
                if fp is None:
                    what = self._unhashable.get(s, "no fingerprint")
                    return NodeReason(R.NOT_CACHEABLE,
                                   f"the result of {names[s].name!r} has no stable hash ({what})")
                preds[names[s].name] = fp
        text = f"{code}|{config}|{edges}|" + ";".join(f"{n}={preds[n]}" for n in sorted(preds))
        return digest(text.encode()), {"code": code, "config": config, "edges": edges,
                                       "preds": preds}

    def _compare(self, entry: CacheEntry | None, keyed: tuple[str, dict[str, Any]],
                 ttl: float | None) -> NodeReason | None:
        """Why ``entry`` cannot serve a node with this key (None: it can)."""
        if entry is None:
            return NodeReason(R.FIRST_RUN)
        key, parts = keyed
        if entry.key != key:
            old = entry.parts
            if old.get("code") != parts["code"]:
                return NodeReason(R.CODE_CHANGED)
            changed = sorted(n for n in set(parts["preds"]) | set(old.get("preds") or {})
                             if parts["preds"].get(n) != (old.get("preds") or {}).get(n))
            if changed:
                return NodeReason(R.INPUT_CHANGED, ", ".join(changed))
            if old.get("config") != parts["config"]:
                return NodeReason(R.INPUT_CHANGED, "config")
            return NodeReason(R.INPUT_CHANGED, "edges")
        if entry.uncacheable is not None:
            return NodeReason(R.NOT_CACHEABLE, entry.uncacheable)
        changed_input = self._changed_input(entry)
        if changed_input is not None:
            return changed_input
        ttl = ttl if ttl is not None else self.cache.ttl if self.cache is not None else None
        if ttl is not None and self._now() - entry.created > ttl:
            return NodeReason(R.EXPIRED, f"older than {ttl:g}s")
        return None

    def _changed_input(self, entry: CacheEntry) -> NodeReason | None:
        if entry.reads is None:
            try:
                now_fp = fingerprint(dict(self.inputs))
            except Unhashable as exc:
                return NodeReason(R.NOT_CACHEABLE, f"an input has no stable hash ({exc.what})")
            return None if now_fp == entry.inputs_fp else NodeReason(R.INPUT_CHANGED, "inputs")
        for name in sorted(entry.reads):
            fp = self._input_fp(name)
            if fp is None:
                return NodeReason(R.NOT_CACHEABLE, f"input {name!r} has no stable hash")
            if fp != entry.reads[name]:
                return NodeReason(R.INPUT_CHANGED, f"input {name!r}")
        return None

    def _input_fp(self, name: str) -> str | None:
        if name not in self._input_fps:
            try:
                self._input_fps[name] = (fingerprint(self.inputs[name]) if name in self.inputs
                                         else _ABSENT)
            except Unhashable:
                self._input_fps[name] = None
        return self._input_fps[name]

    # --- after a node ran ---------------------------------------------------------------

    def inputs_for(self, i: int) -> Mapping[str, Any]:
        """``ctx.inputs`` for node ``i``: a recording view when its result will be cached."""
        if self._keys[i] is None:
            return self.inputs
        reads = self._reads.get(i)
        if reads is None:
            reads = self._reads[i] = InputReads(self.inputs)
        return reads

    def ran(self, i: int, result: Any) -> None:
        """Node ``i`` ran and succeeded with ``result``: fingerprint it, and cache it."""
        self._note_result(i, result)
        keyed = self._keys[i]
        cache = self.cache
        if keyed is None or cache is None:
            return
        uncacheable = None
        reads: dict[str, str] | None = None
        inputs_fp = None
        tracked = self._reads.pop(i, None)
        if tracked is None or tracked.read_all:
            try:
                inputs_fp = fingerprint(dict(self.inputs))
            except Unhashable as exc:
                uncacheable = f"it read every input and one has no stable hash ({exc.what})"
        else:
            reads = {}
            for name in tracked.keys_read:
                fp = self._input_fp(name)
                if fp is None:
                    uncacheable = f"it read input {name!r}, which has no stable hash"
                    break
                reads[name] = fp
        cache.put(CacheEntry(self.workflow, self.definition.nodes[i].name, keyed[0],
                             keyed[1], reads, inputs_fp, result, self.fps[i], self._now(),
                             uncacheable))

    def _note_result(self, i: int, result: Any) -> None:
        try:
            self.fps[i] = fingerprint(result)
        except Unhashable as exc:
            self.fps[i] = None
            self._unhashable[i] = exc.what


def _fingerprint_or_none(value: Any) -> str | None:
    try:
        return fingerprint(value)
    except Unhashable:
        return None


def _static_parts(definition: "WorkflowDefinition") -> list[str | None]:
    """Per node, fingerprints of its config and of its incoming edges (None: no hash)."""
    parts = _STATIC.get(definition)
    if parts is not None:
        return parts
    d = definition
    parts = []
    for i, node in enumerate(d.nodes):
        if node.config:
            try:
                parts.append(fingerprint(dict(node.config)))
            except Unhashable:
                parts.append(None)
        else:
            parts.append(_EMPTY_FP)
        edges = sorted((d.nodes[d.edge_source[k]].name,
                        None if d.edges[k].condition is None else d.edges[k].condition.label)
                       for k in d.in_edges[i])
        parts.append(digest(repr(edges).encode()))
    _STATIC[definition] = parts
    return parts
