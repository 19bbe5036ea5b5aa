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
from collections.abc import Iterable, Iterator, Mapping
from itertools import compress
from operator import is_, lt
from typing import TYPE_CHECKING, Any, Callable

from ..errors import DefinitionError, UnknownNodeError
from ..model import TriggerRule
from ..state import NodeState
from ..state._machine import CODE
from ._cache_entry import CacheEntry, key_parts
from ._cache_reason import CacheReason as R
from ._cache_reason import REUSED as _REUSED
from ._cache_reason import NodeReason
from ._code_version import code_version
from ._fingerprint import Unhashable, digest, fingerprint

if TYPE_CHECKING:
    from ..model import WorkflowDefinition
    from ._cache import Cache

__all__ = ["CacheSession", "InputReads", "RerunPlan", "RUN"]

#: What ``CacheSession.decide`` returns for a node that must run (any other value is reused).
RUN: Any = object()

_DEFAULT_RULE = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
_ABSENT = "\0absent"
_EMPTY_FP = fingerprint({})
# Config and edges are immutable per definition: fingerprint them once per definition.
_STATIC: "weakref.WeakKeyDictionary[Any, _Static]" = weakref.WeakKeyDictionary()
_FROM_LAST_RUN = NodeReason(R.REUSED, "from the last run")
_FIRST_RUN = NodeReason(R.FIRST_RUN)
_CODE_CHANGED = NodeReason(R.CODE_CHANGED)
_OPTED_OUT = NodeReason(R.NOT_CACHEABLE, "cache=False")


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
        rerun, start_from = _names(rerun, "rerun"), _names(start_from, "start_from")
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


def _names(value: Iterable[str] | str, label: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value) if isinstance(
        value, Iterable) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise DefinitionError(f"{label} takes a node name or a list of names, not {value!r}",
                              field=label)
    return names


