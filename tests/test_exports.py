"""Public names: the seed's vocabulary lives where the seed put it, and __all__ is honest."""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import subprocess
import sys
import warnings

import pytest

import lion_nb

ROOT = pathlib.Path(lion_nb.__file__).parent

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
    with warnings.catch_warnings():  # old paths warn: the shim test below checks that
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ lists missing names {missing}"
    assert len(set(names)) == len(names), f"{module}.__all__ has duplicates"


def test_importing_lion_nb_loads_nothing_heavy_and_leaves_asyncio_alone():
    code = ("import sys, asyncio; real = asyncio.run; import lion_nb, lion_nb.model, "
            "lion_nb.engine, lion_nb.state, lion_nb.patterns, lion_nb.security; "
            "heavy = [m for m in ('pandas', 'graphviz', 'ipywidgets', 'nest_asyncio2', "
            "'wasmtime', 'dask') if m in sys.modules]; "
            "assert not heavy, heavy; assert asyncio.run is real; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# Old module paths, now DeprecationWarning shims over private modules: each still gives the
# names it had, as the very objects of its package's public surface (its parent package unless
# HOME names another).
OLD_PATHS = {
    "lion_nb.distributed.plugins": ["AUTHORITY_PLUGIN", "KEY_ENV", "PUBLIC_KEY_ENV",
                                    "WorkerAuthority", "WorkerResources",
                                    "register_worker_authority", "register_worker_resources",
                                    "revoke_on_workers"],
    "lion_nb.distributed.remote": ["RemoteContext"],
    "lion_nb.distributed.runner": ["DaskRunner", "Placement", "RUN_ON"],
    "lion_nb.engine.context": ["NodeContext", "NodeResult", "ResultKind"],
    "lion_nb.engine.durable": ["StoredInstance", "header_key", "lease_key", "new_owner_id",
                               "node_key", "owner_is_dead", "read_instance"],
    "lion_nb.engine.executor": ["ExecutorConfig", "NodeHandler", "Resumable",
                                "WorkflowExecutor"],
    "lion_nb.engine.history": ["AttemptRecord", "AttemptRows", "HistoryRecorder",
                               "InstanceRecord"],
    "lion_nb.engine.observe": ["EventKind", "ExecEvent", "ObserveStream", "Subscription"],
    "lion_nb.engine.scheduler": ["Priority", "ScheduledTask", "SchedulerConfig",
                                 "SchedulerStatistics", "SchedulingPolicy", "WorkflowScheduler"],
    "lion_nb.model.condition": ["Condition", "Expression"],
    "lion_nb.model.definition": ["WorkflowBuilder", "WorkflowDefinition"],
    "lion_nb.model.ids": ["EdgeId", "InstanceId", "NodeId", "WorkflowId"],
    "lion_nb.model.node": ["Edge", "Node", "Priority", "RetryPolicy", "TriggerRule"],
    "lion_nb.model.serialize": [],
    "lion_nb.patterns.event_store": ["ACKED", "ConsumerRecord", "DEAD", "EventStore",
                                     "InMemoryEventStore", "PENDING", "PendingRecord",
                                     "StoreSnapshot"],
    "lion_nb.patterns.event_store_sqlite": ["SqliteEventStore"],
    "lion_nb.patterns.triggers": ["WorkflowTrigger", "connect_broker"],
    "lion_nb.security.audit": ["AuditLog", "AuditRecord"],
    "lion_nb.security.authority": ["Authority"],
    "lion_nb.security.capability": ["Capability", "DEFAULT_ACTIONS", "Requirement",
                                    "known_actions", "register_action"],
    "lion_nb.security.ceiling": ["DefinitionCeiling"],
    "lion_nb.security.grants": ["GrantIssuer", "GrantSet"],
    "lion_nb.security.resources": ["ResourceRegistry", "resource_for"],
    "lion_nb.security.scope": ["MAX_SCOPE_LEN", "MAX_SEGMENTS", "scope_covers"],
    "lion_nb.security.token": ["MAX_CAVEATS", "MAX_TOKEN_LEN", "Token", "narrow_tokens"],
    "lion_nb.state.checkpoint": ["CheckpointInfo", "CheckpointManager"],
    "lion_nb.state.file_storage": ["FileStorage", "filename_to_key", "key_to_filename"],
    "lion_nb.state.machine": ["InstanceState", "NodeState", "NodeStates", "StateMachineManager",
                              "check_instance_transition"],
    "lion_nb.state.records": ["RecordCodec", "canonical_json"],
    "lion_nb.state.sqlite_storage": ["SqliteStorage"],
    "lion_nb.state.storage": ["MemoryStorage", "Storage"],
}
HOME = {"lion_nb.patterns.event_store": "lion_nb.patterns.events",
        "lion_nb.patterns.event_store_sqlite": "lion_nb.patterns.events"}
# Names an old path had that no public surface carries: still importable for one release.
OLD_ONLY = {
    "lion_nb.engine.durable": ["HEADER_PREFIX", "definition_key", "from_ranges", "new_header",
                               "node_prefix", "node_record", "start_record", "started_nodes",
                               "to_ranges", "verify_sequence"],
    "lion_nb.model.serialize": ["FORMAT", "FORMAT_VERSION", "definition_from_dict",
                                "definition_from_json", "definition_to_dict"],
    "lion_nb.state.machine": ["CODE", "INSTANCE_TERMINAL", "LEGAL", "NODE_ORDER"],
    "lion_nb.state.records": ["DEFAULT_CODEC", "Migrations", "RECORD_VERSION"],
}


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_old_module_paths_still_import_the_same_objects_with_a_deprecation_warning(name):
    package = importlib.import_module(HOME.get(name, name.rpartition(".")[0]))
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"{name} is deprecated"):
        old = importlib.import_module(name)
    for attr in OLD_PATHS[name]:
        assert getattr(old, attr) is getattr(package, attr), attr
    assert set(OLD_PATHS[name] + OLD_ONLY.get(name, [])) <= set(old.__all__)
    assert all(hasattr(old, attr) for attr in old.__all__)


