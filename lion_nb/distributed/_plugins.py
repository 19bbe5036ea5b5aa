"""Worker-side security: the authority that verifies tokens and the resources handlers get.

An :class:`~lion_nb.security.Authority` refuses to be pickled, so it never
travels inside a task. Each worker builds its own from the key, which arrives
out of band in one of two ways:

* ``await register_worker_authority(client, key)`` installs a
  :class:`WorkerAuthority` plugin holding the key; Dask sends it over its own
  comms (use TLS) and the scheduler keeps it for workers that join later.
* ``LION_NB_AUTHORITY_KEY`` (hex) in the workers' environment, e.g. from your
  secret store; the key then never passes through the scheduler.

With an Ed25519 authority (``Authority.generate_ed25519()``), workers need
only its public key — ``register_worker_authority(client, public_key=...)``
or ``LION_NB_AUTHORITY_PUBLIC_KEY`` — and can verify tokens and task
signatures but never mint.

Resources (database handles, API clients) are created *on* the workers by
``await register_worker_resources(client, factories={...})``, so live handles
are never pickled; handlers reach them only through ``ctx.resource(...)``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Iterable, Mapping

from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import SecurityError
from ..security import Authority, ResourceRegistry

__all__ = ["AUTHORITY_PLUGIN", "KEY_ENV", "PUBLIC_KEY_ENV", "RESOURCES_PLUGIN",
           "WorkerAuthority", "WorkerResources", "register_worker_authority",
           "register_worker_resources", "revoke_on_workers", "worker_authority",
           "worker_resources"]

AUTHORITY_PLUGIN = "lion_nb-authority"
"""Name of the worker plugin holding the authority."""
RESOURCES_PLUGIN = "lion_nb-resources"
"""Name of the worker plugin holding the resource registry."""
KEY_ENV = "LION_NB_AUTHORITY_KEY"
"""Environment variable a worker reads its authority key from (hex) when no plugin is set."""
PUBLIC_KEY_ENV = "LION_NB_AUTHORITY_PUBLIC_KEY"
"""Environment variable with an Ed25519 public key (hex): the worker then only verifies."""

_env_authority: Authority | None = None
_env_lock = threading.Lock()
_EMPTY = ResourceRegistry()


class WorkerAuthority(WorkerPlugin):
    """Builds an Authority on each worker from a key, a public key, or the environment."""

    idempotent = False  # registering again (new key, new revocations) must replace it

    def __init__(self, key: bytes | None = None, *, public_key: bytes | None = None,
                 revoked: Iterable[str] = ()) -> None:
        if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) < 16):
            raise SecurityError("WorkerAuthority needs the authority's key (>= 16 bytes)")
        if public_key is not None:
            if key is not None:
                raise SecurityError("WorkerAuthority takes a key or a public key, not both")
            Authority.from_public_key(public_key)  # fail here, not on every worker
        self._key = None if key is None else bytes(key)
        self._public = None if public_key is None else bytes(public_key)
        self._revoked = tuple(revoked)
        self.authority: Authority | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_key": self._key, "_public": self._public, "_revoked": self._revoked,
                "authority": None}

    def setup(self, worker: Any) -> None:
        """Build the worker's authority (the key never leaves this object as an Authority)."""
        if self._public is not None:
            self.authority = Authority.from_public_key(self._public)
        else:
            authority = (Authority(self._key) if self._key is not None
                         else _authority_from_env())
            if authority is None:
                raise SecurityError(f"WorkerAuthority got no key and neither {KEY_ENV} nor "
                                    f"{PUBLIC_KEY_ENV} is set on worker {worker.address}")
            self.authority = authority
        for tid in self._revoked:
            self.authority.revoke(tid)

    def teardown(self, worker: Any) -> None:
        """Drop the authority."""
        self.authority = None

    def __repr__(self) -> str:
        kind = "set" if self._key else "public" if self._public else "from env"
        return f"<WorkerAuthority key={kind}>"