class CacheSession:
    """The cache as one instance run sees it (engine-internal; see the module docstring)."""

    def __init__(self, definition: "WorkflowDefinition", handlers: list[Any],
                 inputs: Mapping[str, Any], cache: "Cache | None", codes: bytearray,
                 now: Callable[[], float],
                 plan: RerunPlan | None = None, previous: Mapping[str, Any] | None = None
                 ) -> None:
        self.definition = definition
        self.workflow = definition.name
        self.handlers = handlers
        self.inputs = inputs
        self.cache = cache
        self._codes = codes
        self._ok = CODE[NodeState.SUCCEEDED]
        self._now = now
        self.plan = plan
        self.previous = previous if plan is not None and plan.restart else None
        n = len(definition.nodes)
        self.verdicts: list[NodeReason | None] = [None] * n
        self.fps: list[str | None] = [None] * n  # fingerprints of results (None: none)
        #: Per node with a fingerprint: "\0name\0fp", its part of its dependants' keys.
        self._tagged: list[str | None] = [None] * n
        self._unhashable: dict[int, str] = {}  # node -> what about its result has no hash
        self._keys: list[str | None] = [None] * n  # the key of each node that may be cached
        self._reads: dict[int, InputReads] = {}
        self._versions: dict[tuple[int, str | None], str | NodeReason] = {}
        self._code: list[str | NodeReason | None] = [None] * n  # per node, once computed
        self._input_fps: dict[str, str | None] = {}
        self._static = _static_parts(definition)
        self.names: list[str] = self._static.names  # node names, by index
        #: Per node: whether it has capability requirements (a reused one is checked too).
        self.gated: bytearray = self._static.gated
        #: Per node: its predecessors (by index).
        self.sources: list[tuple[int, ...]] = self._static.sources
        #: The nodes in topological order, if the run may settle reused ones before the
        #: join rule sees them (no re-run request, no conditions, default trigger rules).
        self.upfront: list[int] | None = self._static.order if plan is None else None
        self._entries = cache.table(definition.name) if cache is not None else {}
        self._ttl = None if cache is None else cache.ttl
        if plan is None:  # the common case: no re-run request, straight to the cache
            self.decide = self._plain_lookup()  # type: ignore[method-assign,assignment]

    def reasons(self) -> dict[str, NodeReason]:
        """Node name -> its verdict, for the nodes decided so far."""
        verdicts = self.verdicts  # tuples or None: compress keeps the decided, at C speed
        return dict(compress(zip(self.names, verdicts), verdicts))  # type: ignore[arg-type]

    # --- decisions --------------------------------------------------------------------

    def decide(self, i: int) -> Any:
        """A result to reuse for node ``i``, or ``RUN``: run its handler."""
        plan = self.plan
        assert plan is not None  # without one, __init__ bound decide to _plain_lookup
        forced = plan.forced.get(i)
        previous = self.previous
        name = self.definition.nodes[i].name
        if previous is not None and forced is None and name in previous:
            result = previous[name]
            self.verdicts[i] = _FROM_LAST_RUN
            if self.cache is not None:
                self._note_result(i, result)
            return result
        if self.cache is not None:
            return self._lookup(i, forced)
        if forced is not None:
            self.verdicts[i] = NodeReason(R.FORCED, forced)
        elif previous is not None:
            self.verdicts[i] = NodeReason(R.FIRST_RUN, "no result in the last run")
        return RUN

    def _plain_lookup(self) -> Callable[[int], Any]:
        """``_lookup(i, None)`` with the common case inlined: a fully cached re-run
        decides every node here, so this is the cost of reuse per node. A closure:
        its names are cell reads, cheaper than the attribute reads of a method."""
        static = self._static
        sources, names, nodes = static.sources, static.names, self.definition.nodes
        bases = self._handler_versions()  # also sets self._code
        if self._ttl is not None:  # a cache-wide TTL: every node compares times
            bases = [None] * len(nodes)
        codes, ok, fps, keys, verdicts = self._codes, self._ok, self.fps, self._keys, self.verdicts
        tagged, entry_of, serve, slow = self._tagged, self._entries.get, self._serve, self._lookup

        def lookup(i: int) -> Any:
            key = bases[i]  # code version + config and edges fingerprints
            if key is None:
                return slow(i, None)  # not cacheable, a TTL, its own version: says why
            # The rest of the key _key builds, by concatenation: strings are not tracked by
            # the garbage collector, a list per node is (and triggers its collections).
            for s in sources[i]:
                if codes[s] == ok:
                    part = tagged[s]
                    if part is None:
                        return slow(i, None)
                    key += part
            entry = entry_of(names[i])
            if entry is None:  # what _serve would say, without its checks
                keys[i] = key  # a node that runs is cached under it
                verdicts[i] = _FIRST_RUN
                return RUN
            if entry.key != key or not entry.trivial:
                keys[i] = key
                return serve(i, nodes[i], entry, key)
            verdicts[i] = _REUSED
            fps[i] = entry.result_fp
            tagged[i] = entry.tagged
            return None
        return lookup

    def _lookup(self, i: int, forced: str | None) -> Any:
        node = self.definition.nodes[i]
        if not node.cache:
            self.verdicts[i] = _OPTED_OUT
            return RUN
        key = self._key(i, node)
        if isinstance(key, NodeReason):
            self.verdicts[i] = key
            return RUN
        self._keys[i] = key
        if forced is not None:
            self.verdicts[i] = NodeReason(R.FORCED, forced)
            return RUN
        return self._serve(i, node, self._entries.get(node.name), key)

    def _serve(self, i: int, node: Any, entry: CacheEntry | None, key: str) -> Any:
        """The result of ``entry`` if it may serve node ``i`` under ``key``, else RUN."""
        if (entry is None or entry.key != key or entry.reads is None or entry.reads
                or entry.uncacheable is not None
                or node.cache_ttl is not None
                or self._ttl is not None):  # the common case skips all of _compare
            verdict = self._compare(i, node, entry, key)
            if verdict is not None:
                self.verdicts[i] = verdict
                return RUN
        assert entry is not None  # _compare returns FIRST_RUN without one
        result = entry.result
        fp = entry.result_fp
        if result is not None and fp is not None and _fingerprint_or_none(result) != fp:
            # In memory the reused object is shared: a handler that changed its input in
            # place changed the cached result too. Never hand that on.
            assert self.cache is not None
            self.cache.discard(entry, "its result was changed in place after it was cached")
            self.verdicts[i] = NodeReason(R.CORRUPT, "result changed in place")
            return RUN
        self.verdicts[i] = _REUSED
        self.fps[i] = fp
        self._tagged[i] = entry.tagged
        if fp is None:
            self._unhashable[i] = "a cached result without a fingerprint"
        return result

    def _key(self, i: int, node: Any) -> str | NodeReason:
        """Code version, config, edges, then each succeeded predecessor's name and result."""
        code = self._code[i]
        if code is None:
            code = self._code[i] = self._version(i, node)
        if type(code) is not str:
            return code
        static = self._static
        prefix = static.prefix[i]
        if prefix is None:
            return NodeReason(R.NOT_CACHEABLE, "its config has no stable hash")
        parts = [code, prefix]
        codes, ok, fps = self._codes, self._ok, self.fps
        for s, name in static.preds[i]:
            if codes[s] == ok:
                fp = fps[s]
                if fp is None:
                    what = self._unhashable.get(s, "no fingerprint")
                    return NodeReason(R.NOT_CACHEABLE,
                                      f"the result of {name!r} has no stable hash ({what})")
                parts.append(name)
                parts.append(fp)
        return "\0".join(parts)

    def _handler_versions(self) -> list[str | None]:
        """Each node's key base (code version, config and edges) for ``_plain_lookup``;
        None where the general path decides (not cacheable, a TTL, its own ``version=``).

        Each distinct handler is versioned once per run (its code or the helpers it
        calls may have changed since the last run). Runs of one definition mostly get
        the very same handler objects: then, if no version changed, the per-node lists
        of the last run are used again -- no per-node work in Python at all.
        """
        handlers, static = self.handlers, self._static
        memo = static.versions
        if memo is None or len(memo.handlers) != len(handlers) or not all(
                map(is_, memo.handlers, handlers)):
            versioned = list(compress(handlers, static.by_handler))
            distinct = list(dict(zip(map(id, versioned), versioned)).values())
            memo = static.versions = _Versions(list(handlers), distinct)
        codes = [self._version_of(handler, None) for handler in memo.distinct]
        for handler, code in zip(memo.distinct, codes):
            self._versions[(id(handler), None)] = code
        if codes != memo.codes:
            by_id = dict(zip(map(id, memo.distinct), codes))
            per_node: list[str | NodeReason | None] = list(map(by_id.get, map(id, handlers)))
            for i in static.own_version:
                per_node[i] = None
            memo.codes, memo.per_node = codes, per_node
            memo.bases = [code + head if type(code) is str and plain else None
                          for code, head, plain in zip(per_node, static.heads, static.plain)]
        self._code = list(memo.per_node)  # a copy: the general path fills in the rest
        return memo.bases

    def _version(self, i: int, node: Any) -> str | NodeReason:
        """Version handler ``i`` once per run (helpers may have changed since the last)."""
        handler = self.handlers[i]
        known = self._versions.get((id(handler), node.version))
        if known is None:
            known = self._versions[(id(handler), node.version)] = self._version_of(
                handler, node.version)
        return known

    @staticmethod
    def _version_of(handler: Any, version: str | None) -> str | NodeReason:
        try:
            return code_version(handler, version)
        except Unhashable as exc:
            return NodeReason(R.NOT_CACHEABLE, exc.what)

    def _compare(self, i: int, node: Any, entry: CacheEntry | None, key: str
                 ) -> NodeReason | None:
        """Why ``entry`` cannot serve node ``i`` with this key (None: it can)."""
        if entry is None:
            return _FIRST_RUN
        if entry.key != key:
            parts, old = key_parts(key), key_parts(entry.key)
            if old["code"] != parts["code"]:
                return _CODE_CHANGED
            before = old["preds"]
            now = parts["preds"]
            changed = sorted(n for n in set(now) | set(before) if now.get(n) != before.get(n))
            if changed:
                return NodeReason(R.INPUT_CHANGED, ", ".join(changed))
            if old["config"] != parts["config"]:
                return NodeReason(R.INPUT_CHANGED, "config")
            return NodeReason(R.INPUT_CHANGED, "edges")
        if entry.uncacheable is not None:
            return NodeReason(R.NOT_CACHEABLE, entry.uncacheable)
        changed_input = self._changed_input(entry)
        if changed_input is not None:
            return changed_input
        ttl = node.cache_ttl if node.cache_ttl is not None else self._ttl
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
        key = self._keys[i]
        cache = self.cache
        if key is None or cache is None:
            return
        uncacheable = None
        reads: dict[str, str] | None = None
        inputs_fp = None
        tracked = self._reads.pop(i, None)
        if tracked is not None and tracked.read_all:
            try:
                inputs_fp = fingerprint(dict(self.inputs))
            except Unhashable as exc:
                uncacheable = f"it read every input and one has no stable hash ({exc.what})"
        else:
            reads = {}
            for name in () if tracked is None else tracked.keys_read:
                fp = self._input_fp(name)
                if fp is None:
                    uncacheable = f"it read input {name!r}, which has no stable hash"
                    break
                reads[name] = fp
        cache.put(CacheEntry(self.workflow, self.definition.nodes[i].name, key,
                             reads, inputs_fp, result, self.fps[i],
                             self._now(), uncacheable))

    def _note_result(self, i: int, result: Any) -> None:
        try:
            fp = self.fps[i] = fingerprint(result)
        except Unhashable as exc:
            self.fps[i] = None
            self._unhashable[i] = exc.what
        else:
            self._tagged[i] = f"\0{self.names[i]}\0{fp}"