def test_every_old_module_path_is_listed():
    """A module path without an underscore is a public surface or a listed shim."""
    public = {m for m in _modules() if not any(p.startswith("_") for p in m.split("."))}
    surfaces = {m for m in public if (ROOT / m.replace(".", "/")[8:] / "__init__.py").exists()}
    top_level = {"lion_nb.clock", "lion_nb.demo", "lion_nb.errors"}
    notebook = {m for m in public if m.startswith("lion_nb.notebook.")}  # tests/notebook
    assert public - surfaces - top_level - notebook == set(OLD_PATHS) - {
        m for m in OLD_PATHS if m.startswith("lion_nb.distributed.")}


PACKAGES = ["lion_nb", "lion_nb.distributed", "lion_nb.engine", "lion_nb.model", "lion_nb.patterns",
            "lion_nb.security", "lion_nb.state"]


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_warns_about_nothing_loads_no_shim_and_dir_is_all(package):
    """Tab completion offers the public names (subpackages aside), not the shims."""
    code = ("import sys, types, warnings; warnings.simplefilter('error'); "
            f"import {package} as p; "
            "names = {n for n in dir(p) if not n.startswith('_') "
            "and not isinstance(getattr(p, n), types.ModuleType)}; "
            f"shims = sorted(set(sys.modules) & set({sorted(OLD_PATHS)!r})); "
            "print(sorted(names ^ set(p.__all__)) if p.__name__ != 'lion_nb' else [], shims)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(OLD_PATHS) + ["lion_nb.notebook.tables"])
def test_a_test_that_imports_an_old_path_fails_here_and_in_its_children(name):
    """pyproject's filterwarnings (this process) and tests/conftest.py (child processes)
    make lion_nb's deprecations errors, so no test can use an old path unnoticed."""
    sys.modules.pop(name, None)
    with pytest.raises(DeprecationWarning, match=f"{name} is deprecated"):
        importlib.import_module(name)
    sys.modules.pop(name, None)
    child = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                           text=True)
    assert child.returncode != 0 and "DeprecationWarning" in child.stderr, child.stderr


def test_the_deprecated_retry_backoff_fails_a_test_that_uses_it():
    from lion_nb.patterns import RetryBackoff

    with pytest.raises(DeprecationWarning, match="RetryBackoff is deprecated"):
        RetryBackoff(1)
