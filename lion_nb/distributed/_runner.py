"""DaskRunner: run node handlers as Dask tasks; orchestration stays in the notebook.

The engine calls ``await runner.run(handler, ctx, node, is_async)`` for every
attempt. The runner pickles the handler and a :class:`RemoteContext`,
submits one Dask task with a unique key (``pure=False``, node resources as
Dask worker resources) and awaits it without blocking the loop. Everything
else — the join rule, retries, timeouts, state, history — stays in the
engine, so a workflow behaves the same on either runner.

With an ``authority``, every task payload is signed (bound to its Dask key
and a short expiry) and workers holding an authority check the signature
before they unpickle anything; the node's tokens travel narrowed to exactly
its ``requires`` and expire after ``token_ttl`` seconds.

Cancelling the await (the node's timeout, ``executor.cancel``) cancels the
Dask task. A worker lost mid-task surfaces as an ExecutionError naming the
node, and the engine retries the node (at-least-once).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections import deque
from typing import Any, Iterable, Mapping, NamedTuple

import cloudpickle
from distributed import Client
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ..errors import (
    CapabilityDeniedError, ConfigError, ExecutionError, HandlerNotSerializableError,
)
from ..security import Authority, narrow_tokens
from ._remote import RemoteContext, execute, seal_message

__all__ = ["DaskRunner", "Placement", "RUN_ON"]

RUN_ON = "lion.run_on"
"""Node config key choosing where a node runs: ``"cluster"`` or ``"local"``."""

_WHERE = ("cluster", "local")


class Placement(NamedTuple):
    """Where one attempt ran: the worker address (``"local"`` for this process)."""

    instance_id: str
    node: str
    attempt: int
    worker: str | None
    key: str | None
    outcome: str


class DaskRunner:
    """Runs node handlers on a Dask cluster: ``ExecutorConfig(runner=DaskRunner(client))``.

    ``client_or_address`` is a ``distributed.Client`` (best created with
    ``asynchronous=True``) or a scheduler address, for which the runner opens
    (and later closes) its own asynchronous client. ``default`` says where
    nodes run; ``local`` and ``cluster`` name exceptions; a node's own
    ``config={"lion.run_on": ...}`` overrides both. ``resources`` gives the
    amount of each node resource pool a task claims on a worker (default 1).
    ``authority`` signs every task payload (workers with an authority refuse
    unsigned ones); ``token_ttl`` bounds the life of the tokens a task carries.
    """

    def __init__(self, client_or_address: Any, *, default: str = "cluster",
                 local: Iterable[str] = (), cluster: Iterable[str] = (),
                 resources: Mapping[str, float] | None = None, security: Any = None,
                 keep_placements: int = 10_000, authority: Authority | None = None,
                 token_ttl: float = 300.0) -> None:
        if default not in _WHERE:
            raise ValueError(f"default must be one of {_WHERE}, not {default!r}")
        self.default = default
        self.local = frozenset(local)
        self.cluster = frozenset(cluster)
        if self.local & self.cluster:
            raise ValueError(f"nodes both local and cluster: {sorted(self.local & self.cluster)}")
        if authority is not None and not isinstance(authority, Authority):
            raise ConfigError(f"authority must be a lion_nb Authority, not "
                              f"{type(authority).__name__}", field="authority")
        if isinstance(token_ttl, bool) or not isinstance(token_ttl, (int, float)) \
                or not 0 < token_ttl < 86_400:
            raise ConfigError(f"token_ttl must be seconds in (0, 86400), not {token_ttl!r}",
                              field="token_ttl")
        self.authority = authority
        self.token_ttl = float(token_ttl)
        self.resources = dict(resources or {})
        if isinstance(client_or_address, str):
            self._address: str | None = client_or_address
            self.client: Any = None
            self._owns_client = True
        else:
            self._address = None
            self.client = client_or_address
            self._owns_client = False
        self._security = security
        self._starting: asyncio.Lock | None = None
        self._placements: deque[Placement] = deque(maxlen=keep_placements)
        self._background: set[asyncio.Future[Any]] = set()

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> "DaskRunner":
        """Connect the runner's own client (only when given an address; idempotent)."""
        if self.client is not None:
            return self
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.client is None:
                self.client = await Client(self._address, asynchronous=True,
                                           security=self._security)
        return self

    async def close(self) -> None:
        """Close the client if the runner opened it (a client you passed stays open)."""
        for fut in list(self._background):
            await asyncio.gather(fut, return_exceptions=True)
        if self._owns_client and self.client is not None:
            client, self.client = self.client, None
            await client.close()

    async def __aenter__(self) -> "DaskRunner":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def warm_up(self) -> None:
        """Import the worker-side code on every worker now, so the first nodes do not pay it."""
        client = self.client if self.client is not None else (await self.start()).client
        result = client.run(_import_worker_side)
        if inspect.isawaitable(result):  # a synchronous client has already run it
            await result

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Dask dashboard (None before connecting or without a dashboard)."""
        if self.client is None:
            return None
        try:
            return self.client.dashboard_link
        except (KeyError, AttributeError, ValueError):  # no dashboard on this scheduler
            return None

    def placements(self) -> list[Placement]:
        """The most recent attempts (oldest first) and the worker each ran on."""
        return list(self._placements)

    def accepts(self, node: Any) -> bool:
        """Whether ``node`` runs on the cluster (True) or in this process (False)."""
        where = node.config.get(RUN_ON) if node.config else None
        if where is None:
            if node.name in self.local:
                return False
            if node.name in self.cluster:
                return True
            return self.default == "cluster"
        if where not in _WHERE:
            raise ExecutionError(f"node {node.name!r}: config {RUN_ON!r} must be one of "
                                 f"{_WHERE}, not {where!r}", node=node.name)
        return where == "cluster"

    # --- one attempt -------------------------------------------------------------------

    async def run(self, handler: Any, ctx: Any, node: Any, is_async: bool) -> Any:
        """Run one attempt of ``node``: on the cluster, or here if the node is local."""
        if not self.accepts(node):
            return await self._run_here(handler, ctx, node, is_async)
        client = self.client if self.client is not None else (await self.start()).client
        key = f"{node.name}-{uuid.uuid4().hex}"  # the dashboard groups tasks by node name
        rctx = RemoteContext(ctx.instance_id, ctx.current_node_id, node.name, node.config,
                             ctx.inputs, ctx.results, ctx.attempt, tuple(node.requires),
                             _node_tokens(ctx, node, self.token_ttl), key)
        handler_blob = _dumps(handler, node, ctx, "its handler "
                              f"{getattr(handler, '__qualname__', handler)!r}")
        ctx_blob = _dumps(rctx, node, ctx, "its inputs or predecessor results")
        seal = None
        if self.authority is not None:
            expires = time.time() + self.token_ttl
            seal = (expires, self.authority.sign(
                seal_message(key, node.name, is_async, node.timeout, expires, handler_blob,
                             ctx_blob), purpose="dask-task"))
        fut = client.submit(execute, handler_blob, ctx_blob, is_async, node.timeout,
                            node.name, seal, key=key, pure=False, retries=0,
                            resources=self._dask_resources(node))
        if getattr(client, "asynchronous", False):
            waiting: Any = fut
        else:  # a synchronous client lives on its own loop thread: hand the result over
            waiting = _bridge(fut)
        try:
            address, ok, blob = await waiting
        except asyncio.CancelledError:
            self._cancel(client, fut, node)
            self._record(ctx, node, None, key, "cancelled")
            raise
        except KilledWorker as exc:
            self._record(ctx, node, getattr(exc, "last_worker", None), key, "lost")
            raise ExecutionError(
                f"node {node.name!r} (attempt {ctx.attempt}): the Dask worker running it died "
                f"({exc}); the engine retries it if its policy allows", node=node.name) from exc
        except FutureCancelledError as exc:
            self._record(ctx, node, None, key, "cancelled")
            raise ExecutionError(f"node {node.name!r}: its Dask task was cancelled outside "
                                 f"lion_nb ({exc})", node=node.name) from exc
        except BaseException:
            self._record(ctx, node, None, key, "failed")
            raise
        finally:
            fut.release()  # free the worker's copy now, not when the future is collected
        outcome = cloudpickle.loads(blob)
        self._record(ctx, node, address, key, "succeeded" if ok else "failed")
        _set_worker(ctx, address)
        if not ok:
            raise outcome
        return outcome

    async def _run_here(self, handler: Any, ctx: Any, node: Any, is_async: bool) -> Any:
        _set_worker(ctx, "local")
        self._record(ctx, node, "local", None, "local")
        if is_async:
            return await handler(ctx)
        out = await asyncio.to_thread(handler, ctx)
        if inspect.isawaitable(out):
            out = await out
        return out

    def _dask_resources(self, node: Any) -> dict[str, float] | None:
        if not node.resources:
            return None
        return {pool: self.resources.get(pool, 1) for pool in node.resources}

    def _cancel(self, client: Any, fut: Any, node: Any) -> None:
        """Cancel the Dask task without waiting (we are being cancelled ourselves)."""
        reason = f"lion_nb cancelled node {node.name!r} (timeout or instance cancel)"
        if getattr(client, "asynchronous", False):
            task = asyncio.ensure_future(client.cancel([fut], reason=reason))
        else:
            task = asyncio.ensure_future(asyncio.to_thread(client.cancel, [fut], reason=reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _record(self, ctx: Any, node: Any, worker: Any, key: str | None, outcome: str) -> None:
        if worker is not None and not isinstance(worker, str):
            worker = getattr(worker, "address", str(worker))  # KilledWorker's WorkerState
        self._placements.append(Placement(str(ctx.instance_id), node.name, ctx.attempt, worker,
                                          key, outcome))

    def __repr__(self) -> str:
        where = self._address or (self.client.scheduler.address if self.client is not None
                                  and getattr(self.client, "scheduler", None) else None)
        return f"<DaskRunner scheduler={where} default={self.default!r}>"


def _import_worker_side() -> None:
    # Runs on each worker: importing is the point, so the names go unused.
    import lion_nb.distributed._plugins  # noqa: F401
    import lion_nb.distributed._remote  # noqa: F401


def _dumps(obj: Any, node: Any, ctx: Any, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise HandlerNotSerializableError(
            f"node {node.name!r} cannot run on Dask: {what} cannot be pickled ({exc}). "
            "Define handlers at module level in a module the workers can import (or "
            "cloudpickle.register_pickle_by_value it), pass plain data between nodes, "
            f"or run the node here with config={{{RUN_ON!r}: 'local'}}",
            node=node.name) from exc


def _node_tokens(ctx: Any, node: Any, ttl: float) -> tuple[str, ...]:
    """The node's tokens: one per requirement, narrowed to it, expiring within ``ttl``."""
    if not node.requires:
        return ()  # a node that declared nothing gets nothing
    tokens = narrow_tokens(_tokens_of(ctx, node), node.requires, expires_in=ttl)
    return tuple(t.serialize() for t in tokens)