def _fingerprint_or_none(value: Any) -> str | None:
    try:
        return fingerprint(value)
    except Unhashable:
        return None


class _Static:
    """Per definition: each node's config and edges fingerprints, its predecessors by name."""

    __slots__ = ("prefix", "preds", "heads", "sources", "names", "plain", "by_handler",
                 "own_version", "versions", "gated", "order", "__weakref__")

    def __init__(self, d: "WorkflowDefinition") -> None:
        self.prefix: list[str | None] = []
        self.preds: list[tuple[tuple[int, str], ...]] = []
        self.names = [node.name for node in d.nodes]
        self.heads: list[str] = []  # "\0" + prefix, for the inlined lookup (plain nodes)
        #: Per node, its predecessors in key order.
        self.sources: list[tuple[int, ...]] = []
        #: Nodes whose lookup takes the inlined path: cacheable, a stable config, no TTL.
        self.plain = bytearray(len(d.nodes))
        #: Nodes versioned by their handler alone (cacheable, no ``version=``) ...
        self.by_handler = bytearray(node.cache and node.version is None for node in d.nodes)
        #: ... and the others, whose version is not their handler's.
        self.own_version = [i for i, v in enumerate(self.by_handler) if not v]
        self.gated = bytearray(bool(node.requires) for node in d.nodes)
        # A node whose predecessors all succeeded runs, whatever the order they ended in,
        # only without conditions and under the default trigger rule: then reuse can be
        # decided in topological order (see InstanceRun.start).
        self.order: list[int] | None = None
        if (all(c is None for c in d.conditions)
                and all(node.trigger_rule is _DEFAULT_RULE for node in d.nodes)):
            self.order = (list(range(len(d.nodes)))
                          if all(map(lt, d.edge_source, d.edge_target))
                          else [d.by_name[node.name] for node in d.topological_order()])
        #: The code versions of the last run's handlers (see CacheSession._handler_versions).
        self.versions: _Versions | None = None
        for i, node in enumerate(d.nodes):
            try:
                config = fingerprint(dict(node.config)) if node.config else _EMPTY_FP
            except Unhashable:
                config = None
            incoming = sorted((d.nodes[d.edge_source[k]].name, d.edge_source[k],
                               _label(d.edges[k].condition)) for k in d.in_edges[i])
            edges = digest(repr([(name, cond) for name, _, cond in incoming]).encode())
            self.prefix.append(None if config is None else f"{config}\0{edges}")
            self.heads.append(f"\0{config}\0{edges}")
            self.preds.append(tuple((s, name) for name, s, _ in incoming))
            self.plain[i] = node.cache and node.cache_ttl is None and config is not None
            self.sources.append(tuple(s for _, s, _ in incoming))


class _Versions:
    """The handlers of a definition's last run, their distinct ones and code versions."""

    __slots__ = ("handlers", "distinct", "codes", "per_node", "bases")

    def __init__(self, handlers: list[Any], distinct: list[Any]) -> None:
        self.handlers = handlers
        self.distinct = distinct
        self.codes: list[str | NodeReason] | None = None  # per distinct handler
        self.per_node: list[str | NodeReason | None] = []
        self.bases: list[str | None] = []  # per node: code + heads (see _handler_versions)


def _static_parts(definition: "WorkflowDefinition") -> _Static:
    """The definition's _Static, made once (definitions are immutable)."""
    static = _STATIC.get(definition)
    if static is None:
        static = _STATIC[definition] = _Static(definition)
    return static


def _label(condition: Any) -> str | None:
    """An edge condition's label as the cache key sees it (None: unconditional)."""
    return None if condition is None else str(condition.label)
