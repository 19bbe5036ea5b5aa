"""What runs on a Dask worker: the portable context and the task that calls a handler.

The engine's :class:`~lion_nb.engine.NodeContext` holds the live
instance, so it cannot travel. The runner ships a :class:`RemoteContext`
instead: the same attribute names a handler uses (``instance_id``,
``node_name``, ``config``, ``inputs``, ``results``, ``attempt``,
``idempotency_key``, ``logger``, ``resource()``, ``yield_now()``), plus the
node's capability tokens as strings (narrowed to its ``requires``). On a
worker with an authority, the task's signature is checked *before* anything
is unpickled, then the tokens are verified, then the handler runs.

This module imports neither dask nor distributed at import time, so the
client can build contexts without touching the cluster code.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import threading
import time
import traceback
from types import MappingProxyType
from typing import Any, Mapping

import cloudpickle

from ..errors import (
    CapabilityDeniedError,
    ExecutionError,
    NodeTimeoutError,
    ResultNotSerializableError,
    SecurityError,
)

__all__ = ["RemoteContext", "execute", "seal_message"]

_MAX_SEAL_LIFE = 86_400.0
Seal = tuple[float, bytes]
"""(expiry in wall-clock seconds, authority signature) carried by a signed task."""


def seal_message(key: str, node_name: str, is_async: bool, timeout: float | None,
                 expires: float, handler_blob: bytes, ctx_blob: bytes) -> bytes:
    """The bytes a task signature covers: the Dask key, the node, the call and both blobs."""
    fields = [key.encode(), node_name.encode(), repr(bool(is_async)).encode(),
              repr(timeout).encode(), repr(float(expires)).encode(),
              hashlib.sha256(handler_blob).digest(), hashlib.sha256(ctx_blob).digest()]
    # Length-prefixed, so no two field lists make the same message.
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)

_log = logging.getLogger("lion_nb.node")
_loops = threading.local()  # one reusable event loop per worker thread, for async handlers


class RemoteContext:
    """The picklable stand-in for NodeContext that a handler receives on a Dask worker.

    ``worker_address`` is the worker running the attempt. ``resource()`` checks
    the instance's tokens against the worker's authority and returns what the
    worker registered; ``yield_now()`` is a cancellation point (it raises
    ``asyncio.CancelledError`` once lion_nb has cancelled the Dask task).
    """

    __slots__ = ("instance_id", "current_node_id", "node_name", "config", "inputs", "results",
                 "attempt", "requires", "tokens", "key", "worker_address", "_worker",
                 "_grants", "_logger")

    def __init__(self, instance_id: str, node_id: Any, node_name: str,
                 config: Mapping[str, Any], inputs: Mapping[str, Any],
                 results: Mapping[str, Any], attempt: int, requires: tuple[str, ...],
                 tokens: tuple[str, ...], key: str) -> None:
        self.instance_id = instance_id
        self.current_node_id = node_id
        self.node_name = node_name
        self.config = MappingProxyType(dict(config))
        self.inputs = inputs
        self.results = results
        self.attempt = attempt
        self.requires = requires
        self.tokens = tokens
        self.key = key
        self.worker_address: str | None = None
        self._worker: Any = None
        self._grants: Any = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    def __reduce__(self) -> Any:
        # Only the data travels; the worker, grants and logger are rebuilt over there.
        return (RemoteContext, (self.instance_id, self.current_node_id, self.node_name,
                                dict(self.config), self.inputs, self.results, self.attempt,
                                self.requires, self.tokens, self.key))

    @property
    def idempotency_key(self) -> str:
        """``"<instance>:<node>"``: the same for every attempt, as on the local runner."""
        return f"{self.instance_id}:{self.node_name}"

    @property
    def logger(self) -> "logging.LoggerAdapter[logging.Logger]":
        """A worker-local logger whose records carry the instance, node and worker."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _log, {"instance_id": self.instance_id, "node": self.node_name,
                       "worker": self.worker_address})
        return self._logger

    # --- capabilities, checked on the worker ------------------------------------

    def grants(self) -> Any:
        """The instance's tokens verified by this worker's authority (a GrantSet)."""
        if self._grants is None:
            from ._plugins import worker_authority
            authority = worker_authority(self._worker)
            if authority is None:
                raise CapabilityDeniedError(
                    f"node {self.node_name!r} of instance {self.instance_id} needs capability "
                    f"checks but worker {self.worker_address} has no lion_nb authority; "
                    "call register_worker_authority(client, key) or set LION_NB_AUTHORITY_KEY "
                    "on the workers", capability=self.requires[0] if self.requires else None,
                    node=self.node_name)
            try:
                self._grants = authority.grant(self.tokens, instance_id=self.instance_id)
            except SecurityError as exc:
                raise CapabilityDeniedError(
                    f"node {self.node_name!r} of instance {self.instance_id}: worker "
                    f"{self.worker_address} refused its tokens: {exc}",
                    capability=self.requires[0] if self.requires else None,
                    node=self.node_name) from exc
        return self._grants

    def check_requirements(self) -> None:
        """Verify every requirement of the node on this worker; CapabilityDeniedError if not."""
        if self.requires:
            grants = self.grants()
            for req in self.requires:
                grants.check(req, node=self.node_name)

    def resource(self, name: str, action: str, scope: str | None = None) -> Any:
        """The worker's resource ``name``, if the node declared and was granted ``action``.

        The same rule as on the local runner: least privilege means the node must
        declare ``name:action`` (covering ``scope``) in its ``requires``, and the
        scope defaults to the declared one.
        """
        from ..security import Requirement
        from ..security import resource_for
        from ..security import scope_covers
        from ._plugins import worker_resources
        declared = [r for r in map(Requirement.parse, self.requires)
                    if r.resource == name and r.action == action
                    and (scope is None or scope_covers(r.scope, scope))]
        if not declared:
            raise CapabilityDeniedError(
                f"node {self.node_name!r} did not declare {name}:{action}"
                f"{':' + scope if scope else ''} in its requires", capability=name,
                node=self.node_name)
        return resource_for(self.grants(), worker_resources(self._worker), name, action,
                            scope or declared[0].scope, node=self.node_name)

    def cancelled(self) -> bool:
        """True once the Dask task was cancelled (timeout, instance cancel, released)."""
        worker = self._worker
        if worker is None:
            return False
        ts = worker.state.tasks.get(self.key)  # read-only lookup from the task's thread
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    async def yield_now(self) -> None:
        """Cancellation point: raise CancelledError if lion_nb cancelled this task."""
        if self.cancelled():
            raise asyncio.CancelledError(f"node {self.node_name!r}: Dask task cancelled")
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return (f"RemoteContext(instance={self.instance_id}, node={self.node_name!r}, "
                f"attempt={self.attempt}, worker={self.worker_address})")


