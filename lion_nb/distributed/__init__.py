"""Run node handlers on a Dask distributed cluster; orchestration stays in your process.

Nothing here imports dask until you use a name from it::

    from dask.distributed import Client, LocalCluster
    from lion_nb.distributed import DaskRunner
    cluster = await LocalCluster(n_workers=2, threads_per_worker=1, asynchronous=True)
    client = await Client(cluster, asynchronous=True)
    executor = WorkflowExecutor(config=ExecutorConfig(runner=DaskRunner(client)))

Install the extra first: ``pip install 'lion_nb[dask]'``. See ``docs/dask.md``
for per-node placement, capability checks on workers and the trust model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AUTHORITY_PLUGIN",
    "DaskRunner",
    "KEY_ENV",
    "PUBLIC_KEY_ENV",
    "Placement",
    "RUN_ON",
    "RemoteContext",
    "WorkerAuthority",
    "WorkerResources",
    "register_worker_authority",
    "register_worker_resources",
    "revoke_on_workers",
]

# Public name -> submodule; resolved on first access so importing this package stays cheap.
_LAZY = {
    "DaskRunner": "_runner", "Placement": "_runner", "RUN_ON": "_runner",
    "RemoteContext": "_remote",
    "WorkerAuthority": "_plugins", "WorkerResources": "_plugins",
    "register_worker_authority": "_plugins", "register_worker_resources": "_plugins",
    "revoke_on_workers": "_plugins", "KEY_ENV": "_plugins", "PUBLIC_KEY_ENV": "_plugins",
    "AUTHORITY_PLUGIN": "_plugins",
}

if TYPE_CHECKING:  # pragma: no cover
    from ._plugins import (
        AUTHORITY_PLUGIN,
        KEY_ENV,
        PUBLIC_KEY_ENV,
        WorkerAuthority,
        WorkerResources,
        register_worker_authority,
        register_worker_resources,
        revoke_on_workers,
    )
    from ._remote import RemoteContext
    from ._runner import RUN_ON, DaskRunner, Placement


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("dask", "distributed", "cloudpickle"):
            raise ImportError(f"lion_nb.distributed.{name} needs Dask: "
                              "pip install 'lion_nb[dask]'") from exc
        raise
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    # The public names (lazy ones included), not the typing helpers this module imports.
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
