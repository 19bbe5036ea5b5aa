"""The state package's surface: public names from ``lion_nb.state``, old module paths as shims."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lion_nb.state as state

OLD_PATHS = {
    "checkpoint": ["CheckpointInfo", "CheckpointManager"],
    "file_storage": ["FileStorage", "filename_to_key", "key_to_filename"],
    "machine": ["InstanceState", "NodeState", "NodeStates", "StateMachineManager",
                "check_instance_transition"],
    "records": ["RecordCodec", "canonical_json"],
    "sqlite_storage": ["SqliteStorage"],
    "storage": ["MemoryStorage", "Storage"],
}


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_old_module_paths_still_import_the_same_objects_with_a_deprecation_warning(module):
    name = f"lion_nb.state.{module}"
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"{name} is deprecated"):
        old = importlib.import_module(name)
    for attr in OLD_PATHS[module]:
        assert getattr(old, attr) is getattr(state, attr), attr


def test_importing_lion_nb_state_warns_about_nothing_and_loads_no_shim():
    code = ("import sys, warnings; warnings.simplefilter('error'); import lion_nb.state as s; "
            "names = {n for n in dir(s) if not n.startswith('_')}; "
            "shims = [m for m in sys.modules if m.startswith('lion_nb.state.') "
            "and not m.rpartition('.')[2].startswith('_')]; "
            "print(sorted(names ^ set(s.__all__)), shims)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[] []", out.stderr