def execute(handler_blob: bytes, ctx_blob: bytes, is_async: bool, timeout: float | None,
            node_name: str = "?", seal: Seal | None = None) -> tuple[str, bool, bytes]:
    """The Dask task: check the seal, unpickle, check capabilities, run the handler.

    Returns (worker, ok, pickled outcome). On a worker with an authority, a
    task whose signature is missing, wrong or expired is refused before any
    of its bytes are unpickled. A handler's exception is an outcome of the
    node, not a failure of the Dask task: it comes back as a value (with the
    worker's traceback as a note), so the engine decides about retries and
    Dask does not log it as a crash. The output is pickled here so that one
    that cannot travel fails as a clear ResultNotSerializableError naming the node.
    """
    from distributed import get_worker

    from ._plugins import worker_authority

    worker = get_worker()
    address = worker.address
    problem = _seal_problem(worker_authority(worker), worker.get_current_task(), node_name,
                            is_async, timeout, handler_blob, ctx_blob, seal)
    if problem is not None:
        return address, False, cloudpickle.dumps(CapabilityDeniedError(
            f"node {node_name[:100]!r}: worker {address} refused the task: {problem}",
            capability=None, node=node_name[:100]))
    ctx: RemoteContext = cloudpickle.loads(ctx_blob)
    ctx._worker = worker
    ctx.worker_address = address
    try:
        handler = cloudpickle.loads(handler_blob)
        ctx.check_requirements()
        if is_async:
            out = _run_async(handler(ctx), ctx, timeout)
        else:
            out = handler(ctx)
            if inspect.isawaitable(out):  # a plain callable that returned a coroutine
                out = _run_async(out, ctx, timeout)
    except asyncio.CancelledError:
        # yield_now() saw the task cancelled: nobody waits for this answer any more,
        # so end quietly instead of letting Dask log a crash.
        return address, False, cloudpickle.dumps(ExecutionError(
            f"node {ctx.node_name!r} stopped after its Dask task was cancelled",
            node=ctx.node_name))
    except Exception as exc:
        return address, False, _pickle_error(exc, ctx)
    try:
        return address, True, cloudpickle.dumps(out)
    except Exception as exc:
        err = ResultNotSerializableError(
            f"node {ctx.node_name!r} returned a {type(out).__name__} that cannot be pickled "
            f"back from worker {address}: {exc}", node=ctx.node_name)
        return address, False, cloudpickle.dumps(err)