class WorkerResources(WorkerPlugin):
    """A ResourceRegistry on each worker: ``objects`` as given, ``factories`` called there."""

    idempotent = False

    def __init__(self, objects: Mapping[str, Any] | None = None,
                 factories: Mapping[str, Callable[[], Any]] | None = None) -> None:
        self._objects = dict(objects or {})
        self._factories = dict(factories or {})
        self.registry: ResourceRegistry | None = None  # built on the worker, in setup()

    def __getstate__(self) -> dict[str, Any]:
        # What travels is the recipe; live handles are made and kept on the worker.
        return {"_objects": self._objects, "_factories": self._factories, "registry": None}

    def setup(self, worker: Any) -> None:
        """Register the objects and build the factories' resources on this worker."""
        self.registry = ResourceRegistry()
        for name, obj in self._objects.items():
            self.registry.register(name, obj)
        for name, make in self._factories.items():
            self.registry.register(name, make())

    def teardown(self, worker: Any) -> None:
        """Close what the factories made (objects that have ``close()``)."""
        if self.registry is None:
            return
        for name in list(self._factories):
            if name in self.registry:
                obj = self.registry.unregister(name)
                close = getattr(obj, "close", None)
                if callable(close):
                    close()


async def register_worker_authority(client: Any, key: bytes | None = None, *,
                                    public_key: bytes | None = None,
                                    revoked: Iterable[str] = ()) -> None:
    """Install a WorkerAuthority on every worker, now and joining later.

    ``public_key`` (of an Ed25519 authority) lets workers verify but never
    mint. With neither, each worker reads ``LION_NB_AUTHORITY_KEY`` (or
    ``LION_NB_AUTHORITY_PUBLIC_KEY``), so no key passes through the scheduler.
    ``revoked`` token ids are revoked there.
    """
    await _register(client, WorkerAuthority(key, public_key=public_key, revoked=revoked),
                    AUTHORITY_PLUGIN)


async def register_worker_resources(client: Any, objects: Mapping[str, Any] | None = None, *,
                                    factories: Mapping[str, Callable[[], Any]] | None = None
                                    ) -> None:
    """Install a WorkerResources registry on every worker (replacing an earlier one)."""
    await _register(client, WorkerResources(objects, factories), RESOURCES_PLUGIN)


async def revoke_on_workers(client: Any, token_id: str) -> None:
    """Revoke ``token_id`` on the authorities of the workers running now.

    Workers that join later do not learn it: register the authority again with
    ``revoked=`` for that, and keep expiries short for work that leaves the process.
    """
    def revoke(dask_worker: Any) -> None:
        authority = worker_authority(dask_worker)
        if authority is not None:
            authority.revoke(token_id)
    await _maybe_await(client.run(revoke))


def worker_authority(worker: Any) -> Authority | None:
    """The authority of ``worker``: its plugin's, else one from the environment."""
    plugin = worker.plugins.get(AUTHORITY_PLUGIN) if worker is not None else None
    if plugin is not None and plugin.authority is not None:
        return plugin.authority
    global _env_authority
    if _env_authority is None:
        with _env_lock:
            if _env_authority is None:
                _env_authority = _authority_from_env()
    return _env_authority


def worker_resources(worker: Any) -> ResourceRegistry:
    """The resources registered on ``worker`` (an empty registry if none)."""
    plugin = worker.plugins.get(RESOURCES_PLUGIN) if worker is not None else None
    registry = plugin.registry if plugin is not None else None
    return registry if registry is not None else _EMPTY


def _authority_from_env() -> Authority | None:
    key, public = _hex_from_env(KEY_ENV), _hex_from_env(PUBLIC_KEY_ENV)
    if key is not None:
        return Authority(key)
    return None if public is None else Authority.from_public_key(public)


def _hex_from_env(name: str) -> bytes | None:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise SecurityError(f"{name} must be a key in hex") from None


async def _register(client: Any, plugin: WorkerPlugin, name: str) -> None:
    await _maybe_await(client.register_plugin(plugin, name=name))


async def _maybe_await(value: Any) -> Any:
    # An asynchronous client returns awaitables; a synchronous one has already finished.
    if hasattr(value, "__await__"):
        return await value
    return value
