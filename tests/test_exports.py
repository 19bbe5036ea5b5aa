"""Public names: the seed's vocabulary lives where the seed put it, and __all__ is honest."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import lion_nb

SEED_NAMES = {
    "lion_nb.model": ["WorkflowBuilder", "WorkflowDefinition", "Node", "Edge", "NodeId",
                      "EdgeId"],
    "lion_nb.engine": ["WorkflowExecutor", "ExecutorConfig", "NodeHandler", "NodeResult",
                       "WorkflowScheduler", "SchedulerConfig", "SchedulingPolicy", "Priority"],
    "lion_nb.state": ["StateMachineManager", "MemoryStorage", "FileStorage",
                      "CheckpointManager"],
    "lion_nb.patterns": ["Event", "EventAck", "EventBroker", "EventBrokerConfig",
                         "InMemoryEventStore", "SagaManager", "SagaManagerConfig",
                         "SagaDefinitionBuilder", "SagaStep"],
}


@pytest.mark.parametrize("module", sorted(SEED_NAMES))
def test_seed_names_import_from_the_seeds_subpackages(module):
    mod = importlib.import_module(module)
    for name in SEED_NAMES[module]:
        assert hasattr(mod, name), f"{module}.{name}"


def _modules():
    skip = ("lion_nb.distributed",)  # imports dask lazily; covered by its own tests
    for info in pkgutil.walk_packages(lion_nb.__path__, "lion_nb."):
        if not info.name.startswith(skip) and not info.name.endswith("__main__"):
            yield info.name


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ lists missing names {missing}"
    assert len(set(names)) == len(names), f"{module}.__all__ has duplicates"


def test_importing_lion_nb_loads_nothing_heavy_and_leaves_asyncio_alone():
    import subprocess
    import sys
    code = ("import sys, asyncio; real = asyncio.run; import lion_nb, lion_nb.model, "
            "lion_nb.engine, lion_nb.state, lion_nb.patterns, lion_nb.security; "
            "heavy = [m for m in ('pandas', 'graphviz', 'ipywidgets', 'nest_asyncio2', "
            "'wasmtime', 'dask') if m in sys.modules]; "
            "assert not heavy, heavy; assert asyncio.run is real; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