def _tokens_of(ctx: Any, node: Any) -> tuple[str, ...]:
    """The instance's granted tokens as strings (they are verified again on the worker)."""
    tokens = getattr(ctx, "grant_tokens", None)
    if tokens is None:
        if node.requires:
            # Without the tokens the worker could only deny: say so here, plainly.
            raise CapabilityDeniedError(
                f"node {node.name!r} requires {list(node.requires)} but this engine does not "
                "hand the instance's tokens to runners (NodeContext.grant_tokens), so a "
                f"worker cannot verify them; run it here with config={{{RUN_ON!r}: 'local'}}",
                capability=node.requires[0], node=node.name)
        return ()
    return tuple(t if isinstance(t, str) else t.serialize() for t in tokens)


def _set_worker(ctx: Any, worker: str | None) -> None:
    # The engine records ``ctx.worker`` on the attempt once NodeContext has that slot.
    try:
        ctx.worker = worker
    except AttributeError:
        pass


def _bridge(fut: Any) -> "asyncio.Future[Any]":
    """An asyncio future on this loop that follows a synchronous client's Dask future."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if out.done():
            return
        if error is not None:
            out.set_exception(error)
        else:
            out.set_result(result)

    def done(f: Any) -> None:  # runs on Dask's callback thread
        try:
            result, error = f.result(), None
        except BaseException as exc:
            result, error = None, exc
        loop.call_soon_threadsafe(settle, result, error)

    fut.add_done_callback(done)
    return out
