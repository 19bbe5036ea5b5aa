"""lion_nb.notebook and lion_nb.model: __all__ is sorted and lists exactly the public names."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = ["lion_nb.model", "lion_nb.notebook"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__ == sorted(package.__all__)
    for public in package.__all__:
        assert getattr(package, public) is not None, public


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_exactly_all_in_a_fresh_process(name):
    # A fresh interpreter: no test has imported a deprecated shim module yet.
    code = (f"import {name} as p, types; "
            "names = {n for n, v in vars(p).items() if not n.startswith('_') "
            "and not isinstance(v, types.ModuleType)}; "
            "names |= {n for n in dir(p) if not n.startswith('_')}; "
            "print(sorted(names ^ set(p.__all__)))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_module_paths_still_import_with_a_deprecation_warning():
    import lion_nb.notebook as nb

    with pytest.warns(DeprecationWarning, match="lion_nb.notebook.tables is deprecated"):
        sys.modules.pop("lion_nb.notebook.tables", None)
        old = importlib.import_module("lion_nb.notebook.tables")
    assert old.attempts_frame is nb.attempts_frame
    assert isinstance(old, types.ModuleType)