def _seal_problem(authority: Any, key: Any, node_name: str, is_async: bool,
                  timeout: float | None, handler_blob: bytes, ctx_blob: bytes,
                  seal: Any) -> str | None:
    """Why a task must not be unpickled here, or None if it may."""
    if authority is None:
        return None  # no security configured on this worker: nothing to check against
    if not isinstance(seal, tuple) or len(seal) != 2 or not isinstance(seal[0], float) \
            or not isinstance(seal[1], bytes):
        return ("the task is not signed; this worker has a lion_nb authority, so give the "
                "DaskRunner one too: DaskRunner(client, authority=...)")
    expires, signature = seal
    now = time.time()
    if not now < expires <= now + _MAX_SEAL_LIFE:
        return "the task's signature has expired (or claims too long a life)"
    message = seal_message(str(key), node_name, is_async, timeout, expires, handler_blob,
                           ctx_blob)
    if not authority.check_signature(message, signature, purpose="dask-task"):
        return "the task's signature does not verify (altered, or signed by another key)"
    return None


def _pickle_error(exc: Exception, ctx: RemoteContext) -> bytes:
    """The handler's exception, pickled, carrying where it happened as a note."""
    tb = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"raised on Dask worker {ctx.worker_address} "
                     f"(node {ctx.node_name!r}, attempt {ctx.attempt}):\n{tb}")
        blob = cloudpickle.dumps(exc)
        cloudpickle.loads(blob)  # some exception classes pickle but cannot be rebuilt
        return blob
    except Exception:  # an exception that cannot travel: send its description instead
        return cloudpickle.dumps(ExecutionError(
            f"node {ctx.node_name!r} raised {type(exc).__name__}: {exc} on worker "
            f"{ctx.worker_address} (the exception itself cannot be pickled)\n{tb}",
            node=ctx.node_name))


def _run_async(coro: Any, ctx: RemoteContext, timeout: float | None) -> Any:
    # Dask runs a task in a pool thread with no event loop; a reused per-thread loop
    # saves the cost of building one per node.
    runner = getattr(_loops, "runner", None)
    if runner is None:
        runner = _loops.runner = asyncio.Runner()
    return runner.run(_bounded(coro, ctx, timeout))


async def _bounded(coro: Any, ctx: RemoteContext, timeout: float | None) -> Any:
    if timeout is None:
        return await coro
    # The engine's timeout cancels the Dask future; this one frees the worker's slot too.
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise NodeTimeoutError(
            f"node {ctx.node_name!r} timed out after {timeout}s on worker "
            f"{ctx.worker_address} (attempt {ctx.attempt})", node=ctx.node_name,
            timeout=timeout) from exc
